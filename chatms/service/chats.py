"""The use cases: a turn of a chat, history, and ending a chat.

Every door (gRPC, HTTP, WhatsApp) runs its turns through `ChatService.turn`, so the rules
about ownership, budgets, partial answers and persistence live here once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from chatms.config import ContextSettings, ModelSettings, TurnSettings
from chatms.domain.errors import ChatError, InvalidInput, Unavailable
from chatms.domain.limits import TokenRoom, UserLimits
from chatms.domain.media import UserInput
from chatms.service.answer_writer import AnswerFlusher
from chatms.service.context import ContextKeeper
from chatms.service.detached import DetachedTurns
from chatms.service.ending import TurnResult
from chatms.service.lifecycle import Background, TurnGate
from chatms.service.limits import UsageGate
from chatms.service.live import LiveAnswers, StopOutcome
from chatms.service.ports import (
    ChatDetail,
    ChatPage,
    ChatRepository,
    CompletionClient,
    ContextStore,
    StoredMessage,
    TokenCounter,
    TurnSignals,
    WholeCompletionClient,
)
from chatms.service.reports import REQUEST_ID, ContextObserver, TurnObserver, TurnReport
from chatms.service.resume import AnswerStreams, Resumed
from chatms.service.rules import ChatRules, parse_chat_id
from chatms.service.turn import Turn, TurnKit

log = logging.getLogger("chatms.turns")


class ChatService:
    """What every door calls. The shape doors rely on:

    - `turn(user_id, chat_id, text, transport)`: a `Turn` (see chatms.service.turn);
    - `validate(user_id, chat_id, text)`: a turn's input checks, for doors that refuse early;
    - `chat`, `history`, `chats`, `end`: reading and ending the caller's own chats;
    - `resume`, `stop`: the latest answer from a position, and stopping it, on any replica;
    - `detached`: the bounds on turns that go on without their client;
    - shutdown: `accepting`, `in_flight`, `streaming`, `stop_accepting`, `wait_idle`, `drain`.
    """

    def __init__(
        self,
        repo: ChatRepository,
        llm: CompletionClient,
        counter: TokenCounter,
        model: ModelSettings,
        limits: TurnSettings,
        observers: tuple[TurnObserver, ...] = (),
        *,
        counters: Callable[[str], TokenCounter] | None = None,
        context: ContextSettings | None = None,
        context_store: ContextStore | None = None,
        context_llm: WholeCompletionClient | None = None,
        context_observers: tuple[ContextObserver, ...] = (),
        usage: UsageGate | None = None,
        signals: TurnSignals | None = None,
    ) -> None:
        self.repo = repo
        self.limits = limits
        self.rules = ChatRules(model, limits, counter, counters)
        self.gate = TurnGate()
        self.background = Background()
        self.live = LiveAnswers()
        # Summaries and titles need somewhere to keep them and a non-streamed upstream call.
        self.context = None
        if context is not None and context_store is not None and context_llm is not None:
            self.context = ContextKeeper(
                context_store, context_llm, self.rules.counter_for, self.rules.window_for,
                context, context_observers,
            )
        flusher = AnswerFlusher(repo, self.background, limits.stream_flush_ms / 1000)
        self.kit = TurnKit(repo, llm, self.rules, limits, self.gate, self.background, self.live,
                           flusher, observers, self.context, usage)
        # A resumer on another replica reads the database again this often without a signal.
        self.streams = AnswerStreams(repo, self.live, signals,
                                     poll_seconds=max(limits.lease_seconds / 5, 0.2))
        if signals is not None:
            signals.on_stop(self.live.stop)
        self.detached = DetachedTurns(limits.detached_per_user, limits.detached_per_process)

    def turn(
        self,
        user_id: str,
        chat_id: str | None,
        text: str,
        transport: str,
        model: str | None = None,
        *,
        media: UserInput | None = None,
        limits: UserLimits | None = None,
        room: TokenRoom | None = None,
    ) -> Turn:
        """A turn of a chat (a new one when `chat_id` is None, with `model` if it names one):
        `async with` it, then iterate its text deltas; `transport` names the door in metrics
        and logs.

        `media` is what came with the message (a voice note's marker, photos). `limits`: the
        caller already admitted the message under these per-user limits, and the turn only
        records what it spends; without, the turn admits it under the doors' own limits.
        `room`: what the caller's admission left under the daily quota.
        """
        return Turn(self.kit, user_id, chat_id, text, transport, model, media, limits, room)

    def validate(
        self, user_id: str, chat_id: str | None, text: str, model: str | None = None
    ) -> str | None:
        """Check a turn's input before any I/O; returns the canonical chat id."""
        return self.rules.validate(user_id, chat_id, text, model)

    async def history(self, user_id: str, chat_id: str) -> list[StoredMessage]:
        return (await self.chat(user_id, chat_id)).messages

    async def chat(self, user_id: str, chat_id: str) -> ChatDetail:
        """One of the user's chats with its status and every stored message."""
        self.rules.check_user(user_id)
        return await self.repo.chat(parse_chat_id(chat_id), user_id)

    async def chats(self, user_id: str, limit: int = 20, cursor: str | None = None) -> ChatPage:
        self.rules.check_user(user_id)
        if not 1 <= limit <= 100:
            raise InvalidInput("limit must be between 1 and 100")
        return await self.repo.list_chats(user_id, limit, cursor)

    async def end(self, user_id: str, chat_id: str) -> None:
        """End a chat; a turn running on it is stopped first (its partial answer is kept,
        as `stopped`); ChatBusy if it could not be stopped in time."""
        self.rules.check_user(user_id)
        chat_id = parse_chat_id(chat_id)
        try:
            await self.streams.stop(user_id, chat_id)
        except Unavailable:
            pass  # the turn did not stop in time: ending says "busy" below
        await self.repo.end(chat_id, user_id)

    async def resume(self, user_id: str, chat_id: str, after: int) -> Resumed:
        """The chat's latest answer past position `after`, live while its turn runs."""
        self.rules.check_user(user_id)
        return await self.streams.resume(user_id, parse_chat_id(chat_id), after)

    async def stop(self, user_id: str, chat_id: str) -> StopOutcome:
        """Stop the chat's running turn, on whichever replica runs it (a no-op if none)."""
        self.rules.check_user(user_id)
        return await self.streams.stop(user_id, parse_chat_id(chat_id))

    async def sweep_interrupted(self) -> None:
        """Now and then, mark the answers of dead processes interrupted.

        Only once their lease lapsed longer ago than a stored answer is retried, so a live
        process's background store (after a database outage) can still land first; a new
        turn or a resumer on the chat marks it at once.
        """
        while True:
            try:
                swept = await self.repo.interrupt_lapsed(None, self.limits.store_retry_seconds)
                if swept:
                    log.info("marked %d answers of stopped processes interrupted", swept)
            except ChatError as exc:
                log.warning("could not sweep interrupted answers: %s", exc)
            await asyncio.sleep(self.limits.lease_seconds)

    @property
    def accepting(self) -> bool:
        return self.gate.accepting

    @property
    def in_flight(self) -> int:
        return self.gate.in_flight

    @property
    def streaming(self) -> Counter[str]:
        """Turns in flight per transport (read by the metrics at scrape time)."""
        return self.gate.streaming

    def stop_accepting(self) -> None:
        """Refuse new turns from now on; turns in flight go on."""
        self.gate.stop_accepting()

    async def wait_idle(self, grace: float) -> bool:
        """Wait up to `grace` seconds for the turns in flight; True when none is left."""
        return await self.gate.wait_idle(grace)

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for finished turns to store their results, and for
        summaries and titles in progress; cancel what is left then."""
        if self.context is None:
            await self.background.drain(grace)
            return
        # One grace for both: shutdown waits no longer than it says.
        await asyncio.gather(self.background.drain(grace), self.context.close(grace))


__all__ = [
    "REQUEST_ID", "ChatService", "Turn", "TurnObserver", "TurnReport", "TurnResult",
    "parse_chat_id",
]
