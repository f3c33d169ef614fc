"""Text channels (WhatsApp, and any other): accept an inbound message as durable work, answer
it through the same `ChatService.turn` as every other door, and send the answer in parts
through the channel's `MessageSender`.

Exactly once: the channel's message id is the work row's key, inserted in the transaction
that accepts it, so a redelivery adds nothing. The answer is stored (split) before the first
part goes out, and each sent part is recorded, so a restart resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from chatms.config import InboundSettings
from chatms.domain import errors
from chatms.domain.texting import is_reset, split_message
from chatms.service.chats import ChatService
from chatms.service.ports import (
    Answer,
    InboundJob,
    InboundMessage,
    InboundStore,
    MessageSender,
    SendFailed,
)

log = logging.getLogger("chatms.inbound")

RESET_REPLY = "Done: that conversation is closed. Your next message starts a new one."
MEDIA_REPLY = (
    "Sorry, I can only read text messages. Please send your question as text."
)
UPSTREAM_REPLY = "Sorry, I could not get an answer right now. Please try again in a moment."
EMPTY_REPLY = "Sorry, I have no answer to that. Could you rephrase it?"


@dataclass(frozen=True, slots=True)
class Channel:
    """A text channel the queue answers through: its name, its way out and its limits."""

    name: str  # as stored with each message, and the transport of its turns
    sender: MessageSender
    max_body_chars: int  # longer inbound messages get a polite refusal
    send_rate: float  # most messages per second from one of our addresses


class Retry(Exception):
    """Give the job back and try it again after `delay` seconds."""

    def __init__(self, reason: str, delay: float, failure: bool) -> None:
        super().__init__(reason)
        self.delay = delay
        self.failure = failure


class Pacer:
    """Spaces the sends of each of our addresses to at most `per_second`."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next: dict[str, float] = {}

    async def wait(self, key: str) -> None:
        now = asyncio.get_running_loop().time()
        at = max(now, self._next.get(key, now))
        self._next[key] = at + self.interval  # reserved before sleeping: callers queue up
        if at > now:
            await asyncio.sleep(at - now)


class InboundService:
    def __init__(
        self,
        store: InboundStore,
        chats: ChatService,
        channels: Sequence[Channel],
        settings: InboundSettings,
    ) -> None:
        self.store = store
        self.chats = chats
        self.channels = {channel.name: channel for channel in channels}
        self.settings = settings
        self._pacers = {channel.name: Pacer(channel.send_rate) for channel in channels}
        self.arrived = asyncio.Event()  # set on each new message; the worker waits on it

    async def accept(self, message: InboundMessage) -> bool:
        """Store the message as work (once per message id); True when it was new."""
        new = await self.store.accept(message)
        if new:
            self.arrived.set()
        return new

    async def process(self, job: InboundJob) -> None:
        """Answer a claimed job (unless already answered) and send what is not yet sent."""
        channel = self.channels[job.channel]
        if job.parts is None:
            answer = await self._answer(job, channel)
            # Providers refuse an empty body, and silence would look like a lost message.
            parts = split_message(answer.text, channel.sender.part_limit) or [EMPTY_REPLY]
            await self.store.save_answer(job, parts, answer)
            job.parts = parts
        await self._send(job, channel)

    async def _answer(self, job: InboundJob, channel: Channel) -> Answer:
        body = job.body
        if is_reset(body):
            current = await self.store.active_chat(job.channel, job.sender)
            if current is not None:
                try:
                    await self.chats.end(job.sender, current)
                except errors.ChatNotFound:
                    pass  # already gone: forgetting it is all that is left to do
            return Answer(RESET_REPLY, None, True)
        if not body.strip():
            return Answer(MEDIA_REPLY)
        if len(body) > channel.max_body_chars:
            return Answer(
                f"Sorry, your message is {len(body)} characters long; I can read at most "
                f"{channel.max_body_chars}. Please send a shorter message."
            )
        chat_id = await self.store.active_chat(job.channel, job.sender)
        try:
            return await self._turn(job, chat_id)
        except (errors.ChatNotFound, errors.ChatEnded):
            if chat_id is None:
                raise
            # The remembered chat was ended elsewhere (another door): start a new one.
            return await self._turn(job, None)

    async def _turn(self, job: InboundJob, chat_id: str | None) -> Answer:
        turn = self.chats.turn(job.sender, chat_id, job.body, job.channel)
        busy_retry = self.settings.busy_retry_seconds
        try:
            async with turn:
                async for _ in turn:
                    pass
            return Answer(turn.result.content, turn.chat_id, True, turn.answer_seq)
        except errors.ChatBusy:
            raise Retry("chat busy", busy_retry, failure=False) from None
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
