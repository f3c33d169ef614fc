"""The inbound queue in PostgreSQL: claims are exclusive, per-sender serial and expire."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from chatms.adapters.inbound_store import PostgresInboundStore
from chatms.adapters.migrator import migrate
from chatms.adapters.pgpool import create_pool
from chatms.service.ports import Answer, ClaimLost, InboundMessage
from tests.fakes.twilio import ACCOUNT_SID, OUR_NUMBER, new_sender

CHANNELS = ("whatsapp",)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresInboundStore]:
    pool = await create_pool(database_url, max_size=4)
    await migrate(pool)
    # Other tests may leave open messages behind; park them so claims here see only ours.
    await pool.execute("UPDATE inbound_messages SET next_attempt_at = now() + interval '1 hour'"
                       " WHERE status IN ('pending', 'sending')")
    try:
        yield PostgresInboundStore(pool)
    finally:
        await pool.execute("UPDATE inbound_messages SET next_attempt_at = now()"
                           " WHERE status IN ('pending', 'sending')")
        await pool.close()


def message(sender: str, body: str, channel: str = "whatsapp") -> InboundMessage:
    return InboundMessage(channel, "SM" + uuid.uuid4().hex, ACCOUNT_SID, sender, OUR_NUMBER, body)


async def claim(store: PostgresInboundStore, seconds: float = 30, channels=CHANNELS):
    return await store.claim(channels, str(uuid.uuid4()), seconds)


async def test_claims_are_exclusive_and_serial_per_sender(store: PostgresInboundStore) -> None:
    """Concurrent claimers never share a message, and a sender's second waits for its first."""
    alice, bob = new_sender(), new_sender()
    a1, a2, b1 = message(alice, "a1"), message(alice, "a2"), message(bob, "b1")
    for m in (a1, a2, b1):
        assert await store.accept(m)
    assert not await store.accept(a1)  # redelivery
    jobs = await asyncio.gather(*(claim(store) for _ in range(4)))
    claimed = sorted(j.body for j in jobs if j is not None)
    assert claimed == ["a1", "b1"]
    first = next(j for j in jobs if j is not None and j.body == "a1")
    await store.save_answer(first, ["ok"], Answer("ok"))
    await store.part_sent(first, 0, "SM1")
    with pytest.raises(ClaimLost):  # the same part cannot be recorded twice
        await store.part_sent(first, 0, "SM1")
    await store.finish(first)
    after = await claim(store)
    assert after is not None and after.body == "a2"
    second = next(j for j in jobs if j is not None and j.body == "b1")
    await store.finish(second)
    await store.finish(after)


async def test_a_dead_workers_claim_lapses(store: PostgresInboundStore) -> None:
    """A claim that is not renewed lapses, and the message goes to the next claimer."""
    m = message(new_sender(), "hello")
    await store.accept(m)
    dead = await claim(store, 1)
    assert dead is not None and dead.message_id == m.message_id
    assert await claim(store) is None
    await asyncio.sleep(1.2)  # past the one-second claim
    taker = await claim(store)
    assert taker is not None and taker.message_id == m.message_id
    assert not await store.renew(dead, 30)
    with pytest.raises(ClaimLost):
        await store.save_answer(dead, ["late"], Answer("late"))
    await store.finish(taker)


async def test_channels_are_kept_apart(store: PostgresInboundStore) -> None:
    """One id in two channels is two messages; a worker claims only its own channels."""
    sender = new_sender()
    ours = message(sender, "wa")
    theirs = InboundMessage("sms", ours.message_id, ACCOUNT_SID, sender, OUR_NUMBER, "sms")
    assert await store.accept(ours) and await store.accept(theirs)
    job = await claim(store, channels=("sms",))
    assert job is not None and (job.channel, job.body) == ("sms", "sms")
    # Same sender, other channel: not held back by the open sms message.
    other = await claim(store)
    assert other is not None and (other.channel, other.body) == ("whatsapp", "wa")
    await store.save_answer(job, ["ok"], Answer("ok", "00000000-0000-0000-0000-000000000001", True))
    assert await store.active_chat("sms", sender) == "00000000-0000-0000-0000-000000000001"
    assert await store.active_chat("whatsapp", sender) is None
    await store.finish(job)
    await store.finish(other)
