"""Summaries and titles in PostgreSQL: claimed by one writer, stored only forward, append-only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chatms.adapters.context_store import PostgresContextStore
from chatms.adapters.migrator import migrate
from chatms.adapters.pgpool import create_pool
from chatms.domain.budget import TokenBudget
from chatms.domain.context import Summary
from chatms.domain.model import Chat, ChatConfig, Completion, Usage
from chatms.service.ports import Lease
from tests.support import new_user

CONFIG = ChatConfig("m", 1.0, 1.0, 1024, (), 0.0, 0.0)

BUDGET = TokenBudget(60, 10)  # small: every turn of ten-token messages evicts


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresContextStore]:
    pool = await create_pool(database_url, max_size=4)
    await migrate(pool)
    try:
        yield PostgresContextStore(pool)
    finally:
        await pool.close()


def claim(seconds: float = 30) -> Lease:
    return Lease(str(uuid.uuid4()), seconds)


async def chat_with_turns(store: PostgresContextStore, turns: int) -> Chat:
    """A stored chat whose oldest messages were evicted by `turns` turns."""
    chat = Chat.start(id=str(uuid.uuid4()), owner=new_user(), config=CONFIG,
                      system_prompt="sys", system_tokens=3)
    lease = claim()
    await store.create(chat, lease)
    for i in range(turns):
        chat = await store.acquire(chat.id, chat.owner, lease)
        pending = chat.add_user_message(f"question {i}", 10, BUDGET)
        chat.add_assistant_message(pending, f"answer {i}", 10, Completion.COMPLETE, "stop",
                                   Usage(1, 10))
        await store.commit_turn(chat, pending, lease)
    return chat


async def test_summary_input_is_the_evicted_messages_after_the_watermark(
    store: PostgresContextStore,
) -> None:
    chat = await chat_with_turns(store, 4)
    current, items = await store.summary_input(chat.id, 100)
    assert current is None
    erased = [r for r in (await store.chat(chat.id, chat.owner)).messages if r.erased]
    assert [i.seq for i in items] == [m.seq for m in erased] and items
    assert items[0].content == "question 0" and items[1].role == "assistant"

    mine = claim()
    assert await store.claim_summary(chat.id, mine)
    first = Summary("they asked twice", items[1].seq, 9, 1, "m")
    assert await store.store_summary(chat.id, mine, first, Usage(20, 5))
    current, items = await store.summary_input(chat.id, 100)
    assert current == first and all(i.seq > first.through_seq for i in items)

    # The next turn loads it with the live window, in the same statement.
    loaded = await store.acquire(chat.id, chat.owner, claim())
    assert loaded.summary == first
    detail = await store.chat(chat.id, chat.owner)
    assert detail.summary is not None and detail.summary.content == "they asked twice"
    assert len(detail.messages) == 8, "every original message stays"
    assert detail.system_message is not None and detail.system_message.seq == 0


async def test_one_claim_at_a_time_and_stores_only_move_forward(
    store: PostgresContextStore,
) -> None:
    chat = await chat_with_turns(store, 4)
    first, second = claim(), claim()
    assert await store.claim_summary(chat.id, first)
    assert not await store.claim_summary(chat.id, second), "a second summariser is refused"
    # A writer without the claim stores nothing.
    assert not await store.store_summary(chat.id, second, Summary("x", 2, 5, 1, "m"), Usage())
    assert await store.store_summary(chat.id, first, Summary("a", 4, 5, 1, "m"), Usage())
    # Made from the same previous summary: refused by the version; a watermark moving back too.
    assert not await store.store_summary(chat.id, first, Summary("b", 6, 5, 1, "m"), Usage())
    assert not await store.store_summary(chat.id, first, Summary("c", 2, 5, 2, "m"), Usage())
    await store.release_summary(chat.id, first)
    assert await store.claim_summary(chat.id, second)


async def test_a_lapsed_claim_can_be_taken_and_its_holder_stores_nothing(
    store: PostgresContextStore,
) -> None:
    chat = await chat_with_turns(store, 3)
    slow, other = claim(0.2), claim()
    assert await store.claim_summary(chat.id, slow)
    await asyncio.sleep(0.4)
    assert not await store.store_summary(chat.id, slow, Summary("late", 2, 5, 1, "m"), Usage())
    assert await store.claim_summary(chat.id, other)


async def test_summaries_are_append_only_and_titles_set_once(
    store: PostgresContextStore, database_url: str
) -> None:
    chat = await chat_with_turns(store, 3)
    mine = claim()
    assert await store.claim_summary(chat.id, mine)
    assert await store.store_summary(chat.id, mine, Summary("s", 2, 5, 1, "m"), Usage())
    conn = await asyncpg.connect(database_url)  # behind the store's back
    try:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE chat_summaries SET content = 'x' WHERE chat_id = $1",
                               chat.id)
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM chat_summaries WHERE chat_id = $1", chat.id)
    finally:
        await conn.close()
    assert await store.store_title(chat.id, "Travel plans")
    assert not await store.store_title(chat.id, "Another")
    page = await store.list_chats(chat.owner, 10, None)
    assert page.chats[0].title == "Travel plans"
