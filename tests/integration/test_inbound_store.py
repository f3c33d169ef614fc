"""The inbound queue in PostgreSQL: claims are exclusive, per-sender serial and expire."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from chatms.adapters.inbound_store import PostgresInboundStore
from chatms.adapters.migrator import migrate
from chatms.adapters.pgpool import create_pool
from chatms.service.ports import Answer, BurstRule, ClaimLost, InboundMessage
from tests.fakes.twilio import ACCOUNT_SID, OUR_NUMBER, new_sender

ALONE = BurstRule(window=0.0)  # one message per claim, as before bursts
CHANNELS = {"whatsapp": ALONE}


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
    claimed = sorted(j.messages[0].body for j in jobs if j is not None)
    assert claimed == ["a1", "b1"]
    first = next(j for j in jobs if j is not None and j.messages[0].body == "a1")
    await store.save_answer(first, ["ok"], Answer("ok"))
    await store.part_sent(first, 0, "SM1")
    with pytest.raises(ClaimLost):  # the same part cannot be recorded twice
        await store.part_sent(first, 0, "SM1")
    await store.finish(first)
    after = await claim(store)
    assert after is not None and [m.body for m in after.messages] == ["a2"]
    second = next(j for j in jobs if j is not None and j.messages[0].body == "b1")
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
    job = await claim(store, channels={"sms": ALONE})
    assert job is not None and (job.channel, job.messages[0].body) == ("sms", "sms")
    # Same sender, other channel: not held back by the open sms message.
    other = await claim(store)
    assert other is not None and (other.channel, other.messages[0].body) == ("whatsapp", "wa")
    await store.save_answer(job, ["ok"], Answer("ok", "00000000-0000-0000-0000-000000000001", True))
    assert await store.active_chat("sms", sender) == "00000000-0000-0000-0000-000000000001"
    assert await store.active_chat("whatsapp", sender) is None
    await store.finish(job)
    await store.finish(other)


async def test_a_burst_is_claimed_whole_once_its_sender_is_quiet(
    store: PostgresInboundStore,
) -> None:
    """Nothing is due while the sender keeps typing; then the burst is one job, and its
    answer closes every message of it in one transaction."""
    bursts = {"whatsapp": BurstRule(window=0.6)}
    sender = new_sender()
    parts = [message(sender, text) for text in ("one", "two", "three")]
    for m in parts:
        assert await store.accept(m)
    assert await claim(store, channels=bursts) is None  # still in the window
    await asyncio.sleep(0.7)
    job = await claim(store, channels=bursts)
    assert job is not None and [m.body for m in job.messages] == ["one", "two", "three"]
    assert job.message_ids == [m.message_id for m in parts]
    late = message(sender, "late")
    assert await store.accept(late)
    assert await claim(store, channels=bursts) is None  # waits for this turn
    assert await store.renew(job, 30)
    await store.save_answer(job, ["one answer"], Answer("one answer"))
    rows = await store._conn.pool.fetch(
        "SELECT id, status, answered_by FROM inbound_messages WHERE sender = $1 ORDER BY id",
        sender)
    assert [(r["status"], r["answered_by"]) for r in rows] == [
        ("sending", None), ("done", job.id), ("done", job.id), ("pending", None)]
    await store.part_sent(job, 0, "SM1")
    await store.finish(job)
    await asyncio.sleep(0.7)
    nxt = await claim(store, channels=bursts)
    assert nxt is not None and [m.body for m in nxt.messages] == ["late"]
    await store.fail(nxt, "test over")
