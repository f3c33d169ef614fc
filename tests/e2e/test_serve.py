"""The real `chatms serve` process, driven by a grpcio client."""

from __future__ import annotations

import itertools

from tests.e2e.grpc_sync import chat
from tests.fakes.openai import FakeOpenAI
from tests.support import new_user, own_data_dir


def test_chat_continues_after_restart(serve, fake_openai: FakeOpenAI) -> None:
    """A chat started before a restart continues after it with its whole history."""
    first = serve()
    user = new_user()
    answer = chat(first.grpc_target, user, "remember the word pineapple")
    chat_id = answer[-1].chat_id
    assert answer[-1].content == "You said: remember the word pineapple"
    contents = [m.content for m in answer]
    assert all(b.startswith(a) for a, b in itertools.pairwise(contents))
    assert first.terminate() == 0

    second = serve(GRPC_SERVER_PORT=first.env["GRPC_SERVER_PORT"],
                   WEB_SERVER_PORT=first.env["WEB_SERVER_PORT"])
    again = chat(second.grpc_target, user, "what was it?", chat_id=chat_id)
    assert again[-1].chat_id == chat_id
    history = [m["content"] for m in fake_openai.requests[-1].body["messages"]]
    assert history[1:] == ["remember the word pineapple",
                           "You said: remember the word pineapple", "what was it?"]
    assert second.terminate() == 0
    assert "chatms stopped" in second.log()


def test_embedded_default_starts_postgres_and_keeps_data(serve) -> None:
    """Without DATABASE_URL, serve runs its own PostgreSQL in CHATMS_DATA_DIR, kept across runs."""
    data = own_data_dir()
    first = serve(DATABASE_URL="<unset>", CHATMS_DATA_DIR=str(data))
    user = new_user()
    chat_id = chat(first.grpc_target, user, "hello embedded")[-1].chat_id
    assert first.terminate() == 0
    assert (data / "pgdata" / "PG_VERSION").exists()
    assert "embedded PostgreSQL stopped" in first.log()

    second = serve(DATABASE_URL="<unset>", CHATMS_DATA_DIR=str(data))
    again = chat(second.grpc_target, user, "still there?", chat_id=chat_id)
    assert again[-1].chat_id == chat_id
    assert second.terminate() == 0


def test_generated_token_is_printed_once_when_unset(serve) -> None:
    """With AUTH_TOKEN unset, serve makes one up and prints it once, so it never runs open."""
    proc = serve(AUTH_TOKEN="<unset>")
    proc.terminate()
    lines = [line for line in proc.log().splitlines() if "AUTH_TOKEN is not set" in line]
    assert len(lines) == 1 and len(lines[0].rsplit(" ", 1)[1]) >= 24
