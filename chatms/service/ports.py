"""The small interfaces the use cases need; adapters implement them and are handed in."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from chatms.domain.context import FoldItem, Summary
from chatms.domain.model import Chat, ChatConfig, Message, PendingTurn, Usage


class TokenCounter(Protocol):
    def count(self, text: str) -> int:
        """Tokens of `text` in the model's encoding."""
        ...


@dataclass(frozen=True, slots=True)
class Finished:
    """The last event of a completion stream: why the answer ended and what it cost."""

    finish_reason: str | None
    usage: Usage | None  # None when the upstream did not report it


# What a completion stream yields: text deltas (str), then one `Finished` when the answer is
# whole. A stream that fails raises a domain error instead of yielding `Finished`.
UpstreamEvent = str | Finished


class CompletionClient(Protocol):
    def complete(
        self, config: ChatConfig, messages: Sequence[tuple[str, str]], deadline: float
    ) -> AsyncGenerator[UpstreamEvent, None]:
        """Stream the answer as events; closing the generator closes the upstream request.

        `deadline` (time.monotonic()) is when the whole answer must be in: a stream still
        going then raises UpstreamTimeout, even one that trickles keep-alives.
        """
        ...


@dataclass(frozen=True, slots=True)
class WholeAnswer:
    """A non-streamed completion: its text, finish reason and usage (when reported)."""

    text: str
    finish_reason: str | None
    usage: Usage | None


class WholeCompletionClient(Protocol):
    async def complete_whole(
        self, model: str, messages: Sequence[tuple[str, str]], max_tokens: int
    ) -> WholeAnswer:
        """One non-streamed completion (summaries, titles); the caller sets its deadline."""
        ...


@dataclass(frozen=True, slots=True)
class ChatSummary:
    id: str
    status: str
    title: str | None
    message_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    role: str
    content: str
    tokens: int
    erased: bool
    completion: str
    finish_reason: str | None
    created_at: datetime
    # For an answer sent through WhatsApp: "sending", "delivered" or "failed".
    delivery: str | None = None


@dataclass(frozen=True, slots=True)
class StoredSummary:
    """A chat's current rolling summary, as its owner sees it."""

    version: int
    through_seq: int  # the last message it covers
    content: str
    tokens: int
    model: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ChatDetail:
    """One chat as its owner sees it: status, every stored message in order, its summary."""

    id: str
    status: str
    messages: list[StoredMessage]
    title: str | None = None
    model: str = ""
    summary: StoredSummary | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """Exclusive right to run a turn on one chat until `seconds` have passed."""

    token: str
    seconds: float


@dataclass(frozen=True, slots=True)
class ChatPage:
    chats: list[ChatSummary]
    next_cursor: str | None = field(default=None)


class ChatRepository(Protocol):
    async def create(self, chat: Chat, lease: Lease) -> None:
        """Store a new chat with its system message, leased to the caller."""
        ...

    async def acquire(self, chat_id: str, owner: str, lease: Lease) -> Chat:
        """Lease an active chat of `owner` and load its live window.

        Raises ChatNotFound, ChatEnded or ChatBusy.
        """
        ...

    async def commit_turn(self, chat: Chat, turn: PendingTurn, lease: Lease) -> None:
        """Store a turn's messages, erasures and usage atomically and release the lease."""
        ...

    async def renew(self, chat_id: str, lease: Lease) -> bool:
        """Extend a lease still held by `lease`; False when the chat has no such lease."""
        ...

    async def release(self, chat_id: str, lease: Lease) -> None:
        """Give up a lease without storing anything."""
        ...

    async def list_chats(self, owner: str, limit: int, cursor: str | None) -> ChatPage:
        """The owner's chats, most recently updated first."""
        ...

    async def messages(self, chat_id: str, owner: str) -> list[StoredMessage]:
        """Every stored message of the owner's chat, erased ones included, in order."""
        ...

    async def chat(self, chat_id: str, owner: str) -> ChatDetail:
        """The owner's chat with its status and messages. Raises ChatNotFound."""
        ...

    async def end(self, chat_id: str, owner: str) -> None:
        """Mark the owner's chat ended. Raises ChatNotFound."""
        ...


class ContextStore(Protocol):
    """Where rolling summaries and generated titles are kept (beside the chat repository)."""

    async def claim_summary(self, chat_id: str, claim: Lease) -> bool:
        """Take the chat's summary claim; False when another summariser holds it."""
        ...

    async def release_summary(self, chat_id: str, claim: Lease) -> None:
        """Give the summary claim back."""
        ...

    async def summary_input(
        self, chat_id: str, max_items: int
    ) -> tuple[Summary | None, list[FoldItem]]:
        """The current summary and the erased messages after its watermark, oldest first."""
        ...

    async def store_summary(
        self, chat_id: str, claim: Lease, summary: Summary, usage: Usage
    ) -> bool:
        """Store a new summary; False (nothing stored) when the claim was lost or another
        summary landed meanwhile."""
        ...

    async def store_title(self, chat_id: str, title: str) -> bool:
        """Set the chat's generated title, once; False when it already has one."""
        ...


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


# Re-exported so that callers of the service need not reach into the domain package.
__all__ = [
    "Answer",
    "ChatDetail",
    "ChatPage",
    "ChatRepository",
    "ChatSummary",
    "ClaimLost",
    "CompletionClient",
    "ContextStore",
    "Finished",
    "InboundJob",
    "InboundMessage",
    "InboundStore",
    "Lease",
    "Message",
    "MessageSender",
    "SendFailed",
    "StoredMessage",
    "StoredSummary",
    "TokenCounter",
    "UpstreamEvent",
    "WholeAnswer",
    "WholeCompletionClient",
]
