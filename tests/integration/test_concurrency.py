"""Turns racing on one chat, many chats at once, and a saturated pool."""

from __future__ import annotations

import asyncio

import grpc

from tests.fakes.openai import FakeOpenAI, Script
from tests.integration.grpc_client import chat_stream
from tests.support import fetch, new_user
from tests.support import grpc_target as target


async def roles_and_seqs(database_url: str, chat_id: str) -> list[tuple[int, str]]:
    rows = await fetch(
        database_url, "SELECT seq, role FROM messages WHERE chat_id = $1 ORDER BY seq", chat_id)
    return [(r["seq"], r["role"]) for r in rows]


async def test_two_turns_on_one_chat_never_interleave(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """Of two simultaneous turns on one chat, one runs and the other is ABORTED as busy."""
    app = await start_app()
    user = new_user()
    chat_id = (await chat_stream(target(app), user, "start")).chat_id
    fake_openai.queue(Script(pieces=["a", "b", "c"], gap=0.2), Script(pieces=["x"], gap=0.2))
    first, second = await asyncio.gather(
        chat_stream(target(app), user, "one", chat_id=chat_id),
        chat_stream(target(app), user, "two", chat_id=chat_id),
    )
    codes = sorted([first.code.name, second.code.name])
    assert codes == ["ABORTED", "OK"]
    loser = first if first.code == grpc.StatusCode.ABORTED else second
    assert "busy" in loser.details
    stored = await roles_and_seqs(database_url, chat_id)
    assert stored == [(0, "system"), (1, "user"), (2, "assistant"), (3, "user"), (4, "assistant")]


async def test_many_chats_stream_in_parallel(start_app, fake_openai: FakeOpenAI) -> None:
    """Twenty chats stream at once: every upstream request is open before any finishes."""
    app = await start_app()
    fake_openai.queue(*[Script(pieces=["p"] * 5, gap=0.2) for _ in range(20)])
    results = await asyncio.gather(
        *[chat_stream(target(app), new_user(), f"chat {i}") for i in range(20)]
    )
    assert all(r.code == grpc.StatusCode.OK for r in results)
    last_start = max(seen.at for seen in fake_openai.requests)
    first_end = min(seen.finished_at for seen in fake_openai.requests)
    assert last_start < first_end  # all twenty were streaming at the same moment


async def test_saturated_pool_is_unavailable_not_a_hang(start_app) -> None:
    """With every pooled connection taken, a turn fails UNAVAILABLE after the acquire timeout."""
    app = await start_app(DATABASE_POOL_SIZE="1", DATABASE_ACQUIRE_TIMEOUT="0.2")
    user = new_user()
    chat_id = (await chat_stream(target(app), user, "hi")).chat_id
    async with app.storage.database.pool.acquire():
        result = await chat_stream(target(app), user, "again", chat_id=chat_id, deadline=10)
    assert result.code == grpc.StatusCode.UNAVAILABLE
    assert "database" in result.details
    after = await chat_stream(target(app), user, "and now", chat_id=chat_id)
    assert after.code == grpc.StatusCode.OK, after.details


async def test_a_long_turn_keeps_its_chat(start_app, fake_openai: FakeOpenAI) -> None:
    """A turn longer than the lease renews it: a second turn midway is still ABORTED."""
    app = await start_app(CHAT_LEASE_SECONDS="1")
    user = new_user()
    chat_id = (await chat_stream(target(app), user, "start")).chat_id
    fake_openai.queue(Script(pieces=["slow"] * 8, gap=0.3))  # 2.1 s, twice the lease
    long_turn = asyncio.ensure_future(chat_stream(target(app), user, "long", chat_id=chat_id))
    await asyncio.sleep(1.6)
    intruder = await chat_stream(target(app), user, "me too", chat_id=chat_id)
    assert intruder.code == grpc.StatusCode.ABORTED
    assert (await long_turn).code == grpc.StatusCode.OK


async def test_a_dead_turns_lease_runs_out(start_app, database_url: str) -> None:
    """A lease left by a process that died frees the chat once it runs out, not before."""
    app = await start_app()
    user = new_user()
    chat_id = (await chat_stream(target(app), user, "start")).chat_id
    await fetch(database_url, "UPDATE chats SET lease_id = gen_random_uuid(),"
                " lease_until = now() + interval '30 seconds' WHERE id = $1", chat_id)
    assert (await chat_stream(target(app), user, "x", chat_id=chat_id)).code == \
        grpc.StatusCode.ABORTED
    await fetch(database_url, "UPDATE chats SET lease_until = now() - interval '1 second'"
                " WHERE id = $1", chat_id)
    resumed = await chat_stream(target(app), user, "y", chat_id=chat_id)
    assert resumed.code == grpc.StatusCode.OK, resumed.details
