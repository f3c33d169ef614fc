"""The WhatsApp use case: accept an inbound message as durable work, answer it through the same
`ChatService.turn` as every other door, and send the answer in parts through a `MessageSender`.

Exactly once: the inbound MessageSid is the primary key of the work row, inserted in the
transaction that accepts it, so a redelivery adds nothing. The answer is stored (split) before
the first part goes out, and each sent part is recorded, so a restart resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from chatms.config import WhatsAppSettings
from chatms.domain import errors
from chatms.domain.whatsapp import MAX_PART, is_reset, split_message
from chatms.service.chats import ChatService

log = logging.getLogger("chatms.whatsapp")

RESET_REPLY = "Done: that conversation is closed. Your next message starts a new one."
MEDIA_REPLY = (
    "Sorry, I can only read text messages. Please send your question as text."
)
UPSTREAM_REPLY = "Sorry, I could not get an answer right now. Please try again in a moment."
EMPTY_REPLY = "Sorry, I have no answer to that. Could you rephrase it?"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message as Twilio posted it (only the fields we use)."""

    message_sid: str
    account_sid: str
    sender: str  # From, e.g. whatsapp:+5511999990000
    recipient: str  # To: our number
    body: str
    num_media: int = 0
    profile_name: str | None = None


@dataclass(slots=True)
class Job:
    """A claimed inbound message: only the claim holder may advance it."""

    message_sid: str
    token: str
    sender: str
    recipient: str
    body: str
    num_media: int
    parts: list[str] | None
    parts_sent: int
    failures: int
    age: float = 0.0  # seconds since the message was received, when it was claimed
    claimed_at: float = field(default_factory=time.monotonic)

    def seconds_left(self, deadline: float) -> float:
        """Seconds until `deadline` (counted from the message's arrival) passes; <= 0 once past."""
        return deadline - self.age - (time.monotonic() - self.claimed_at)


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send for a job, and where it is kept."""

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


class Retry(Exception):
    """Give the job back and try it again after `delay` seconds."""

    def __init__(self, reason: str, delay: float, failure: bool) -> None:
        super().__init__(reason)
        self.delay = delay
        self.failure = failure


class WhatsAppStore(Protocol):
    async def accept(self, message: Inbound) -> bool:
        """Record the message as pending work; False when its MessageSid was already there."""
        ...

    async def claim(self, token: str, seconds: float) -> Job | None:
        """Claim the oldest due message whose sender has no earlier one open."""
        ...

    async def renew(self, message_sid: str, token: str, seconds: float) -> bool:
        ...

    async def active_chat(self, sender: str) -> str | None:
        ...

    async def save_answer(self, job: Job, parts: list[str], answer: Answer) -> None:
        """Store the split answer, the chat message it delivers and (when `answer.set_chat`)
        the sender's active chat, atomically."""
        ...

    async def part_sent(self, job: Job, index: int, provider_sid: str) -> None:
        ...

    async def finish(self, job: Job) -> None:
        ...

    async def reschedule(self, job: Job, delay: float, error: str, failure: bool) -> None:
        ...

    async def fail(self, job: Job, error: str) -> None:
        ...


class MessageSender(Protocol):
    async def send(self, from_: str, to: str, body: str) -> str:
        """Send one message; returns the provider's message id. Raises SendFailed."""
        ...


class Pacer:
    """Spaces the sends of each WhatsApp sender number to at most `per_second`."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next: dict[str, float] = {}

    async def wait(self, key: str) -> None:
        now = asyncio.get_running_loop().time()
        at = max(now, self._next.get(key, now))
        self._next[key] = at + self.interval  # reserved before sleeping: callers queue up
        if at > now:
            await asyncio.sleep(at - now)


class WhatsAppService:
    def __init__(
        self,
        store: WhatsAppStore,
        chats: ChatService,
        sender: MessageSender,
        settings: WhatsAppSettings,
        pacer: Pacer,
    ) -> None:
        self.store = store
        self.chats = chats
        self.sender = sender
        self.settings = settings
        self.pacer = pacer
        self.arrived = asyncio.Event()  # set on each new message; the worker waits on it

    async def accept(self, message: Inbound) -> bool:
        """Store the message as work (once per MessageSid); True when it was new."""
        new = await self.store.accept(message)
        if new:
            self.arrived.set()
        return new

    async def process(self, job: Job) -> None:
        """Answer a claimed job (unless already answered) and send what is not yet sent."""
        if job.parts is None:
            answer = await self._answer(job)
            # Twilio refuses an empty body, and silence would look like a lost message.
            parts = split_message(answer.text, MAX_PART) or [EMPTY_REPLY]
            await self.store.save_answer(job, parts, answer)
            job.parts = parts
        await self._send(job)

    async def _answer(self, job: Job) -> Answer:
        body = job.body
        if is_reset(body):
            current = await self.store.active_chat(job.sender)
            if current is not None:
                try:
                    await self.chats.end(job.sender, current)
                except errors.ChatNotFound:
                    pass  # already gone: forgetting it is all that is left to do
            return Answer(RESET_REPLY, None, True)
        if not body.strip():
            return Answer(MEDIA_REPLY)
        limit = self.settings.max_body_chars
        if len(body) > limit:
            return Answer(
                f"Sorry, your message is {len(body)} characters long; I can read at most "
                f"{limit}. Please send a shorter message."
            )
        chat_id = await self.store.active_chat(job.sender)
        try:
            return await self._turn(job.sender, chat_id, body)
        except (errors.ChatNotFound, errors.ChatEnded):
            if chat_id is None:
                raise
            # The remembered chat was ended elsewhere (another door): start a new one.
            return await self._turn(job.sender, None, body)

    async def _turn(self, user_id: str, chat_id: str | None, body: str) -> Answer:
        turn = self.chats.turn(user_id, chat_id, body, "whatsapp")
        try:
            async with turn:
                async for _ in turn:
                    pass
            return Answer(turn.result.content, turn.chat_id, True, turn.answer_seq)
        except errors.ChatBusy:
            raise Retry("chat busy", self.settings.busy_retry_seconds, failure=False) from None
        except errors.Unavailable as exc:
            raise Retry(str(exc), self.settings.busy_retry_seconds, failure=True) from None
        except (errors.ChatNotFound, errors.ChatEnded):
            raise
        except errors.UpstreamError as exc:
            log.warning("whatsapp turn failed upstream: %s", type(exc).__name__)
            # The turn was stored (marked failed) in its chat: keep that chat going.
            return Answer(UPSTREAM_REPLY, turn.chat_id or None, bool(turn.chat_id),
                          turn.answer_seq)
        except errors.NotConfigured as exc:
            log.warning("whatsapp turn not possible: %s", exc)
            return Answer(UPSTREAM_REPLY)
        except errors.InvalidInput as exc:
            return Answer(f"Sorry, I cannot take that message: {exc}")

    async def _send(self, job: Job) -> None:
        parts = job.parts or []
        for index in range(job.parts_sent, len(parts)):
            await self.pacer.wait(job.recipient)
            try:
                sid = await self.sender.send(job.recipient, job.sender, parts[index])
            except SendFailed as exc:
                if not exc.retryable:
                    raise
                delay = self.settings.backoff(job.failures + 1)
                raise Retry(str(exc), delay, failure=True) from None
            await self.store.part_sent(job, index, sid)
            job.parts_sent = index + 1
        await self.store.finish(job)
