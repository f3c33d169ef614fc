"""Resumable streams and stop across two real `chatms serve` replicas on one PostgreSQL.

Each answer comes from the loopback fake OpenAI, slowly, so that a client can leave, come
back through the other replica, stop the turn, or see its replica killed mid-answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from tests.fakes.openai import FakeOpenAI, Script
from tests.support import AUTH_TOKEN, ServeProcess, fetch, grpcio_stubs, new_user

AUTH = {"authorization": AUTH_TOKEN}
METADATA = (("authorization", AUTH_TOKEN),)
PIECES = [f"w{i} " for i in range(30)] + ["añ🙂 ", "end."]
ANSWER = "".join(PIECES)


def sse_events(lines: Iterator[str]) -> Iterator[tuple[int | None, str, dict[str, Any]]]:
    """(id, event, data) of each SSE event, as it arrives."""
    fields: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if fields:
            raw_id = fields.get("id")
            yield (int(raw_id) if raw_id else None, fields["event"], json.loads(fields["data"]))
            fields = {}


def start_and_leave(replica: ServeProcess, user: str, events: int) -> tuple[str, str, int]:
    """Start an SSE turn, read `events` deltas, disconnect: (chat id, text seen, last id)."""
    seen, last, chat_id = "", 0, ""
    with httpx.Client(base_url=replica.http_url, timeout=30) as http, http.stream(
        "POST", "/chat", headers={**AUTH, "accept": "text/event-stream"},
        json={"user_id": user, "user_message": "tell me slowly"},
    ) as response:
        assert response.status_code == 200
        for event_id, name, data in sse_events(response.iter_lines()):
            assert name == "delta" and event_id is not None
            chat_id = data.get("chat_id", chat_id)
            seen += data["delta"]
            last = event_id
            if events == 1:
                break
            events -= 1
    return chat_id, seen, last


def resume_sse(replica: ServeProcess, user: str, chat_id: str, last: int,
               timeout: float = 40) -> tuple[str, dict[str, Any]]:
    """Resume with Last-Event-ID: (the text received, the done event)."""
    rest, position = "", last
    with httpx.Client(base_url=replica.http_url, timeout=timeout) as http, http.stream(
        "GET", f"/chats/{chat_id}/stream", params={"user_id": user},
        headers={**AUTH, "last-event-id": str(last)},
    ) as response:
        assert response.status_code == 200, response.read()
        for event_id, name, data in sse_events(response.iter_lines()):
            if name == "done":
                return rest, data
            assert name == "delta"
            rest += data["delta"]
            position += len(data["delta"])
            assert event_id == position  # ids are positions, whoever serves them
    raise AssertionError("the resumed stream ended without done")


def stored(database_url: str, chat_id: str) -> list[tuple[str, str, str]]:
    rows = asyncio.run(fetch(database_url, "SELECT role, content, completion FROM messages"
                                           " WHERE chat_id = $1 ORDER BY seq", chat_id))
    return [(r["role"], r["content"], r["completion"]) for r in rows]


def wait_final(database_url: str, chat_id: str, seconds: float = 20) -> list[tuple[str, str, str]]:
    """The chat's rows once its last answer is final; fails the test when that does not come.

    A new chat's rows are written beside its first delta, so none may be there yet.
    """
    deadline = time.monotonic() + seconds
    while True:
        rows = stored(database_url, chat_id)
        if rows and rows[-1][2] != "streaming":
            return rows
        if time.monotonic() > deadline:
            pytest.fail(f"chat {chat_id} has no final answer after {seconds}s: {rows}")
        time.sleep(0.1)


def test_leave_on_a_resume_through_b_gets_the_rest_once(
    serve, fake_openai: FakeOpenAI, database_url: str
) -> None:
    a, b = serve(), serve()
    user = new_user()
    fake_openai.queue(Script(pieces=PIECES, gap=0.08))
    chat_id, seen, last = start_and_leave(a, user, events=4)
    assert last == len(seen) == len("".join(PIECES[:4]))
    rest, done = resume_sse(b, user, chat_id, last)
    assert seen + rest == ANSWER
    assert done == {"chat_id": chat_id, "position": len(ANSWER), "completion": "complete"}
    assert wait_final(database_url, chat_id)[-2:] == [
        ("user", "tell me slowly", "complete"), ("assistant", ANSWER, "complete")]
    # After the turn: the rest of the stored answer at once, through either replica.
    for replica in (a, b):
        rest, done = resume_sse(replica, user, chat_id, len(ANSWER) - 9)
        assert rest == ANSWER[-9:] and done["completion"] == "complete"
    # Someone else's chat is not found; a chat without an answer neither.
    with httpx.Client(base_url=b.http_url) as http:
        foreign = http.get(f"/chats/{chat_id}/stream", params={"user_id": new_user()},
                           headers=AUTH)
        assert foreign.status_code == 404


def test_grpc_resume_on_b_in_delta_and_cumulative_mode(
    serve, fake_openai: FakeOpenAI, database_url: str
) -> None:
    a, b = serve(), serve()
    user = new_user()
    fake_openai.queue(Script(pieces=PIECES, gap=0.08))
    chat_id, seen, last = start_and_leave(a, user, events=3)
    pb2, pb2_grpc = grpcio_stubs()
    with grpc.insecure_channel(b.grpc_target) as channel:
        stub = pb2_grpc.ChatServiceStub(channel)
        deltas = list(stub.ResumeStream(
            pb2.ResumeStreamRequest(chat_id=chat_id, user_id=user, after=last, delta=True),
            metadata=METADATA, timeout=30))
        assert seen + "".join(m.content for m in deltas) == ANSWER
        positions = [m.position for m in deltas]
        assert positions == sorted(set(positions)) and positions[-1] == len(ANSWER)
        cumulative = list(stub.ResumeStream(
            pb2.ResumeStreamRequest(chat_id=chat_id, user_id=user, after=last),
            metadata=METADATA, timeout=30))
        assert cumulative[-1].content == ANSWER and cumulative[-1].position == len(ANSWER)


def test_stop_through_b_a_turn_running_on_a(
    serve, fake_openai: FakeOpenAI, database_url: str
) -> None:
    a, b = serve(), serve()
    user = new_user()
    fake_openai.queue(Script(pieces=PIECES, gap=0.3))
    pb2, pb2_grpc = grpcio_stubs()
    got: list[Any] = []
    ended: dict[str, Any] = {}
    started = threading.Event()

    def run() -> None:
        with grpc.insecure_channel(a.grpc_target) as channel:
            call = pb2_grpc.ChatServiceStub(channel).ChatStream(
                pb2.ChatRequest(user_id=user, user_message="go on", delta=True),
                metadata=METADATA, timeout=60)
            try:
                for message in call:
                    got.append(message)
                    started.set()
                ended["code"] = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                ended["code"] = exc.code()
            ended["at"] = time.monotonic()

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(20)
    time.sleep(0.5)
    chat_id = got[0].chat_id
    asked = time.monotonic()
    with httpx.Client(base_url=b.http_url, timeout=10) as http:
        answer = http.post(f"/chats/{chat_id}/stop", headers=AUTH, json={"user_id": user})
    worker.join(20)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["chat_id"] == chat_id and body["stopped"] is True
    assert ended["code"] == grpc.StatusCode.OK and ended["at"] - asked < 1.0
    partial = "".join(m.content for m in got)
    assert 0 < len(partial) < len(ANSWER) and ANSWER.startswith(partial)
    assert body["position"] == len(partial)
    assert stored(database_url, chat_id)[-1] == ("assistant", partial, "stopped")
    # Stopping again: nothing runs, a clear no-op. Through gRPC too.
    with httpx.Client(base_url=a.http_url, timeout=10) as http:
        again = http.post(f"/chats/{chat_id}/stop", headers=AUTH, json={"user_id": user})
    assert again.status_code == 200 and again.json()["stopped"] is False
    with grpc.insecure_channel(b.grpc_target) as channel:
        reply = pb2_grpc.ChatServiceStub(channel).StopTurn(
            pb2.StopTurnRequest(chat_id=chat_id, user_id=user), metadata=METADATA, timeout=10)
    assert reply.chat_id == chat_id and not reply.stopped


def test_sigkill_mid_answer_resume_through_b_is_interrupted_and_the_chat_is_free(
    serve, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """Default lease: the question and the flushed partial are kept, the resumer is told
    the answer was interrupted, and the chat takes turns again within about 15 s."""
    a, b = serve(), serve()
    user = new_user()
    fake_openai.queue(Script(pieces=PIECES, gap=0.25))
    chat_id, seen, last = start_and_leave(a, user, events=6)
    time.sleep(0.5)  # at least one flush interval after the last delta seen
    assert a.proc is not None
    a.proc.kill()
    a.proc.wait(10)
    killed = time.monotonic()
    rest, done = resume_sse(b, user, chat_id, last)
    told = time.monotonic() - killed
    assert done["completion"] == "interrupted" and told < 20
    rows = stored(database_url, chat_id)
    assert rows[-2] == ("user", "tell me slowly", "complete")
    role, partial, completion = rows[-1]
    assert (role, completion) == ("assistant", "interrupted")
    assert partial.startswith(seen) and ANSWER.startswith(partial) and seen + rest == partial
    # The chat is free again: a new turn through B works.
    fake_openai.queue(Script(pieces=["fine"]))
    with httpx.Client(base_url=b.http_url, timeout=30) as http:
        again = http.post("/chat", headers=AUTH, json={
            "user_id": user, "chat_id": chat_id, "user_message": "still there?"})
    assert again.status_code == 200 and again.json()["content"] == "fine"
    assert time.monotonic() - killed < 20


def test_a_detached_grpc_turn_whose_client_left_is_stored_whole(
    serve, fake_openai: FakeOpenAI, database_url: str
) -> None:
    a = serve()
    user = new_user()
    fake_openai.queue(Script(pieces=PIECES, gap=0.05))
    pb2, pb2_grpc = grpcio_stubs()
    with grpc.insecure_channel(a.grpc_target) as channel:
        call = pb2_grpc.ChatServiceStub(channel).ChatStream(
            pb2.ChatRequest(user_id=user, user_message="detach me", delta=True, detach=True),
            metadata=METADATA, timeout=30)
        first = next(call)
        chat_id = first.chat_id
        assert first.position == len(first.content) > 0
        call.cancel()
    rows = wait_final(database_url, chat_id)
    assert rows[-1] == ("assistant", ANSWER, "complete")
    assert fake_openai.requests[-1].finished
