"""Ports of the inbound text-channel queue: where the work is kept, and each channel's way out."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message a person sent us through a text channel (WhatsApp, later SMS, Telegram).

    `message_id` is the channel's own id for it: a redelivery carries the same one.
    """

    channel: str  # "whatsapp": also the transport its turns are counted under
    message_id: str
    account: str  # our account at the provider that received it
    sender: str  # the person, and where the answer goes
    recipient: str  # our address on the channel, and where the answer comes from
    body: str
    media_count: int = 0
    sender_name: str | None = None
    media: tuple[tuple[str, str], ...] = ()  # (url, content type) of each media item


@dataclass(frozen=True, slots=True)
class Received:
    """One message of a job as the channel gave it: its text, and its media (url, type)."""

    body: str
    media: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class InboundJob:
    """Claimed inbound messages of one sender (one, or a burst sent in a quick row): only the
    claim holder (`token`) may advance them. The first message's row carries the answer."""

    id: int
    channel: str
    message_id: str
    token: str
    sender: str
    recipient: str
    messages: list[Received]  # in arrival order, the first one's row first
    parts: list[str] | None  # the answer, split; None until it is stored
    parts_sent: int
    failures: int
    message_ids: list[str] = field(default_factory=list)  # of every message, in order
    age: float = 0.0  # seconds since the message was received, when it was claimed
    claimed_at: float = field(default_factory=time.monotonic)

    def seconds_left(self, deadline: float) -> float:
        """Seconds until `deadline` (counted from the message's arrival) passes; <= 0 once past."""
        return deadline - self.age - (time.monotonic() - self.claimed_at)


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send for an inbound job, and where it is kept."""

    text: str | None  # None: only `before` is sent (nothing at all when it is empty too)
    chat_id: str | None = None  # the chat to remember for the sender
    set_chat: bool = False  # whether to change the remembered chat
    seq: int | None = None  # the stored chat message the text delivers
    before: tuple[str, ...] = ()  # polite replies sent first (media that could not be read)


@dataclass(frozen=True, slots=True)
class BurstRule:
    """Messages of one sender closer than `window` seconds apart are answered together."""

    window: float = 0.0  # 0: every message alone
    max_messages: int = 10
    # A sender who never pauses still gets an answer: a burst closes this long after it began.
    max_wait_windows: float = 4.0

    @property
    def enabled(self) -> bool:
        return self.window > 0


class ClaimLost(Exception):
    """Our claim on a job expired and another worker may own it: stop touching it."""


class SendFailed(Exception):
    """The message could not be handed to the provider; `retryable` says whether to try later."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class InboundStore(Protocol):
    """Inbound messages as durable work: accepted once, claimed, answered, sent in parts.

    Every method raises Unavailable when the database is away.
    """

    async def accept(self, message: InboundMessage) -> bool:
        """Record the message as pending work; False when its id was already there."""
        ...

    async def record_blocked(self, message: InboundMessage) -> None:
        """Record only that a blocked sender's message arrived (never its content)."""
        ...

    async def claim(
        self, channels: Mapping[str, BurstRule], token: str, seconds: float
    ) -> InboundJob | None:
        """Claim the oldest due message of `channels` whose sender has no earlier one open,
        with the rest of its burst (by the channel's rule) once the burst is over."""
        ...

    async def renew(self, job: InboundJob, seconds: float) -> bool:
        """Extend the claim; False when it was lost."""
        ...

    async def active_chat(self, channel: str, sender: str) -> str | None:
        """The chat the sender's next message continues, if any."""
        ...

    async def save_answer(self, job: InboundJob, parts: list[str], answer: Answer) -> None:
        """Store the split answer, the chat message it delivers and (when `answer.set_chat`)
        the sender's active chat, atomically; the burst's other messages are closed as
        answered by it in the same transaction. Raises ClaimLost when the claim is gone."""
        ...

    async def part_sent(self, job: InboundJob, index: int, provider_id: str) -> None:
        """Record part `index` as sent with the provider's id. Raises ClaimLost."""
        ...

    async def finish(self, job: InboundJob) -> None:
        ...

    async def reschedule(self, job: InboundJob, delay: float, error: str, failure: bool) -> None:
        """Give the job back, due again in `delay` seconds (`failure` counts toward giving up)."""
        ...

    async def fail(self, job: InboundJob, error: str) -> None:
        """Close the job for good, recording why."""
        ...


class MessageSender(Protocol):
    """One channel's way out: sends a text of at most `part_limit` units (the channel's own
    count, e.g. UTF-16 units for WhatsApp)."""

    part_limit: int

    async def send(self, from_: str, to: str, body: str) -> str:
        """Send one message; returns the provider's message id. Raises SendFailed."""
        ...

    async def typing(self, message_id: str) -> bool:
        """Show the sender an answer is coming (and mark their message read), best effort:
        never raises; False when it did not work."""
        ...
