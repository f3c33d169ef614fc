"""The WhatsApp queue in PostgreSQL: claims are exclusive, per-sender serial and expire."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from chatms.adapters.postgres import create_pool, migrate
from chatms.adapters.whatsapp_store import PostgresWhatsAppStore
from chatms.service.whatsapp import Answer, ClaimLost, Inbound
from tests.fakes.twilio import ACCOUNT_SID, OUR_NUMBER, new_sender


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresWhatsAppStore]:
    pool = await create_pool(database_url, max_size=4)
    await migrate(pool)
    # Other tests may leave open messages behind; park them so claims here see only ours.
    await pool.execute("UPDATE whatsapp_inbound SET next_attempt_at = now() + interval '1 hour'"
                       " WHERE status IN ('pending', 'sending')")
    try:
        yield PostgresWhatsAppStore(pool)
    finally:
        await pool.execute("UPDATE whatsapp_inbound SET next_attempt_at = now()"
                           " WHERE status IN ('pending', 'sending')")
        await pool.close()


def message(sender: str, body: str) -> Inbound:
    return Inbound("SM" + uuid.uuid4().hex, ACCOUNT_SID, sender, OUR_NUMBER, body)


async def test_claims_are_exclusive_and_serial_per_sender(store: PostgresWhatsAppStore) -> None:
    """Concurrent claimers never share a message, and a sender's second waits for its first."""
    alice, bob = new_sender(), new_sender()
    a1, a2, b1 = message(alice, "a1"), message(alice, "a2"), message(bob, "b1")
    for m in (a1, a2, b1):
        assert await store.accept(m)
    assert not await store.accept(a1)  # redelivery
    jobs = await asyncio.gather(*(store.claim(str(uuid.uuid4()), 30) for _ in range(4)))
    claimed = sorted(j.body for j in jobs if j is not None)
    assert claimed == ["a1", "b1"]
    first = next(j for j in jobs if j is not None and j.body == "a1")
    await store.save_answer(first, ["ok"], Answer("ok"))
    await store.part_sent(first, 0, "SM1")
    with pytest.raises(ClaimLost):  # the same part cannot be recorded twice
        await store.part_sent(first, 0, "SM1")
    await store.finish(first)
    after = await store.claim(str(uuid.uuid4()), 30)
    assert after is not None and after.body == "a2"


async def test_a_dead_workers_claim_lapses(store: PostgresWhatsAppStore) -> None:
    """A claim that is not renewed lapses, and the message goes to the next claimer."""
    m = message(new_sender(), "hello")
    await store.accept(m)
    dead = await store.claim(str(uuid.uuid4()), 1)
    assert dead is not None and dead.message_sid == m.message_sid
    assert await store.claim(str(uuid.uuid4()), 30) is None
    await asyncio.sleep(1.2)
    taker = await store.claim(str(uuid.uuid4()), 30)
    assert taker is not None and taker.message_sid == m.message_sid
    assert not await store.renew(dead.message_sid, dead.token, 30)
    with pytest.raises(ClaimLost):
        await store.save_answer(dead, ["late"], Answer("late"))
    await store.finish(taker)
