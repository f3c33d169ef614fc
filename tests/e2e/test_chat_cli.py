"""`chatms chat` as a real subprocess against a real `chatms serve`."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.support import AUTH_TOKEN, ROOT, WORK_DIR, ServeProcess, free_port, new_user


def chat_cli(*args: str, stdin: str = "", token: str | None = AUTH_TOKEN,
             ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AUTH_TOKEN", "GRPC_SERVER_PORT")}
    env["PYTHONPATH"] = str(ROOT)
    if token is not None:
        env["AUTH_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "chatms", "chat", *args], input=stdin, capture_output=True,
        text=True, env=env, cwd=WORK_DIR, timeout=60,
    )


def stored(proc: ServeProcess, user: str, chat_id: str) -> list[str]:
    response = httpx.get(f"{proc.http_url}/chats/{chat_id}", params={"user_id": user},
                         headers={"authorization": AUTH_TOKEN}, timeout=10)
    return [m["content"] for m in response.json()["messages"]]


def test_one_shot_and_continue(serve) -> None:
    """One-shot streams the answer to stdout and the chat id to stderr; --chat continues it."""
    proc = serve()
    user = new_user()
    first = chat_cli("--target", proc.grpc_target, "--user", user, "hello cli world")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "You said: hello cli world\n"
    chat_id = first.stderr.split("chat id: ", 1)[1].split()[0]
    again = chat_cli("--target", proc.grpc_target, "--user", user, "--chat", chat_id, "again")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "You said: again\n"
    assert stored(proc, user, chat_id) == ["hello cli world", "You said: hello cli world",
                                           "again", "You said: again"]


def test_interactive_keeps_the_chat_and_errors_are_one_line(serve) -> None:
    """Interactive mode answers each stdin line in one chat; failures exit non-zero in one line."""
    proc = serve()
    user = new_user()
    result = chat_cli("--target", proc.grpc_target, "--user", user, stdin="one\n\ntwo\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "You said: one\nYou said: two\n"
    ids = [line.split("chat id: ")[1] for line in result.stderr.splitlines() if "chat id" in line]
    assert len(ids) == 1
    assert stored(proc, user, ids[0]) == ["one", "You said: one", "two", "You said: two"]

    denied = chat_cli("--target", proc.grpc_target, "--user", user, "hi", token="wrong")
    refused = chat_cli("--target", f"127.0.0.1:{free_port()}", "--user", user, "hi")
    missing = chat_cli("--target", proc.grpc_target, "--user", user, "hi", token=None)
    assert (denied.returncode, refused.returncode, missing.returncode) == (1, 3, 2)
    assert denied.stderr.startswith("chatms chat: UNAUTHENTICATED")
    assert refused.stderr.startswith("chatms chat: cannot reach the server")
    for failed in (denied, refused, missing):
        assert failed.stdout == "" and len(failed.stderr.strip().splitlines()) == 1
        assert "Traceback" not in failed.stderr
