"""Answers written while they stream, in PostgreSQL: begin, flush, final, interrupted, signals."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chatms.adapters.migrator import migrate
from chatms.adapters.pg_listen import PostgresListener
from chatms.adapters.pgpool import create_pool
from chatms.adapters.postgres import PostgresChatRepository
from chatms.adapters.postgres_answers import MAX_PAYLOAD_BYTES, progress_payload
from chatms.domain.budget import TokenBudget
from chatms.domain.errors import ChatNotFound
from chatms.domain.model import Chat, ChatConfig, Completion, Usage
from chatms.service.ports import Lease, Progress, Signal
from tests.support import fetch, new_user

BUDGET = TokenBudget(10_000, 100)
CONFIG = ChatConfig("m", 1.0, 1.0, 100, (), 0.0, 0.0)


@pytest.fixture
async def repo(database_url: str) -> AsyncIterator[PostgresChatRepository]:
    pool = await create_pool(database_url, max_size=4)
    await migrate(pool)
    try:
        yield PostgresChatRepository(pool)
    finally:
        await pool.close()


def new_chat() -> Chat:
    return Chat.start(id=str(uuid.uuid4()), owner=new_user(), config=CONFIG,
                      system_prompt="be brief", system_tokens=3)


def lease(seconds: float = 30) -> Lease:
    return Lease(str(uuid.uuid4()), seconds)


async def flush_one(repo: PostgresChatRepository, chat_id: str, held: Lease, seq: int,
                    start: int, text: str, tokens: int) -> bool:
    return await repo.flush([Progress(chat_id, held, seq, start, text, tokens)]) == {0}


async def rows(url: str, chat_id: str) -> list[tuple[int, str, str, str]]:
    found = await fetch(url, "SELECT seq, role, content, completion FROM messages"
                             " WHERE chat_id = $1 ORDER BY seq", chat_id)
    return [(r["seq"], r["role"], r["content"], r["completion"]) for r in found]


async def test_an_answer_grows_in_place_then_becomes_final(
    repo: PostgresChatRepository, database_url: str
) -> None:
    chat, held = new_chat(), lease()
    turn = chat.add_user_message("question", 2, BUDGET)
    assert await repo.begin(chat, turn, held, create=True)
    assert await repo.begin(chat, turn, held, create=True)  # idempotent
    answer_seq = turn.user.seq + 1
    assert await flush_one(repo, chat.id, held, answer_seq, 0, "Hel", 3)
    assert await flush_one(repo, chat.id, held, answer_seq, 3, "lo, wö", 5)
    assert await flush_one(repo, chat.id, held, answer_seq, 3, "lo, wö", 5)  # a retried flush
    assert await rows(database_url, chat.id) == [
        (0, "system", "be brief", "complete"), (1, "user", "question", "complete"),
        (2, "assistant", "Hello, wö", "streaming")]
    state = await repo.latest_answer(chat.id, chat.owner, 7)
    assert (state.leased, state.completion, state.length, state.rest) == (
        True, Completion.STREAMING, 9, "wö")
    chat.add_assistant_message(turn, "Hello, wörld", 4, Completion.COMPLETE, "stop", Usage(5, 4))
    await repo.commit_turn(chat, turn, held)
    assert (await rows(database_url, chat.id))[2] == (2, "assistant", "Hello, wörld", "complete")
    assert not await flush_one(repo, chat.id, held, answer_seq, 0, "late", 1)  # final stays final
    state = await repo.latest_answer(chat.id, chat.owner, 0)
    assert (state.leased, state.completion, state.rest) == (False, Completion.COMPLETE,
                                                             "Hello, wörld")
    with pytest.raises(asyncpg.RaiseError):
        await fetch(database_url, "UPDATE messages SET content = 'x' WHERE chat_id = $1"
                                  " AND seq = 2", chat.id)
    with pytest.raises(ChatNotFound):
        await repo.latest_answer(chat.id, new_user(), 0)  # another user's chat


async def test_one_flush_writes_every_running_answer_and_tells_which_landed(
    repo: PostgresChatRepository, database_url: str
) -> None:
    chats = [new_chat() for _ in range(3)]
    leases = [lease() for _ in chats]
    turns = [chat.add_user_message(f"q{i}", 1, BUDGET) for i, chat in enumerate(chats)]
    for chat, turn, held in zip(chats, turns, leases, strict=True):
        assert await repo.begin(chat, turn, held, create=True)
    assert await repo.flush([]) == set()
    listener = PostgresListener(database_url)
    await listener.start()
    heard: dict[str, list[Signal]] = {chat.id: [] for chat in chats}
    unwatch = [listener.watch(chat.id, heard[chat.id].append) for chat in chats]
    stale = lease()  # the third turn's lease is no longer the chat's
    progress = [Progress(chats[0].id, leases[0], 2, 0, "first 🙂", 2),
                Progress(chats[1].id, leases[1], 2, 0, "second", 1),
                Progress(chats[2].id, stale, 2, 0, "lost", 1)]
    try:
        assert await repo.flush(progress) == {0, 1}
        for _ in range(100):  # each answer that landed is announced, the lost one not
            if heard[chats[0].id] and heard[chats[1].id]:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert [[(s.kind, s.start, s.text) for s in heard[chat.id]] for chat in chats] == [
            [("progress", 0, "first 🙂")], [("progress", 0, "second")], []]
    finally:
        for stop in unwatch:
            stop()
        await listener.stop()
    assert [(await rows(database_url, chat.id))[2][2] for chat in chats] == [
        "first 🙂", "second", ""]
    assert await repo.flush([Progress(chats[0].id, leases[0], 2, 6, "🙂 more", 3),
                             Progress(chats[1].id, leases[1], 2, 6, "!", 2)]) == {0, 1}
    assert [(await rows(database_url, chat.id))[2][2] for chat in chats[:2]] == [
        "first 🙂 more", "second!"]


async def test_a_turn_without_begin_still_commits_whole(
    repo: PostgresChatRepository, database_url: str
) -> None:
    chat, held = new_chat(), lease()
    first = chat.add_user_message("one", 1, BUDGET)
    assert await repo.begin(chat, first, held, create=True)
    chat.add_assistant_message(first, "a1", 1, Completion.COMPLETE, "stop", Usage(1, 1))
    await repo.commit_turn(chat, first, held)
    second_lease = lease()
    loaded = await repo.acquire(chat.id, chat.owner, second_lease)
    turn = loaded.add_user_message("two", 1, BUDGET)  # begin never ran (say it failed)
    loaded.add_assistant_message(turn, "a2", 1, Completion.STOPPED, None, Usage(1, 1))
    await repo.commit_turn(loaded, turn, second_lease)
    assert [r[2:] for r in await rows(database_url, chat.id)][1:] == [
        ("one", "complete"), ("a1", "complete"), ("two", "complete"), ("a2", "stopped")]


async def test_a_lapsed_answer_is_interrupted_and_the_chat_is_free(
    repo: PostgresChatRepository, database_url: str
) -> None:
    chat, held = new_chat(), lease(seconds=0.5)
    turn = chat.add_user_message("question", 2, BUDGET)
    assert await repo.begin(chat, turn, held, create=True)
    assert await flush_one(repo, chat.id, held, turn.user.seq + 1, 0, "partial", 2)
    assert await repo.interrupt_lapsed(chat.id) == 0  # the lease still holds
    await asyncio.sleep(0.7)
    assert await repo.interrupt_lapsed(chat.id, grace=60) == 0  # lapsed, but within grace
    assert await repo.interrupt_lapsed(chat.id) == 1
    state = await repo.latest_answer(chat.id, chat.owner, 0)
    assert (state.leased, state.completion, state.rest) == (False, Completion.INTERRUPTED,
                                                             "partial")
    # The next turn takes the chat and sees the question and the partial answer.
    loaded = await repo.acquire(chat.id, chat.owner, lease())
    assert [(m.content, m.completion) for m in loaded.live] == [
        ("question", Completion.COMPLETE), ("partial", Completion.INTERRUPTED)]


async def test_a_new_turn_on_a_lapsed_lease_interrupts_the_old_answer(
    repo: PostgresChatRepository, database_url: str
) -> None:
    chat, held = new_chat(), lease(seconds=0.3)
    turn = chat.add_user_message("question", 2, BUDGET)
    assert await repo.begin(chat, turn, held, create=True)
    await asyncio.sleep(0.5)
    loaded = await repo.acquire(chat.id, chat.owner, lease())
    assert loaded.live[-1].completion is Completion.INTERRUPTED
    assert (await rows(database_url, chat.id))[-1][3] == "interrupted"
    assert not await flush_one(repo, chat.id, held, turn.user.seq + 1, 0, "too late", 2)


async def test_signals_reach_a_listener_and_stop_says_whether_anything_ran(
    repo: PostgresChatRepository, database_url: str
) -> None:
    listener = PostgresListener(database_url)
    await listener.start()
    heard: list[Signal] = []
    stops: list[str] = []
    listener.on_stop(stops.append)
    chat, held = new_chat(), lease()
    unwatch = listener.watch(chat.id, heard.append)
    try:
        assert listener.connected.is_set()
        turn = chat.add_user_message("question", 2, BUDGET)
        assert await repo.begin(chat, turn, held, create=True)
        assert await flush_one(repo, chat.id, held, turn.user.seq + 1, 0, "Hi 🙂", 2)
        assert await repo.signal_stop(chat.id, chat.owner)
        with pytest.raises(ChatNotFound):
            await repo.signal_stop(chat.id, new_user())
        chat.add_assistant_message(turn, "Hi 🙂!", 3, Completion.STOPPED, None, Usage(1, 1))
        await repo.commit_turn(chat, turn, held)
        assert not await repo.signal_stop(chat.id, chat.owner)  # nothing runs: no signal
        for _ in range(100):
            if len(heard) >= 2 and stops:
                break
            await asyncio.sleep(0.02)
        progress = [s for s in heard if s.kind == "progress"]
        assert [(s.start, s.text) for s in progress] == [(0, "Hi 🙂")]
        assert [s.completion for s in heard if s.kind == "end"] == ["stopped"]
        assert stops == [chat.id]
    finally:
        unwatch()
        await listener.stop()


def test_a_long_flush_is_announced_without_its_text() -> None:
    chat_id = str(uuid.uuid4())
    assert progress_payload(chat_id, 5, "abc") == f"p {chat_id} 5 abc"
    long = "é" * 5000  # 10 000 bytes
    assert progress_payload(chat_id, 5, long) == f"p {chat_id} 5"
    edge = "é" * 3900
    assert len(progress_payload(chat_id, 5, edge).encode()) < MAX_PAYLOAD_BYTES
