"""Ports of the inbound text-channel queue: where the work is kept, and each channel's way out."""

from __future__ import annotations

import time
from collections.abc import Sequence
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


@dataclass(slots=True)
class InboundJob:
    """A claimed inbound message: only the claim holder (`token`) may advance it."""

    id: int
    channel: str
    message_id: str
    token: str
    sender: str
    recipient: str
    body: str
    media_count: int
    parts: list[str] | None  # the answer, split; None until it is stored
    parts_sent: int
    failures: int
    age: float = 0.0  # seconds since the message was received, when it was claimed
    claimed_at: float = field(default_factory=time.monotonic)

    def seconds_left(self, deadline: float) -> float:
        """Seconds until `deadline` (counted from the message's arrival) passes; <= 0 once past."""
        return deadline - self.age - (time.monotonic() - self.claimed_at)


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send for an inbound job, and where it is kept."""

    text: str
    chat_id: str | None = None  # the chat to remember for the sender
    set_chat: bool = False  # whether to change the remembered chat
    seq: int | None = None  # the stored chat message the text delivers


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

    async def claim(self, channels: Sequence[str], token: str, seconds: float) -> InboundJob | None:
        """Claim the oldest due message of `channels` whose sender has no earlier one open."""
        ...

    async def renew(self, job: InboundJob, seconds: float) -> bool:
        """Extend the claim; False when it was lost."""
        ...

    async def active_chat(self, channel: str, sender: str) -> str | None:
        """The chat the sender's next message continues, if any."""
        ...

    async def save_answer(self, job: InboundJob, parts: list[str], answer: Answer) -> None:
        """Store the split answer, the chat message it delivers and (when `answer.set_chat`)
        the sender's active chat, atomically. Raises ClaimLost when the claim is gone."""
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
