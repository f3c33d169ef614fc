"""Ports of the chat use cases: the upstream model, token counting, chats and their context."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from chatms.domain.context import FoldItem, Summary
from chatms.domain.media import Attachment, ImageInput
from chatms.domain.model import Chat, ChatConfig, Completion, PendingTurn, Usage


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
        self,
        config: ChatConfig,
        messages: Sequence[tuple[str, str]],
        deadline: float,
        images: Sequence[ImageInput] = (),
    ) -> AsyncGenerator[UpstreamEvent, None]:
        """Stream the answer as events; closing the generator closes the upstream request.

        `deadline` (time.monotonic()) is when the whole answer must be in: a stream still
        going then raises UpstreamTimeout, even one that trickles keep-alives. `images` go
        with the last message (this turn's user message) as image content.
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
    attachments: tuple[Attachment, ...] = ()


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
    """One chat as its owner sees it: status, its system message, and every other stored
    message in order (the ones `ChatSummary.message_count` counts)."""

    id: str
    status: str
    messages: list[StoredMessage]
    title: str | None = None
    model: str = ""
    summary: StoredSummary | None = None
    system_message: StoredMessage | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """Exclusive right to run a turn on one chat until `seconds` have passed."""

    token: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Progress:
    """A streaming answer's text past position `start`, to be written under its lease."""

    chat_id: str
    lease: Lease
    seq: int  # the answer's message
    start: int
    text: str
    tokens: int  # the whole answer so far, estimated


@dataclass(frozen=True, slots=True)
class AnswerState:
    """A chat's latest answer as stored: `rest` is its text past the position asked for."""

    leased: bool  # a turn holds the chat (its answer may still grow)
    seq: int | None  # None: the chat has no answer yet
    completion: Completion = Completion.COMPLETE
    length: int = 0
    rest: str = ""


@dataclass(frozen=True, slots=True)
class Signal:
    """What another replica's turn said about an answer (heard through the database)."""

    kind: str  # "progress", "end", or "reload" (signals may have been missed: read again)
    start: int = 0  # progress: the position the text starts at
    text: str | None = None  # progress: the new text, None when it was too long to send
    completion: str | None = None  # end: how the answer ended


class TurnSignals(Protocol):
    def watch(self, chat_id: str, handler: Callable[[Signal], None]) -> Callable[[], None]:
        """Call `handler` with each signal of the chat until the returned function is called."""
        ...

    def on_stop(self, handler: Callable[[str], None]) -> None:
        """Call `handler` with the chat id of every stop request, from any replica."""
        ...


@dataclass(frozen=True, slots=True)
class ChatPage:
    chats: list[ChatSummary]
    next_cursor: str | None = field(default=None)


class ChatRepository(Protocol):
    async def acquire(self, chat_id: str, owner: str, lease: Lease) -> Chat:
        """Lease an active chat of `owner` and load its live window.

        Raises ChatNotFound, ChatEnded or ChatBusy.
        """
        ...

    async def commit_turn(self, chat: Chat, turn: PendingTurn, lease: Lease) -> None:
        """Store a turn's messages, erasures and usage atomically and release the lease."""
        ...

    async def begin(self, chat: Chat, turn: PendingTurn, lease: Lease, create: bool) -> bool:
        """Store the user message and an empty 'streaming' answer (with the chat itself
        when `create`); idempotent. False when the lease is no longer held."""
        ...

    async def flush(self, progress: Sequence[Progress]) -> set[int]:
        """Set each streaming answer's text past its `start`, all in one write; the indexes
        (in `progress`) of those that landed (the others' lease is gone, or they are final)."""
        ...

    async def latest_answer(
        self, chat_id: str, owner: str, after: int, seq: int | None = None
    ) -> AnswerState:
        """The owner's chat's latest answer (or the one at `seq`) past position `after`.

        Raises ChatNotFound."""
        ...

    async def interrupt_lapsed(self, chat_id: str | None = None, grace: float = 0.0) -> int:
        """Mark 'interrupted' the streaming answers whose lease lapsed `grace` seconds ago."""
        ...

    async def signal_stop(self, chat_id: str, owner: str) -> bool:
        """Tell every replica to stop the chat's turn; False when none is running."""
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
