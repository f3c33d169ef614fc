"""Text channels (WhatsApp, and any other): accept an inbound message as durable work, answer
it through the same `ChatService.turn` as every other door, and send the answer in parts
through the channel's `MessageSender`.

Exactly once: the channel's message id is the work row's key, inserted in the transaction
that accepts it, so a redelivery adds nothing. The answer is stored (split) before the first
part goes out, and each sent part is recorded, so a restart resumes where it stopped.
Messages of one sender that arrive in a quick row (a burst) are claimed together and answered
by one turn; each keeps its row, closed by that one answer. Voice notes and photos are read
by the channel's `MediaReader`; per-user limits are checked before anything goes upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from chatms.config import InboundSettings
from chatms.domain import errors
from chatms.domain.limits import DAILY_TOKENS, TokenRoom, UserLimits
from chatms.domain.media import UserInput
from chatms.domain.texting import IMAGE, is_reset, media_kind, phone_number, split_message
from chatms.service.chats import ChatService
from chatms.service.inbound_media import TEXT_ONLY_REPLY, MediaReader, text_only
from chatms.service.limits import UsageGate
from chatms.service.ports import (
    Answer,
    BurstRule,
    InboundJob,
    InboundMessage,
    InboundStore,
    MessageSender,
    Received,
    SendFailed,
)

log = logging.getLogger("chatms.inbound")

RESET_REPLY = "Done: that conversation is closed. Your next message starts a new one."
MEDIA_REPLY = TEXT_ONLY_REPLY
UPSTREAM_REPLY = "Sorry, I could not get an answer right now. Please try again in a moment."
EMPTY_REPLY = "Sorry, I have no answer to that. Could you rephrase it?"
RATE_REPLY = (
    "You are sending messages faster than I can answer. Please wait a minute, then send your"
    " question again."
)
QUOTA_REPLY = "You have reached today's limit. I can answer again after midnight (UTC)."


@dataclass(frozen=True, slots=True)
class Channel:
    """A text channel the queue answers through: its name, its way out and its limits."""

    name: str  # as stored with each message, and the transport of its turns
    sender: MessageSender
    max_body_chars: int  # longer inbound messages get a polite refusal
    send_rate: float  # most messages per second from one of our addresses
    # Voice notes and photos; what a channel cannot read gets a polite reply in words.
    reader: MediaReader = field(default_factory=text_only)
    limits: UserLimits = field(default_factory=UserLimits)  # per sender; anyone can write
    burst: BurstRule = field(default_factory=BurstRule)
    blocked: frozenset[str] = frozenset()  # senders' numbers (`phone_number`): no answer


class Retry(Exception):
    """Give the job back and try it again after `delay` seconds."""

    def __init__(self, reason: str, delay: float, failure: bool) -> None:
        super().__init__(reason)
        self.delay = delay
        self.failure = failure


class Pacer:
    """Spaces the sends of each of our addresses to at most `per_second`.

    The gap is kept between the moments the waits actually return: a waiter that wakes late
    (a busy event loop) pushes the next one back, so sends never bunch up after a stall.
    """

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next: dict[str, float] = {}
        self._turns: dict[str, asyncio.Lock] = {}  # callers of one address go one by one

    async def wait(self, key: str) -> None:
        loop = asyncio.get_running_loop()
        async with self._turns.setdefault(key, asyncio.Lock()):
            delay = self._next.get(key, 0.0) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next[key] = loop.time() + self.interval


class InboundService:
    def __init__(
        self,
        store: InboundStore,
        chats: ChatService,
        channels: Sequence[Channel],
        settings: InboundSettings,
        gate: UsageGate | None = None,
    ) -> None:
        self.store = store
        self.chats = chats
        self.channels = {channel.name: channel for channel in channels}
        self.settings = settings
        self.gate = gate
        self._pacers = {channel.name: Pacer(channel.send_rate) for channel in channels}
        self.arrived = asyncio.Event()  # set on each new message; the worker waits on it
        self._typing: set[asyncio.Task[bool]] = set()

    @property
    def bursts(self) -> dict[str, BurstRule]:
        """Each channel's burst rule, as the store claims by them."""
        return {name: channel.burst for name, channel in self.channels.items()}

    def blocked(self, message: InboundMessage) -> bool:
        channel = self.channels.get(message.channel)
        return channel is not None and phone_number(message.sender) in channel.blocked

    async def accept(self, message: InboundMessage) -> bool:
        """Store the message as work (once per message id); True when it was new.

        A blocked sender's message is recorded as an arrival only, and never answered.
        """
        if self.blocked(message):
            await self.store.record_blocked(message)
            return False
        new = await self.store.accept(message)
        if new:
            self.arrived.set()
            burst = self.channels[message.channel].burst
            if burst.enabled:
                # Its burst is due when the sender has been quiet for a window: look then.
                asyncio.get_running_loop().call_later(burst.window + 0.05, self.arrived.set)
        return new

    async def close(self) -> None:
        """Stop typing indicators still on their way (they are best effort)."""
        for task in list(self._typing):
            task.cancel()
        await asyncio.gather(*self._typing, return_exceptions=True)

    async def process(self, job: InboundJob) -> None:
        """Answer a claimed job (unless already answered) and send what is not yet sent."""
        channel = self.channels[job.channel]
        if job.parts is None:
            self._show_typing(job, channel)
            answer = await self._answer(job, channel)
            limit = channel.sender.part_limit
            parts = [part for reply in answer.before for part in split_message(reply, limit)]
            if answer.text is not None:
                # Providers refuse an empty body, and silence would look like a lost message.
                parts += split_message(answer.text, limit) or [EMPTY_REPLY]
            await self.store.save_answer(job, parts, answer)
            job.parts = parts
        await self._send(job, channel)

    def _show_typing(self, job: InboundJob, channel: Channel) -> None:
        """Typing indicator (and read receipt) beside the work: it never delays the answer."""
        task = asyncio.ensure_future(channel.sender.typing(job.message_ids[-1]))
        self._typing.add(task)
        task.add_done_callback(self._typing.discard)

    async def _answer(self, job: InboundJob, channel: Channel) -> Answer:
        if len(job.messages) == 1 and is_reset(job.messages[0].body):
            return Answer(await self._reset(job), None, True)
        replies: list[str] = []
        readable: list[Received] = []
        for message in job.messages:
            if len(message.body) > channel.max_body_chars:
                replies.append(
                    f"Sorry, your message is {len(message.body)} characters long; I can read at"
                    f" most {channel.max_body_chars}. Please send a shorter message.")
            else:
                readable.append(message)
        if not readable:
            return Answer(None, before=tuple(replies))
        refusal, room = await self._admit(job, channel, len(readable))
        if refusal is not None:
            return Answer(None, before=(*replies, *refusal))
        read = await channel.reader.read(readable, await self._reading_model(job, readable))
        if self.gate is not None:
            await self.gate.spend(job.sender, channel.limits, read.tokens_spent)
        replies += read.replies
        if read.message is None:
            return Answer(None, before=tuple(replies or [MEDIA_REPLY]))
        room = room.spent(read.tokens_spent) if room is not None else None
        answer = await self._answer_message(job, channel, read.message, room)
        return replace(answer, before=(*replies, *answer.before))

    async def _reading_model(self, job: InboundJob, messages: list[Received]) -> str:
        """The model a burst's photos are checked against: that of the chat they go on (a
        chat keeps the model it was started with), else the one a new chat gets."""
        default = self.chats.rules.model.model
        if not any(media_kind(kind) == IMAGE for m in messages for _, kind in m.media):
            return default
        chat_id = await self.store.active_chat(job.channel, job.sender)
        if chat_id is None:
            return default
        try:  # the whole chat, read for its model: photos are rare, and cost far more
            chat = await self.chats.chat(job.sender, chat_id)
        except errors.ChatNotFound:
            return default
        # An ended chat is not continued: the answer starts a new one.
        return chat.model if chat.status == "active" and chat.model else default

    async def _reset(self, job: InboundJob) -> str:
        current = await self.store.active_chat(job.channel, job.sender)
        if current is not None:
            try:
                await self.chats.end(job.sender, current)
            except errors.ChatNotFound:
                pass  # already gone: forgetting it is all that is left to do
        return RESET_REPLY

    async def _admit(
        self, job: InboundJob, channel: Channel, messages: int
    ) -> tuple[list[str] | None, TokenRoom | None]:
        """(None, the room left under the daily quota) when the messages may go on; else
        (what to send: one notice per window, None)."""
        if self.gate is None:
            return None, None
        try:
            room = await self.gate.admit(job.sender, channel.limits, job.channel, messages)
        except errors.LimitExceeded as refused:
            return await self._refusal(job, refused), None
        return None, room

    async def _refusal(self, job: InboundJob, refused: errors.LimitExceeded) -> list[str]:
        if self.gate is not None and await self.gate.notice_due(job.sender, refused):
            return [QUOTA_REPLY if refused.limit == DAILY_TOKENS else RATE_REPLY]
        return []  # told already in this window: answered by silence

    async def _answer_message(
        self, job: InboundJob, channel: Channel, message: UserInput, room: TokenRoom | None
    ) -> Answer:
        chat_id = await self.store.active_chat(job.channel, job.sender)
        try:
            return await self._turn(job, channel, chat_id, message, room)
        except (errors.ChatNotFound, errors.ChatEnded):
            if chat_id is None:
                raise
            # The remembered chat was ended elsewhere (another door): start a new one.
            return await self._turn(job, channel, None, message, room)

    async def _turn(
        self, job: InboundJob, channel: Channel, chat_id: str | None, message: UserInput,
        room: TokenRoom | None,
    ) -> Answer:
        # Admitted above, under the channel's limits: the turn only records what it spends.
        turn = self.chats.turn(job.sender, chat_id, message.text, job.channel, media=message,
                               limits=channel.limits, room=room)
        busy_retry = self.settings.busy_retry_seconds
        try:
            async with turn:
                async for _ in turn:
                    pass
            return Answer(turn.result.content, turn.chat_id, True, turn.answer_seq)
        except errors.ChatBusy:
            raise Retry("chat busy", busy_retry, failure=False) from None
        except errors.LimitExceeded as refused:  # the quota left cannot cover the prompt
            return Answer(None, before=tuple(await self._refusal(job, refused)))
        except errors.Unavailable as exc:
            raise Retry(str(exc), busy_retry, failure=True) from None
        except (errors.ChatNotFound, errors.ChatEnded):
            raise
        except errors.UpstreamError as exc:
            log.warning("%s turn failed upstream: %s", job.channel, type(exc).__name__)
            # The turn was stored (marked failed) in its chat: keep that chat going.
            return Answer(UPSTREAM_REPLY, turn.chat_id or None, bool(turn.chat_id),
                          turn.answer_seq)
        except errors.NotConfigured as exc:
            log.warning("%s turn not possible: %s", job.channel, exc)
            return Answer(UPSTREAM_REPLY)
        except errors.InvalidInput as exc:
            return Answer(f"Sorry, I cannot take that message: {exc}")

    async def _send(self, job: InboundJob, channel: Channel) -> None:
        parts = job.parts or []
        pacer = self._pacers[channel.name]
        for index in range(job.parts_sent, len(parts)):
            await pacer.wait(job.recipient)
            try:
                sid = await channel.sender.send(job.recipient, job.sender, parts[index])
            except SendFailed as exc:
                if not exc.retryable:
                    raise
                delay = self.settings.backoff(job.failures + 1)
                raise Retry(str(exc), delay, failure=True) from None
            await self.store.part_sent(job, index, sid)
            job.parts_sent = index + 1
        await self.store.finish(job)
