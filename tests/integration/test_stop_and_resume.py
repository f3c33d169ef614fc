"""Stop, resume, EndChat during a turn, and the bounds on detached turns, in one process.

The two-replica versions live in tests/e2e/test_resume_replicas.py; these cover the same
replica (answers served from memory) and the edges, quickly.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import httpx

from tests.fakes.openai import FakeOpenAI, Script
from tests.integration.grpc_client import chat_stream
from tests.integration.http_client import AUTH, client, parse_events
from tests.support import AUTH_TOKEN, fetch, grpc_target, grpcio_stubs, new_user

SLOW = [f"p{i} " for i in range(40)]
METADATA = (("authorization", AUTH_TOKEN),)


async def sse_until(http: httpx.AsyncClient, user: str, deltas: int,
                    chat_id: str | None = None) -> tuple[str, str, int, Any]:
    """Start an SSE turn and read `deltas` deltas: (chat id, text, last id, the rest).

    The rest is the open response, with `rest()` reading what is left of its body."""
    body = {"user_id": user, "user_message": "go"} | ({"chat_id": chat_id} if chat_id else {})
    request = http.build_request("POST", "/chat", json=body,
                                 headers={**AUTH, "accept": "text/event-stream"})
    response = await http.send(request, stream=True)
    text, last, seen = "", 0, 0
    lines = response.aiter_lines()
    async for line in lines:
        if line.startswith("id: "):
            last = int(line[4:])
        if line.startswith("data: "):
            data = json.loads(line[6:])
            chat_id = data.get("chat_id", chat_id)
            text += data["delta"]
            seen += 1
            if seen == deltas:
                break
    assert chat_id is not None

    async def rest() -> str:
        left = [line async for line in lines]
        return "\n".join(left).strip("\n") + "\n\n"

    response.rest = rest
    return chat_id, text, last, response


async def rows(database_url: str, chat_id: str) -> list[tuple[str, str, str]]:
    found = await fetch(database_url, "SELECT role, content, completion FROM messages"
                                      " WHERE chat_id = $1 ORDER BY seq", chat_id)
    return [(r["role"], r["content"], r["completion"]) for r in found]


async def test_stop_on_the_same_replica_ends_the_stream_with_stopped(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    app = await start_app()
    user = new_user()
    fake_openai.queue(Script(pieces=SLOW, gap=0.2))
    async with client(app) as http:
        chat_id, text, last, response = await sse_until(http, user, 3)
        stop = await http.post(f"/chats/{chat_id}/stop", headers=AUTH, json={"user_id": user})
        rest = await response.rest()
        await response.aclose()
        assert stop.status_code == 200
        body = stop.json()
        assert body["stopped"] is True and body["chat_id"] == chat_id
        events = parse_events(rest, after=last)
        done = next(data for name, data in events if name == "done")
        partial = text + "".join(d["delta"] for name, d in events if name == "delta")
        assert done["completion"] == "stopped" and done["content"] == partial
        assert body["position"] == done["position"] == len(partial)
        assert (await rows(database_url, chat_id))[-1] == ("assistant", partial, "stopped")
        # Nothing runs any more: a clear no-op, not an error.
        again = await http.post(f"/chats/{chat_id}/stop", headers=AUTH, json={"user_id": user})
        assert again.status_code == 200 and again.json() == {
            "chat_id": chat_id, "stopped": False, "position": 0}
        # Ownership and input as everywhere.
        foreign = await http.post(f"/chats/{chat_id}/stop", headers=AUTH,
                                  json={"user_id": new_user()})
        bad = await http.post("/chats/nope/stop", headers=AUTH, json={"user_id": user})
        anonymous = await http.post(f"/chats/{chat_id}/stop", json={"user_id": user})
        assert (foreign.status_code, bad.status_code, anonymous.status_code) == (404, 400, 401)
    assert fake_openai.requests[-1].closed_early_at is not None  # the upstream was let go


async def test_resume_on_the_same_replica_from_memory_and_after_the_end(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    app = await start_app()
    user = new_user()
    fake_openai.queue(Script(pieces=SLOW, gap=0.05))
    answer = "".join(SLOW)
    async with client(app) as http:
        chat_id, text, last, response = await sse_until(http, user, 2)
        await response.aclose()  # the client leaves; the turn goes on (continue)
        resumed = await http.get(f"/chats/{chat_id}/stream", params={"user_id": user},
                                 headers={**AUTH, "last-event-id": str(last)})
        events = parse_events(resumed.text, after=last)
        assert text + "".join(d["delta"] for n, d in events if n == "delta") == answer
        assert events[-1] == ("done", {"chat_id": chat_id, "position": len(answer),
                                       "completion": "complete"})
        # After the end, from the stored answer; ?after= works like Last-Event-ID.
        tail = await http.get(f"/chats/{chat_id}/stream", headers=AUTH,
                              params={"user_id": user, "after": len(answer) - 4})
        assert [d["delta"] for n, d in parse_events(tail.text, len(answer) - 4)
                if n == "delta"] == [answer[-4:]]
        past = await http.get(f"/chats/{chat_id}/stream", headers=AUTH,
                              params={"user_id": user, "after": len(answer) + 1})
        junk = await http.get(f"/chats/{chat_id}/stream", headers=AUTH,
                              params={"user_id": user, "after": "-1"})
        assert (past.status_code, junk.status_code) == (400, 400)


async def test_a_chat_without_an_answer_has_nothing_to_resume(
    start_app, fake_openai: FakeOpenAI
) -> None:
    app = await start_app()
    pb2, pb2_grpc = grpcio_stubs()
    async with grpc.aio.insecure_channel(grpc_target(app)) as channel:
        call = pb2_grpc.ChatServiceStub(channel).ResumeStream(
            pb2.ResumeStreamRequest(chat_id="6f1c1b5e-0000-4000-8000-000000000000",
                                    user_id=new_user()), metadata=METADATA, timeout=10)
        try:
            await call.read()
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
        else:
            raise AssertionError("resumed a chat that does not exist")


async def test_end_chat_during_a_turn_stops_it_then_ends_the_chat(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """EndChat while a turn runs: the turn stops (partial kept as stopped), the chat ends."""
    app = await start_app()
    user = new_user()
    first = await chat_stream(grpc_target(app), user, "hello")
    fake_openai.queue(Script(pieces=SLOW, gap=0.2))
    pb2, pb2_grpc = grpcio_stubs()
    async with grpc.aio.insecure_channel(grpc_target(app)) as channel:
        stub = pb2_grpc.ChatServiceStub(channel)
        call = stub.ChatStream(pb2.ChatRequest(user_id=user, chat_id=first.chat_id,
                                               user_message="long one", delta=True),
                               metadata=METADATA, timeout=30)
        got: list[Any] = [await call.read(), await call.read()]
        ended = await stub.EndChat(pb2.EndChatRequest(user_id=user, chat_id=first.chat_id),
                                   metadata=METADATA, timeout=10)
        assert ended.status == "ended"
        while (message := await call.read()) is not grpc.aio.EOF:
            got.append(message)
        assert await call.code() == grpc.StatusCode.OK
        assert ("chatms-completion", "stopped") in tuple(await call.trailing_metadata())
    partial = "".join(m.content for m in got)
    assert (await rows(database_url, first.chat_id))[-1] == ("assistant", partial, "stopped")
    after = await chat_stream(grpc_target(app), user, "more?", chat_id=first.chat_id)
    assert after.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_over_the_bound_a_disconnect_cancels_as_before(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """DETACHED_TURNS_PER_USER=0: neither HTTP `continue` nor gRPC `detach` goes on alone."""
    app = await start_app(DETACHED_TURNS_PER_USER="0")
    user = new_user()
    fake_openai.queue(Script(pieces=SLOW, gap=0.2), Script(pieces=SLOW, gap=0.2))
    async with client(app) as http:
        http_chat, _, _, response = await sse_until(http, user, 1)
        await response.aclose()
    pb2, pb2_grpc = grpcio_stubs()
    async with grpc.aio.insecure_channel(grpc_target(app)) as channel:
        call = pb2_grpc.ChatServiceStub(channel).ChatStream(
            pb2.ChatRequest(user_id=user, user_message="go", delta=True, detach=True),
            metadata=METADATA, timeout=30)
        grpc_chat = (await call.read()).chat_id
        call.cancel()
    for _ in range(100):
        found = [await rows(database_url, c) for c in (http_chat, grpc_chat)]
        ends = [r[-1][2] if r else "not stored yet" for r in found]
        if "streaming" not in ends and "not stored yet" not in ends:
            break
        await asyncio.sleep(0.05)
    assert ends == ["cancelled", "cancelled"]
    assert not app.chats.detached
