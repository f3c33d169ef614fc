"""The chat aggregate: a system message, a live window of messages, and its token budget."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from chatms.domain.budget import TokenBudget, message_tokens
from chatms.domain.context import Summary, fit_window
from chatms.domain.errors import ChatEnded, InvalidInput, MessageTooLarge
from chatms.domain.media import Attachment


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class ChatStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class Completion(StrEnum):
    """How an assistant message came to an end."""

    COMPLETE = "complete"
    CANCELLED = "cancelled"
    UPSTREAM_ERROR = "upstream_error"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"
    TOO_LONG = "too_long"  # cut at the answer limit (MAX_ANSWER_CHARS); what fits is kept
    STOPPED = "stopped"  # the stop route or StopTurn
    INTERRUPTED = "interrupted"  # the process running the turn died
    # Not final: the answer of a turn still running, flushed as it grows.
    STREAMING = "streaming"


@dataclass(frozen=True, slots=True)
class ChatConfig:
    """The sampling settings a chat was created with; they travel with the chat.

    No defaults here: new chats take theirs from the settings (`ModelSettings`).
    """

    model: str
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    presence_penalty: float
    frequency_penalty: float


@dataclass(slots=True)
class Message:
    seq: int
    role: Role
    content: str
    tokens: int
    erased: bool = False
    completion: Completion = Completion.COMPLETE
    finish_reason: str | None = None
    # Where a user message's text came from (a voice note, a photo); empty for typed text.
    attachments: tuple[Attachment, ...] = ()

    @property
    def in_prompt(self) -> bool:
        """Whether the model is shown this message (an empty partial answer says nothing)."""
        return not self.erased and bool(self.content)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class PendingTurn:
    """What one turn adds to a chat: persisted in one transaction when the turn ends."""

    user: Message
    erased_seqs: list[int]
    # The chat's summary was too large to fit beside this turn: it went out without it.
    summary_left_out: bool = False
    assistant: Message | None = None
    usage: Usage = field(default_factory=Usage)


class Chat:
    """One conversation. The system message is never erased; the oldest others are."""

    def __init__(
        self,
        *,
        id: str,
        owner: str,
        config: ChatConfig,
        system: Message,
        live: Iterable[Message] = (),
        next_seq: int = 1,
        status: ChatStatus = ChatStatus.ACTIVE,
        summary: Summary | None = None,
        title_pending: bool = False,
    ) -> None:
        self.id = id
        self.owner = owner
        self.config = config
        self.system = system
        self.live: deque[Message] = deque(live)
        self.next_seq = next_seq
        self.status = status
        # The rolling summary of the erased messages up to its watermark, if one was made.
        self.summary = summary
        self._summary_in_prompt = summary is not None
        # No title has been asked of the model yet (only the first message's beginning).
        self.title_pending = title_pending

    @classmethod
    def start(
        cls, *, id: str, owner: str, config: ChatConfig, system_prompt: str, system_tokens: int
    ) -> Chat:
        system = Message(0, Role.SYSTEM, system_prompt, message_tokens(system_tokens))
        return cls(id=id, owner=owner, config=config, system=system)

    @property
    def live_tokens(self) -> int:
        """Prompt tokens of the system message and the live window, framing included."""
        return self.system.tokens + sum(m.tokens for m in self.live)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of everything the next request sends, the summary included."""
        summary = self.summary.tokens if self.summary and self._summary_in_prompt else 0
        return self.live_tokens + summary

    @property
    def unsummarised(self) -> bool:
        """Messages left the window that no summary covers yet."""
        evicted_through = (self.live[0].seq if self.live else self.next_seq) - 1
        return evicted_through > (self.summary.through_seq if self.summary else 0)

    def prompt(self) -> Iterator[tuple[str, str]]:
        """The (role, content) pairs sent upstream: system first, then the live window in order.

        A question whose turn failed before any answer (refused upstream, cancelled early) is
        kept in the history but not asked again: resending it could fail the chat for good.
        """
        yield self.system.role.value, self.system.content
        summary = self.summary if self._summary_in_prompt else None
        if summary is not None:
            yield Role.SYSTEM.value, summary.prompt_text
        covered = summary.through_seq if summary is not None else 0
        live = self.live
        last = len(live) - 1
        for i, m in enumerate(live):
            if not m.in_prompt or m.seq <= covered:
                continue
            if m.role is Role.USER and i < last:
                reply = live[i + 1]
                if not reply.content and reply.completion is not Completion.COMPLETE:
                    continue
            yield m.role.value, m.content

    def add_user_message(
        self,
        content: str,
        content_tokens: int,
        budget: TokenBudget,
        extra_tokens: int = 0,
        attachments: tuple[Attachment, ...] = (),
    ) -> PendingTurn:
        """Append a user message, erasing the oldest messages the budget cannot keep.

        `extra_tokens` is what this turn alone sends with the message (images): it must fit
        now, but later turns see only `content`, so the stored count leaves it out.
        """
        if self.status is ChatStatus.ENDED:
            raise ChatEnded()
        if not content.strip():
            raise InvalidInput("user_message must not be empty")
        tokens = message_tokens(content_tokens)
        room = budget.prompt_limit - self.system.tokens
        if tokens + extra_tokens > room:
            raise MessageTooLarge(tokens + extra_tokens, max(room, 0))
        fit = fit_window(
            budget.prompt_limit, self.system.tokens,
            self.summary.tokens if self.summary else None,
            [m.tokens for m in self.live], tokens + extra_tokens,
        )
        self._summary_in_prompt = fit.keep_summary
        erased: list[int] = []
        for _ in range(fit.evict):
            oldest = self.live.popleft()
            oldest.erased = True
            erased.append(oldest.seq)
        user = Message(self.next_seq, Role.USER, content, tokens, attachments=attachments)
        self.next_seq += 1
        self.live.append(user)
        left_out = self.summary is not None and not fit.keep_summary
        return PendingTurn(user=user, erased_seqs=erased, summary_left_out=left_out)

    def add_assistant_message(
        self,
        turn: PendingTurn,
        content: str,
        content_tokens: int,
        completion: Completion,
        finish_reason: str | None,
        usage: Usage,
    ) -> Message:
        """Record the model's answer (whole or partial) as the turn's closing message."""
        tokens = message_tokens(content_tokens) if content else 0
        reply = Message(
            self.next_seq, Role.ASSISTANT, content, tokens,
            completion=completion, finish_reason=finish_reason,
        )
        self.next_seq += 1
        self.live.append(reply)
        turn.assistant = reply
        turn.usage = usage
        return reply

    def end(self) -> None:
        self.status = ChatStatus.ENDED
