"""The channel-neutral inbound queue over in-memory ports: answered once, in parts, resumed."""

from __future__ import annotations

import uuid

from chatms.config import InboundSettings
from chatms.domain.texting import split_message, utf16_len
from chatms.service.inbound import (
    EMPTY_REPLY,
    MEDIA_REPLY,
    RESET_REPLY,
    Channel,
    InboundService,
)
from chatms.service.inbound_worker import InboundWorker
from chatms.service.ports import InboundMessage, SendFailed
from tests.fakes.memory import MemoryInboundStore, RecordingSender, Reply
from tests.service.conftest import Rig, rig
from tests.support import until

US = "sms:+100"


def inbound(sender: str, body: str, channel: str = "sms") -> InboundMessage:
    return InboundMessage(channel, uuid.uuid4().hex, "acct", sender, US, body)


def queue(r: Rig, max_body_chars: int = 50) -> tuple[InboundService, MemoryInboundStore,
                                                    RecordingSender]:
    store, sender = MemoryInboundStore(), RecordingSender()
    channel = Channel("sms", sender, max_body_chars, send_rate=1000)
    return InboundService(store, r.chats, [channel], InboundSettings()), store, sender


async def answer_all(service: InboundService, store: MemoryInboundStore) -> None:
    """Claim and process until nothing is due (bounded: a loop here would be a bug)."""
    for _ in range(20):
        job = await store.claim(service.bursts, uuid.uuid4().hex, 30)
        if job is None:
            return
        await service.process(job)
    raise AssertionError("the queue never ran dry")


async def test_an_answer_goes_out_in_parts_within_the_channels_limit() -> None:
    """The answer is split to the channel's part limit and each part is recorded as sent."""
    r = rig(Reply(["one two three four five six seven eight nine ten"]))
    service, store, sender = queue(r)
    assert await service.accept(inbound("+1", "count"))
    assert not await service.accept(store.rows[0].message)  # a redelivery adds nothing
    await answer_all(service, store)
    bodies = [body for _, to, body in sender.sent if to == "+1"]
    assert all(utf16_len(b) <= sender.part_limit for b in bodies) and len(bodies) > 1
    assert " ".join(bodies) == "one two three four five six seven eight nine ten"
    assert [s[1] for s in store.sent] == list(range(len(bodies)))
    assert store.rows[0].status == "done" and r.reports[0].transport == "sms"


async def test_a_senders_next_message_continues_the_same_chat_until_reset() -> None:
    """The sender's chat is remembered per channel; /reset ends it and the next starts anew."""
    r = rig(Reply(["ok"]))
    service, store, _ = queue(r)
    for body in ("first", "second", "/reset", "third"):
        await service.accept(inbound("+1", body))
    await answer_all(service, store)
    answers = [row.answer for row in store.rows]
    assert answers[0] and answers[1] and answers[0].chat_id == answers[1].chat_id
    assert answers[2] and answers[2].text == RESET_REPLY
    assert answers[3] and answers[3].chat_id not in (None, answers[0].chat_id)
    assert (await r.chats.chat("+1", answers[0].chat_id)).status == "ended"  # type: ignore[arg-type]


async def test_limits_and_empty_bodies_are_answered_without_the_model() -> None:
    """A body over the channel's limit, or none at all, is answered politely, upstream untouched."""
    r = rig()
    service, store, _ = queue(r, max_body_chars=5)
    await service.accept(inbound("+1", "far too long"))
    await service.accept(inbound("+2", "   "))
    await answer_all(service, store)
    # What each sender was sent (replies in words come before an answer, split like one).
    texts = [" ".join(row.parts) for row in store.rows if row.parts]
    assert "at most 5" in texts[0] and texts[1] == " ".join(split_message(MEDIA_REPLY, 20))
    assert r.upstream.prompts == []


async def test_an_empty_model_answer_is_never_sent_as_silence() -> None:
    r = rig(Reply([""]))
    service, store, sender = queue(r)
    await service.accept(inbound("+1", "hello"))
    await answer_all(service, store)
    assert [body for _, _, body in sender.sent] == [EMPTY_REPLY]


async def test_the_worker_records_a_refusal_and_tells_the_observer() -> None:
    """A provider's refusal fails the job for good and is counted, never dropped silently."""
    r = rig()
    service, store, sender = queue(r)
    sender.refuse = SendFailed("HTTP 400", retryable=False)
    undelivered: list[str] = []
    worker = InboundWorker(service, InboundSettings(poll_seconds=0.01), undelivered.append)
    await service.accept(inbound("+1", "hello"))
    worker.start()
    async def failed() -> bool | None:
        return True if store.rows[0].status == "failed" else None

    try:
        await until(failed, "the refused job to be failed", 5)
    finally:
        await worker.stop(grace=1)
    assert store.rows[0].error == "HTTP 400" and undelivered == ["refused"]


async def test_an_outage_gives_the_job_back_for_later() -> None:
    """The database away while answering: the job is rescheduled, not failed, not lost."""
    r = rig()
    service, store, _ = queue(r)
    worker = InboundWorker(service, InboundSettings(poll_seconds=0.01))
    await service.accept(inbound("+1", "hello"))
    job = await store.claim(service.bursts, "t", 30)
    assert job is not None
    r.repo.unavailable = True
    await worker._process(job)  # one attempt, run directly
    r.repo.unavailable = False
    row = store.rows[0]
    assert (row.status, row.token, row.failures) == ("pending", None, 1)
    assert row.error is not None and "unavailable" in row.error


async def test_a_blocked_sender_is_recorded_only_and_typing_is_shown_to_others() -> None:
    """A blocked number: its arrival is kept (no text), nothing is queued or answered. Others
    get the typing indicator for the message being answered."""
    r = rig()
    store, sender = MemoryInboundStore(), RecordingSender()
    channel = Channel("sms", sender, 50, send_rate=1000, blocked=frozenset({"+15550100"}))
    service = InboundService(store, r.chats, [channel], InboundSettings())
    blocked = inbound("+1 555 0100", "let me in")
    assert not await service.accept(blocked)
    welcome = inbound("+2", "hello")
    assert await service.accept(welcome)
    await answer_all(service, store)
    assert store.blocked == [("sms", blocked.message_id, "+1 555 0100")]
    assert [row.message.sender for row in store.rows] == ["+2"]
    assert [to for _, to, _ in sender.sent] == ["+2"] * len(sender.sent)
    await service.close()
    assert sender.typed == [welcome.message_id]
