"""One turn of a chat, the one implementation every door runs.

A door uses a turn like this (see `ChatService.turn`):

    async with chats.turn(user_id, chat_id, text, "grpc") as turn:   # errors come here
        async for delta in turn:                                     # the answer's text
            send(turn.chat_id, delta)
    show(turn.result)   # stored by now: content, completion, finish_reason, usage

The turn is put together from small pieces, each usable alone: `ChatRules` (input and
budget), `LeaseKeeper` (the chat's lease), `AnswerStream` (the deltas), `TurnStore` (the
wind-down that stores), `TurnGate` / `Background` (what shutdown waits for) and `TurnResult`
(ending.py: how it ended).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

from chatms.config import TurnSettings
from chatms.domain.errors import ChatError, InvalidInput, LimitExceeded
from chatms.domain.limits import TokenRoom, UserLimits
from chatms.domain.media import UserInput
from chatms.domain.model import Chat, Completion, PendingTurn, Usage
from chatms.service.answer import AnswerStream
from chatms.service.answer_writer import AnswerFlusher, AnswerWriter
from chatms.service.context import ContextKeeper
from chatms.service.ending import TurnResult, completion_for
from chatms.service.lease import LeaseKeeper
from chatms.service.lifecycle import Background, TurnGate
from chatms.service.limits import UsageGate
from chatms.service.live import LiveAnswer, LiveAnswers
from chatms.service.ports import ChatRepository, CompletionClient
from chatms.service.reports import REQUEST_ID, TurnObserver, TurnReport, tell_observers
from chatms.service.rules import ChatRules
from chatms.service.storing import TurnStore

log = logging.getLogger("chatms.turns")


@dataclass(frozen=True, slots=True)
class TurnKit:
    """Everything a turn works with: built once by `ChatService`, shared by its turns."""

    repo: ChatRepository
    llm: CompletionClient
    rules: ChatRules
    limits: TurnSettings
    gate: TurnGate
    background: Background
    live: LiveAnswers
    flusher: AnswerFlusher  # writes running answers as they grow
    observers: tuple[TurnObserver, ...] = ()
    context: ContextKeeper | None = None  # summaries and titles, after the answer
    usage: UsageGate | None = None  # per-user limits; None: no database to count in


class Turn:
    """One exchange: the user's message in, the model's answer streamed out, both stored.

    Entering leases the chat (or starts a new one) and checks the budget, so errors come
    before the first delta. Leaving stores the user message and the answer, whole or
    partial, with the reason it ended, in one transaction, even when the caller was
    cancelled; a storing failure is raised from `async with` only when the answer was whole.
    """

    def __init__(
        self,
        kit: TurnKit,
        user_id: str,
        chat_id: str | None,
        text: str,
        transport: str,
        model: str | None = None,
        media: UserInput | None = None,
        limits: UserLimits | None = None,
        room: TokenRoom | None = None,
    ) -> None:
        self.kit = kit
        self.model = model  # a new chat's model, when the request names one
        self.media = media
        self.admitted = limits is not None  # by the caller, under `limits`
        self.user_limits = limits if limits is not None else kit.limits.door_limits
        self.room = room  # left under the daily quota, when the caller admitted the turn
        self.user_id = user_id
        self.chat_id = ""  # known once entered
        self.text = text
        self.requested_chat_id = chat_id
        self.new_chat = chat_id is None
        self.report = TurnReport(transport, "", user_id, chat_id is None, "error")
        self.report.request_id = REQUEST_ID.get() or uuid.uuid4().hex
        self.lease = LeaseKeeper(kit.repo, kit.background, kit.limits.lease_seconds)
        self._store: TurnStore | None = None
        self._answer: AnswerStream | None = None
        self._result: TurnResult | None = None
        # The answer as others see it (resumers here, the stop route), from entry on.
        self.live: LiveAnswer | None = None
        self._stop_asked = False

    async def __aenter__(self) -> Turn:
        kit = self.kit
        self.report.started = time.perf_counter()
        self._deadline = time.monotonic() + kit.limits.turn_timeout
        kit.gate.check_open()
        chat_id = kit.rules.validate(self.user_id, self.requested_chat_id, self.text, self.model)
        if kit.usage is not None and not self.admitted:
            self.room = await kit.usage.admit(self.user_id, self.user_limits,
                                              self.report.transport)
        try:
            chat, pending = await self._open(chat_id)
        except LimitExceeded as refused:  # the quota left cannot cover even the prompt
            if kit.usage is not None:
                kit.usage.refused(refused, self.report.transport)
            raise
        self.live = LiveAnswer(chat.id, self.user_id, self._request_stop)
        writer = AnswerWriter(kit.repo, kit.flusher, kit.rules.counter_for(chat.config.model),
                              chat, pending, self.lease.lease, self.live)
        self._store = TurnStore(
            kit.repo, kit.background, chat, pending, self.lease.lease, self.new_chat,
            kit.limits.store_retry_seconds, writer,
        )
        if not self.new_chat:
            # The question is stored beside the upstream call, never before the first delta.
            writer.start(create=False)
        self.chat_id = self.report.chat_id = chat.id
        kit.live.add(self.live)
        self.lease.keep(chat.id)
        kit.gate.started(self.report.transport)
        return self

    def _request_stop(self) -> None:
        """The stop route: end the answer where it is; it is stored as `stopped`."""
        self._stop_asked = True
        if self._answer is not None:
            self._answer.stop()

    async def _open(self, chat_id: str | None) -> tuple[Chat, PendingTurn]:
        """The chat (leased, or new and not yet stored) with the user's message added,
        counted in the encoding of the chat's model."""
        rules, media = self.kit.rules, self.media
        # Images count against this turn's budget only: later turns see the text alone.
        extra = sum(image.tokens for image in media.images) if media else 0
        attachments = media.attachments if media else ()
        if chat_id is None:
            # A new chat's row is inserted once the first delta is on its way, never before.
            chat = rules.new_chat(self.user_id, self.model)
            tokens = await rules.count(self.text, chat.config.model)
            pending = chat.add_user_message(
                self.text, tokens, rules.budget_for(chat), extra, attachments)
            self.config = rules.within_quota(chat, self.room, extra)
            return chat, pending
        chat = await self.lease.acquire(chat_id, self.user_id)
        try:
            if self.model and self.model != chat.config.model:
                raise InvalidInput(
                    f"this chat keeps the model it was started with ({chat.config.model})"
                )
            if self.kit.context is None or not self.kit.context.summarizing:
                chat.summary = None  # CONTEXT_STRATEGY=truncate: what left is forgotten
            tokens = await rules.count(self.text, chat.config.model)
            pending = chat.add_user_message(
                self.text, tokens, rules.budget_for(chat), extra, attachments)
            self.config = rules.within_quota(chat, self.room, extra)
            return chat, pending
        except BaseException:
            await self.lease.release(chat.id)
            raise

    def __aiter__(self) -> AsyncGenerator[str, None]:
        """The answer's text deltas (one stream per turn; the upstream is asked at first use)."""
        store = self._store
        assert store is not None, "iterate a turn inside `async with`"
        if self._answer is None:
            chat, media = store.chat, self.media
            prompt = list(chat.prompt())
            images = media.images if media is not None else ()
            if media is not None and images:
                # This turn asks in words beside its images; later turns see the stored text.
                prompt[-1] = (prompt[-1][0], media.question)
            events = self.kit.llm.complete(self.config, prompt, self._deadline, images)
            # A new chat's row is written beside the rest of the answer, so that no database
            # work ever stands between the upstream and the first delta.
            self._answer = AnswerStream(
                events, store.create_soon if self.new_chat else None,
                self.kit.rules.answer_limit(chat), self.live,
            )
            if self._stop_asked:
                self._answer.stop()
        return aiter(self._answer)

    @property
    def content(self) -> str:
        """The answer so far."""
        return self.live.text() if self.live is not None else ""

    @property
    def answer_seq(self) -> int | None:
        """Where the answer sits in its chat, once the turn has ended and stored it."""
        store = self._store
        reply = store.pending.assistant if store is not None else None
        return reply.seq if reply is not None else None

    @property
    def result(self) -> TurnResult:
        """How the turn ended; there once `async with` is left."""
        assert self._result is not None, "a turn's result is there once it has ended"
        return self._result

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        kit = self.kit
        self.lease.stop()
        stopped = self._answer is not None and self._answer.stopped
        completion = completion_for(exc, kit.gate.accepting, stopped)
        if completion is Completion.COMPLETE and self._answer is not None and self._answer.cut:
            completion = Completion.TOO_LONG
        # A new chat whose client never learned its id is not stored: it would only leave
        # an orphan chat behind for every retry.
        store = not (self.new_chat and exc is not None and not self.content)
        failure = exc
        try:
            # Closing the upstream and storing must finish even if our caller is cancelled
            # again meanwhile (grpclib cancels on the deadline and again on a stream reset).
            task = kit.background.spawn(self._wind_down(completion, store))
            try:
                await asyncio.shield(task)
            except ChatError as stored_not:
                if exc is None:
                    failure = stored_not
                    raise
        finally:
            kit.gate.ended(self.report.transport)
            if self.live is not None:
                kit.live.remove(self.live)
                self.live.finish(completion)
            self._finish_report(completion, failure)

    async def _wind_down(self, completion: Completion, store: bool) -> None:
        answer, turn_store = self._answer, self._store
        assert turn_store is not None
        try:
            if answer is not None:
                await answer.aclose()
        finally:
            await turn_store.writer.close()  # no flush may land after the commit
        content = self.content
        reported = answer.usage if answer is not None else None
        answer_tokens = await self.kit.rules.answer_tokens(
            turn_store.chat, content,
            reported if completion is Completion.COMPLETE else None,
        )
        finish_reason = answer.finish_reason if answer is not None else None
        usage = reported or Usage(0, answer_tokens)
        self._result = TurnResult(self.chat_id, content, completion, finish_reason, usage)
        try:
            if store:
                turn_store.chat.add_assistant_message(
                    turn_store.pending, content, answer_tokens, completion, finish_reason, usage
                )
                await turn_store.store()
                if self.kit.context is not None:  # started, never awaited: off the answer's path
                    chat = turn_store.chat
                    self.kit.context.after_turn(
                        chat, turn_store.pending, self.new_chat,
                        self.kit.rules.budget_for(chat).prompt_limit, self._spender())
        finally:
            await self._spend(reported)

    async def _spend(self, reported: Usage | None) -> None:
        """Count what the turn cost (stored by now: a failure to count is only logged)."""
        if self.kit.usage is None:
            return
        try:
            await self.kit.usage.spend_reported(self.user_id, self.user_limits, reported)
        except ChatError as exc:
            log.warning("tokens of a turn of chat %s not counted: %s", self.chat_id, exc)

    def _spender(self) -> Callable[[int], Awaitable[None]] | None:
        usage = self.kit.usage
        return usage.spender(self.user_id, self.user_limits) if usage is not None else None

    def _finish_report(self, completion: Completion, exc: BaseException | None) -> None:
        report, answer = self.report, self._answer
        if answer is not None:
            report.finish_reason = answer.finish_reason
            report.usage = answer.usage or Usage()
            report.first_token_at = answer.first_delta_at
            report.deltas = answer.deltas
        report.end(completion, exc)
        tell_observers(report, self.kit.observers)
