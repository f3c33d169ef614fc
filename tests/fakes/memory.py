"""Typed, complete in-memory implementations of the service's ports, for service-level tests.

They keep the contracts the PostgreSQL adapters keep (leases, ownership, append-only
messages, idempotent create and commit, pagination by (updated_at, id)), so the turn logic
can be tested in milliseconds. `unavailable` makes every call fail the way an outage does.
The benchmark's persistence-off run uses `MemoryChatRepository` too.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from chatms.domain.errors import ChatBusy, ChatEnded, ChatNotFound, InvalidInput, Unavailable
from chatms.domain.media import ImageInput
from chatms.domain.model import (
    Chat,
    ChatConfig,
    ChatStatus,
    Completion,
    Message,
    PendingTurn,
    Role,
    Usage,
)
from chatms.service.ports import (
    Answer,
    AnswerState,
    BurstRule,
    ChatDetail,
    ChatPage,
    ChatRepository,
    ChatSummary,
    ClaimLost,
    CompletionClient,
    Finished,
    InboundJob,
    InboundMessage,
    InboundStore,
    Lease,
    MessageSender,
    Progress,
    Received,
    StoredMessage,
    TokenCounter,
    UpstreamEvent,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Outage:
    """Set `unavailable` to make every call raise Unavailable, as a database outage does."""

    unavailable = False

    def _check(self) -> None:
        if self.unavailable:
            raise Unavailable("database unavailable; please retry")


@dataclass
class StoredChat:
    id: str
    owner: str
    config: ChatConfig
    messages: list[Message]
    next_seq: int = 1
    status: ChatStatus = ChatStatus.ACTIVE
    title: str | None = None
    lease: tuple[str, float] | None = None  # (token, time.monotonic() it runs out)
    created_at: datetime = EPOCH
    updated_at: datetime = EPOCH
    created: list[datetime] = field(default_factory=list)  # when each message was stored


class MemoryChatRepository(Outage):
    """`ChatRepository` in dicts: leases honoured, messages append-only, nothing durable."""

    def __init__(self) -> None:
        self.chats: dict[str, StoredChat] = {}
        self._clock = itertools.count(1)  # updated_at ticks: never two chats with one stamp
        self.calls: list[str] = []  # the method names, in order

    def _now(self) -> datetime:
        return EPOCH + timedelta(microseconds=next(self._clock))

    def _held(self, chat: StoredChat, lease: Lease) -> bool:
        return chat.lease is not None and chat.lease[0] == lease.token

    def _owned(self, chat_id: str, owner: str) -> StoredChat:
        chat = self.chats.get(chat_id)
        if chat is None or chat.owner != owner:
            raise ChatNotFound()
        return chat

    async def create(self, chat: Chat, lease: Lease) -> None:
        self.calls.append("create")
        self._check()
        if chat.id in self.chats:
            return  # idempotent, as ON CONFLICT DO NOTHING
        now = self._now()
        self.chats[chat.id] = StoredChat(
            chat.id, chat.owner, chat.config, [replace(chat.system)], chat.next_seq,
            lease=(lease.token, time.monotonic() + lease.seconds), created_at=now,
            updated_at=now, created=[now],
        )

    async def begin(self, chat: Chat, turn: PendingTurn, lease: Lease, create: bool) -> bool:
        """The question and an empty 'streaming' answer (with the chat when `create`)."""
        self.calls.append("begin")
        self._check()
        if create:
            await self.create(chat, lease)
        stored = self.chats.get(chat.id)
        if stored is None or not self._held(stored, lease):
            return False
        if any(m.seq == turn.user.seq for m in stored.messages):
            return True  # idempotent, as ON CONFLICT DO NOTHING
        erased = set(turn.erased_seqs)
        for message in stored.messages:
            if message.seq in erased:
                message.erased = True
        answer = Message(turn.user.seq + 1, Role.ASSISTANT, "", 0,
                         completion=Completion.STREAMING)
        now = self._now()
        stored.messages += [replace(turn.user), answer]
        stored.created += [now, now]
        stored.next_seq = turn.user.seq + 2
        stored.title = stored.title or turn.user.content[:200]
        return True

    async def flush(self, progress: Sequence[Progress]) -> set[int]:
        self.calls.append("flush")
        self._check()
        landed: set[int] = set()
        for i, item in enumerate(progress):
            stored = self.chats.get(item.chat_id)
            answer = self._streaming(stored, item.seq)
            if stored is None or answer is None or not self._held(stored, item.lease):
                continue
            answer.content = answer.content[:item.start] + item.text
            answer.tokens = item.tokens
            landed.add(i)
        return landed

    def _streaming(self, stored: StoredChat | None, seq: int) -> Message | None:
        for message in stored.messages if stored is not None else ():
            if message.seq == seq and message.completion is Completion.STREAMING:
                return message
        return None

    async def latest_answer(
        self, chat_id: str, owner: str, after: int, seq: int | None = None
    ) -> AnswerState:
        self._check()
        stored = self._owned(chat_id, owner)
        leased = stored.lease is not None and stored.lease[1] >= time.monotonic()
        answers = [m for m in stored.messages if m.role is Role.ASSISTANT
                   and (seq is None or m.seq == seq)]
        if not answers:
            return AnswerState(leased=leased, seq=None)
        last = answers[-1]
        return AnswerState(leased, last.seq, last.completion, len(last.content),
                           last.content[after:])

    async def interrupt_lapsed(self, chat_id: str | None = None, grace: float = 0.0) -> int:
        self._check()
        count = 0
        for stored in self.chats.values():
            if chat_id is not None and stored.id != chat_id:
                continue
            if stored.lease is not None and stored.lease[1] >= time.monotonic() - grace:
                continue
            for message in stored.messages:
                if message.completion is Completion.STREAMING:
                    message.completion = Completion.INTERRUPTED
                    count += 1
        return count

    async def signal_stop(self, chat_id: str, owner: str) -> bool:
        self._check()
        stored = self._owned(chat_id, owner)
        return stored.lease is not None and stored.lease[1] >= time.monotonic()

    async def acquire(self, chat_id: str, owner: str, lease: Lease) -> Chat:
        self.calls.append("acquire")
        self._check()
        stored = self._owned(chat_id, owner)
        if stored.status is ChatStatus.ENDED:
            raise ChatEnded()
        if stored.lease is not None and stored.lease[1] >= time.monotonic():
            if stored.lease[0] != lease.token:
                raise ChatBusy()
        stored.lease = (lease.token, time.monotonic() + lease.seconds)
        for message in stored.messages:  # an answer left 'streaming' by a dead process
            if message.completion is Completion.STREAMING:
                message.completion = Completion.INTERRUPTED
        system, *rest = stored.messages
        return Chat(
            id=stored.id, owner=owner, config=stored.config, system=replace(system),
            live=[replace(m) for m in rest if not m.erased], next_seq=stored.next_seq,
        )

    async def commit_turn(self, chat: Chat, turn: PendingTurn, lease: Lease) -> None:
        self.calls.append("commit_turn")
        self._check()
        stored = self.chats.get(chat.id)
        assert turn.assistant is not None, "a turn is committed with its answer"
        final = turn.assistant
        if stored is None or not self._held(stored, lease):
            if stored is not None and any(
                m.seq == final.seq and m.content == final.content
                and m.completion is final.completion for m in stored.messages
            ):
                return  # committed before: idempotent
            raise Unavailable("the turn outlived its lease on the chat and was not stored")
        erased = set(turn.erased_seqs)
        for message in stored.messages:
            if message.seq in erased:
                message.erased = True
        now = self._now()
        have = {m.seq for m in stored.messages}
        for new in (turn.user, final):  # begin may have stored the question and the answer
            if new.seq not in have:
                stored.messages.append(replace(new))
                stored.created.append(now)
        answer = self._streaming(stored, final.seq)
        if answer is not None:  # the answer being written becomes final
            answer.content, answer.tokens = final.content, final.tokens
            answer.completion, answer.finish_reason = final.completion, final.finish_reason
        stored.next_seq = chat.next_seq
        stored.title = stored.title or turn.user.content[:200]
        stored.updated_at = now
        stored.lease = None

    async def renew(self, chat_id: str, lease: Lease) -> bool:
        self.calls.append("renew")
        self._check()
        stored = self.chats.get(chat_id)
        if stored is None or not self._held(stored, lease):
            return False
        stored.lease = (lease.token, time.monotonic() + lease.seconds)
        return True

    async def release(self, chat_id: str, lease: Lease) -> None:
        self.calls.append("release")
        self._check()
        stored = self.chats.get(chat_id)
        if stored is not None and self._held(stored, lease):
            stored.lease = None

    async def list_chats(self, owner: str, limit: int, cursor: str | None) -> ChatPage:
        self._check()
        mine = sorted(
            (c for c in self.chats.values() if c.owner == owner),
            key=lambda c: (c.updated_at, c.id), reverse=True,
        )
        if cursor is not None:
            after = _decode_cursor(cursor)
            mine = [c for c in mine if (c.updated_at, c.id) < after]
        page = [
            ChatSummary(c.id, c.status.value, c.title, len(c.messages) - 1, c.created_at,
                        c.updated_at)
            for c in mine[:limit]
        ]
        more = len(mine) > limit
        last = page[-1] if page else None
        return ChatPage(page, _encode_cursor(last.updated_at, last.id) if more and last else None)

    async def messages(self, chat_id: str, owner: str) -> list[StoredMessage]:
        detail = await self.chat(chat_id, owner)
        system = [detail.system_message] if detail.system_message else []
        return system + detail.messages

    async def chat(self, chat_id: str, owner: str) -> ChatDetail:
        self._check()
        stored = self._owned(chat_id, owner)
        messages = [
            StoredMessage(m.seq, m.role.value, m.content, m.tokens, m.erased, m.completion.value,
                          m.finish_reason, at)
            for m, at in zip(stored.messages, stored.created, strict=True)
        ]
        # As in PostgreSQL: the system message is the chat's own, not one of its messages.
        system = messages.pop(0) if messages and messages[0].role == "system" else None
        return ChatDetail(stored.id, stored.status.value, messages, stored.title,
                          stored.config.model, system_message=system)

    async def end(self, chat_id: str, owner: str) -> None:
        self._check()
        stored = self._owned(chat_id, owner)
        if stored.lease is not None and stored.lease[1] >= time.monotonic():
            raise ChatBusy()  # a turn still holding the chat would be stored after the end
        stored.status = ChatStatus.ENDED
        stored.updated_at = self._now()


def _encode_cursor(updated_at: datetime, chat_id: str) -> str:
    return base64.urlsafe_b64encode(f"{updated_at.isoformat()}|{chat_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, chat_id = base64.urlsafe_b64decode(cursor).decode().split("|", 1)
        return datetime.fromisoformat(stamp), str(uuid.UUID(chat_id))
    except ValueError:
        raise InvalidInput("cursor is not valid") from None


class WordCounter:
    """`TokenCounter`: one token per word, so tests can reason about budgets exactly."""

    def count(self, text: str) -> int:
        return len(text.split())


@dataclass
class Reply:
    """One scripted upstream answer: its deltas, then how it ends."""

    deltas: Sequence[str] = ("Hello", " there")
    finish_reason: str | None = "stop"
    usage_reported: bool = True
    fail_after: int | None = None  # raise `error` after this many deltas
    error: Exception | None = None
    gap: float = 0.0  # seconds before each delta


class ScriptedUpstream:
    """`CompletionClient` answering each call with the next `Reply` (the last one repeats).

    `closed` counts the streams that were closed, `prompts` keeps every request's messages.
    """

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies) or [Reply()]
        self.prompts: list[list[tuple[str, str]]] = []
        self.images: list[list[ImageInput]] = []  # the images each request carried
        self.deadlines: list[float] = []
        self.closed = 0

    async def complete(
        self, config: ChatConfig, messages: Sequence[tuple[str, str]], deadline: float,
        images: Sequence[ImageInput] = (),
    ) -> AsyncGenerator[UpstreamEvent, None]:
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        self.prompts.append(list(messages))
        self.images.append(list(images))
        self.deadlines.append(deadline)
        try:
            for index, delta in enumerate(reply.deltas):
                if reply.fail_after == index and reply.error is not None:
                    raise reply.error
                if reply.gap:
                    await asyncio.sleep(reply.gap)
                yield delta
            if reply.fail_after is not None and reply.error is not None:
                raise reply.error
            completion_tokens = sum(len(d.split()) for d in reply.deltas)
            usage = Usage(len(messages), completion_tokens) if reply.usage_reported else None
            yield Finished(reply.finish_reason, usage)
        finally:
            self.closed += 1


@dataclass
class InboundRow:
    message: InboundMessage
    status: str = "pending"
    parts: list[str] | None = None
    parts_sent: int = 0
    failures: int = 0
    token: str | None = None
    claimed_until: float = 0.0
    due: float = 0.0
    error: str | None = None
    answer: Answer | None = None


class MemoryInboundStore(Outage):
    """`InboundStore` in a list: one claim per message, a sender's messages one at a time."""

    def __init__(self) -> None:
        self.rows: list[InboundRow] = []
        self.senders: dict[tuple[str, str], str | None] = {}
        self.sent: list[tuple[int, int, str]] = []  # (job id, part, provider id)
        self.blocked: list[tuple[str, str, str]] = []  # (channel, id, sender): arrivals only

    async def accept(self, message: InboundMessage) -> bool:
        self._check()
        key = (message.channel, message.message_id)
        if any((r.message.channel, r.message.message_id) == key for r in self.rows):
            return False
        self.rows.append(InboundRow(message))
        return True

    async def record_blocked(self, message: InboundMessage) -> None:
        self._check()
        self.blocked.append((message.channel, message.message_id, message.sender))

    async def claim(
        self, channels: Mapping[str, BurstRule], token: str, seconds: float
    ) -> InboundJob | None:
        """One message per claim: bursts are claimed by PostgreSQL's store (tested there)."""
        self._check()
        now = time.monotonic()
        seen: set[tuple[str, str]] = set()  # senders with an earlier open message
        for index, row in enumerate(self.rows):
            m = row.message
            if row.status not in ("pending", "sending"):
                continue
            first = (m.channel, m.sender) not in seen
            seen.add((m.channel, m.sender))
            free = row.token is None or row.claimed_until < now
            if m.channel in channels and first and free and row.due <= now:
                row.token, row.claimed_until = token, now + seconds
                parts = list(row.parts) if row.parts is not None else None
                return InboundJob(index, m.channel, m.message_id, token, m.sender, m.recipient,
                                  [Received(m.body, m.media)], parts, row.parts_sent,
                                  row.failures, [m.message_id])
        return None

    def _mine(self, job: InboundJob) -> InboundRow:
        row = self.rows[job.id]
        if row.token != job.token:
            raise ClaimLost()
        return row

    async def renew(self, job: InboundJob, seconds: float) -> bool:
        self._check()
        row = self.rows[job.id]
        if row.token != job.token:
            return False
        row.claimed_until = time.monotonic() + seconds
        return True

    async def active_chat(self, channel: str, sender: str) -> str | None:
        self._check()
        return self.senders.get((channel, sender))

    async def save_answer(self, job: InboundJob, parts: list[str], answer: Answer) -> None:
        self._check()
        row = self._mine(job)
        if row.status != "pending":
            raise ClaimLost()
        row.status, row.parts, row.parts_sent, row.answer = "sending", list(parts), 0, answer
        if answer.set_chat:
            self.senders[(job.channel, job.sender)] = answer.chat_id

    async def part_sent(self, job: InboundJob, index: int, provider_id: str) -> None:
        self._check()
        row = self._mine(job)
        if row.parts_sent != index:
            raise ClaimLost()
        row.parts_sent = index + 1
        self.sent.append((job.id, index, provider_id))

    async def finish(self, job: InboundJob) -> None:
        self._check()
        row = self._mine(job)
        row.status, row.token = "done", None

    async def reschedule(self, job: InboundJob, delay: float, error: str, failure: bool) -> None:
        self._check()
        row = self._mine(job)
        row.token, row.due, row.error = None, time.monotonic() + delay, error
        row.failures += int(failure)

    async def fail(self, job: InboundJob, error: str) -> None:
        self._check()
        row = self._mine(job)
        row.status, row.token, row.error = "failed", None, error
        row.failures += 1


class RecordingSender:
    """`MessageSender` that records every part; `refuse` makes it raise instead."""

    part_limit = 20

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []  # (from, to, body)
        self.typed: list[str] = []  # message ids the typing indicator was shown for
        self.refuse: Exception | None = None

    async def send(self, from_: str, to: str, body: str) -> str:
        if self.refuse is not None:
            raise self.refuse
        self.sent.append((from_, to, body))
        return f"SM{len(self.sent)}"

    async def typing(self, message_id: str) -> bool:
        self.typed.append(message_id)
        return True


# Each fake is checked against its port by mypy (`mypy tests/fakes/memory.py`).
_repository: ChatRepository = MemoryChatRepository()
_upstream: CompletionClient = ScriptedUpstream()
_counter: TokenCounter = WordCounter()
_inbound: InboundStore = MemoryInboundStore()
_sender: MessageSender = RecordingSender()

__all__ = [
    "MemoryChatRepository", "MemoryInboundStore", "RecordingSender", "Reply", "ScriptedUpstream",
    "WordCounter",
]
