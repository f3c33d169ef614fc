"""A client that goes away mid-stream: the upstream is closed at once and the partial is kept."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import grpc
import httpx

from tests.fakes.openai import FakeOpenAI, Script
from tests.integration.grpc_client import chat_stream
from tests.support import AUTH_TOKEN, fetch, grpcio_stubs, new_user
from tests.support import grpc_target as target

SLOW = [f"t{i} " for i in range(50)]  # 50 pieces 0.1 s apart: five seconds of answer



async def answers(database_url: str, chat_id: str) -> list[asyncpg.Record]:
    return await fetch(
        database_url,
        "SELECT seq, role, content, completion FROM messages WHERE chat_id = $1 ORDER BY seq",
        chat_id,
    )


async def wait_for(predicate, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_cancel_closes_upstream_and_stores_partial(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """Cancelling the gRPC call closes the upstream long before the answer would end."""
    app = await start_app()
    fake_openai.queue(Script(pieces=SLOW, gap=0.1))
    pb2, pb2_grpc = grpcio_stubs()
    request = pb2.ChatRequest(user_id=(user := new_user()), user_message="tell me a story")
    async with grpc.aio.insecure_channel(target(app)) as channel:
        call = pb2_grpc.ChatServiceStub(channel).ChatStream(
            request, metadata=(("authorization", AUTH_TOKEN),))
        received = [await call.read() for _ in range(3)]
        call.cancel()
        cancelled_at = time.monotonic()
    chat_id = received[-1].chat_id
    seen = fake_openai.requests[0]
    await wait_for(lambda: seen.closed_early_at is not None)
    assert seen.closed_early_at - cancelled_at < 1.0  # the whole answer would take 5 s
    assert not seen.finished
    await wait_for(lambda: app.chats.in_flight == 0)
    await app.chats.drain(grace=10)
    rows = await answers(database_url, chat_id)
    assert [r["role"] for r in rows] == ["system", "user", "assistant"]
    assert rows[1]["content"] == "tell me a story"
    assert rows[2]["completion"] == "cancelled"
    assert rows[2]["content"].startswith("t0 t1 t2 ")

    # The next turn sees the partial answer as what the assistant said.
    follow = await chat_stream(target(app), user, "go on", chat_id=chat_id)
    assert follow.code == grpc.StatusCode.OK, follow.details
    sent = fake_openai.requests[-1].body["messages"]
    assert sent[2]["role"] == "assistant" and sent[2]["content"] == rows[2]["content"]


async def test_client_deadline_is_honored(start_app, fake_openai, database_url: str) -> None:
    """A client's gRPC deadline ends the turn DEADLINE_EXCEEDED and closes the upstream."""
    app = await start_app()
    fake_openai.queue(Script(pieces=SLOW, gap=0.1))
    result = await chat_stream(target(app), new_user(), "slow", deadline=0.6)
    assert result.code == grpc.StatusCode.DEADLINE_EXCEEDED
    seen = fake_openai.requests[0]
    await wait_for(lambda: seen.closed_early_at is not None)
    await wait_for(lambda: app.chats.in_flight == 0)
    await app.chats.drain(grace=10)
    assert result.messages, "the first pieces arrive well within the deadline"
    rows = await answers(database_url, result.chat_id)
    assert rows[-1]["role"] == "assistant" and rows[-1]["completion"] == "cancelled"


async def test_an_abandoned_answer_releases_its_connection(fake_openai: FakeOpenAI) -> None:
    """Stopping mid-answer closes the connection itself, wherever httpx keeps it."""
    from chatms.adapters.upstream_http import _httpcore_connection, abandon_connection
    from tests.fakes.openai import API_KEY

    fake_openai.queue(Script(pieces=SLOW, gap=0.1))
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with httpx.AsyncClient() as http, http.stream(
        "POST", fake_openai.base_url + "/chat/completions", json=body,
        headers={"authorization": f"Bearer {API_KEY}"},
    ) as response:
        connection = _httpcore_connection(response)
        assert connection is not None and not connection.is_closed()
        await abandon_connection(response)
        assert connection.is_closed()
    seen = fake_openai.requests[0]
    await wait_for(lambda: seen.closed_early_at is not None)
