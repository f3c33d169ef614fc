"""Rolling summaries and titles, made in the background after a turn has been answered.

Nothing here is on the path to a first token: a turn hands its stored result to
`ContextKeeper.after_turn`, which starts a task the service owns and returns at once. The
summary is used from the next turn on; until it exists a turn goes out truncated. A summary
call that fails, times out or returns nothing is logged (never with message text), counted,
and tried again at the next eviction; it never fails a turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from chatms.config import ContextSettings
from chatms.domain.budget import REPLY_PRIMING, message_tokens
from chatms.domain.context import (
    SUMMARY_HEADING,
    Summary,
    clean_title,
    plan_summary,
    summary_prompt,
    title_prompt,
)
from chatms.domain.errors import ChatError
from chatms.domain.model import Chat, PendingTurn, Usage
from chatms.service.ports import ContextStore, Lease, TokenCounter, WholeCompletionClient
from chatms.service.reports import ContextObserver, ContextReport

log = logging.getLogger("chatms.context")

# Room kept in a summary call's window for its instructions and message framing.
INSTRUCTION_ALLOWANCE = 200
# Most evicted messages one summary call reads; the rest wait for the next one.
MAX_FOLD_ITEMS = 200
TITLE_MAX_TOKENS = 24


CounterFor = Callable[[str], TokenCounter]
WindowFor = Callable[[str], int]


# Told the tokens a summary or title cost, for the chat owner's daily quota.
Spend = Callable[[int], Awaitable[None]]


class ContextKeeper:
    """Owns the background summary and title tasks; shutdown waits for them or cancels them."""

    def __init__(
        self,
        store: ContextStore,
        llm: WholeCompletionClient,
        counter_for: CounterFor,
        window_for: WindowFor,
        policy: ContextSettings,
        observers: tuple[ContextObserver, ...] = (),
    ) -> None:
        self.store = store
        self.llm = llm
        self.counter_for = counter_for
        self.window_for = window_for
        self.policy = policy
        self.observers = observers
        self._tasks: set[asyncio.Task[None]] = set()
        self._summarising: set[str] = set()  # chats this process is summarising now
        self._closing = False

    @property
    def summarizing(self) -> bool:
        return self.policy.strategy == "summarize"

    def after_turn(
        self, chat: Chat, turn: PendingTurn, new_chat: bool, prompt_limit: int,
        spend: Spend | None = None,
    ) -> None:
        """Called once a turn is stored: start what it calls for, never wait for it.

        `spend` is told the tokens each job cost (the chat owner's daily quota)."""
        if self._closing:
            return  # shutting down: the next eviction after a restart catches up
        answer = turn.assistant
        if self.policy.titles and new_chat and answer is not None and answer.content:
            self._start(self._title(chat.id, chat.config.model, turn.user.content,
                                    answer.content), spend)
        wanted = bool(turn.erased_seqs) or turn.summary_left_out
        if self.summarizing and wanted and chat.id not in self._summarising:
            target = max(16, min(self.policy.summary_max_tokens, prompt_limit // 4))
            self._summarising.add(chat.id)  # now, so a turn right behind does not start another
            self._start(self._summary(chat.id, chat.config.model, target,
                                      shorter=turn.summary_left_out), spend)

    def _start(self, job: Coroutine[Any, Any, Usage], spend: Spend | None) -> None:
        task = asyncio.ensure_future(self._charged(job, spend))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace: float) -> None:
        """Let running jobs finish within `grace` seconds, then cancel the rest."""
        self._closing = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.info("cancelled %d summary or title jobs at shutdown", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    @staticmethod
    async def _charged(job: Coroutine[Any, Any, Usage], spend: Spend | None) -> None:
        """Run a job, then tell `spend` what it cost upstream (never failing the job)."""
        usage = await job
        tokens = usage.prompt_tokens + usage.completion_tokens
        if spend is None or tokens <= 0:
            return
        try:
            await spend(tokens)
        except ChatError as exc:
            log.warning("tokens of a summary or title not counted: %s", type(exc).__name__)

    async def _summary(self, chat_id: str, chat_model: str, target: int, shorter: bool
                       ) -> Usage:
        started = time.perf_counter()
        model = self.policy.summary_model or chat_model
        claim = Lease(str(uuid.uuid4()), self.policy.summary_timeout + 10)
        usage = Usage()
        try:
            if not await self.store.claim_summary(chat_id, claim):
                self._report("summary", chat_id, "busy", usage, started)
                return usage
            try:
                outcome, usage = await self._fold(chat_id, model, chat_model, target, shorter,
                                                  claim)
            finally:
                await asyncio.shield(self.store.release_summary(chat_id, claim))
            self._report("summary", chat_id, outcome, usage, started)
        except Exception as exc:  # a background job: logged and counted, never a turn's failure
            self._failed("summary", chat_id, exc, usage, started)
        finally:
            self._summarising.discard(chat_id)
        return usage

    async def _fold(
        self, chat_id: str, model: str, chat_model: str, target: int, shorter: bool,
        claim: Lease,
    ) -> tuple[str, Usage]:
        """One summary call and its conditional store; returns (outcome, usage)."""
        previous, evicted = await self.store.summary_input(chat_id, MAX_FOLD_ITEMS)
        room = self.window_for(model) - target - REPLY_PRIMING - INSTRUCTION_ALLOWANCE
        plan = plan_summary(previous, evicted, max(room, 64), target, shorter)
        if plan is None:
            return "stale", Usage()  # another replica folded everything already
        async with asyncio.timeout(self.policy.summary_timeout):
            answer = await self.llm.complete_whole(model, summary_prompt(plan), plan.max_tokens)
        usage = answer.usage or Usage()
        text = answer.text.strip()
        if not text:
            return "empty", usage
        counter = self.counter_for(chat_model)  # the summary is sent in the chat's prompts
        tokens = message_tokens(await asyncio.to_thread(counter.count, SUMMARY_HEADING + text))
        summary = Summary(text, plan.through_seq, tokens, plan.next_version, model)
        if not await self.store.store_summary(chat_id, claim, summary, usage):
            return "stale", usage
        return "ok", usage

    async def _title(self, chat_id: str, model: str, question: str, answer: str) -> Usage:
        started = time.perf_counter()
        usage = Usage()
        try:
            async with asyncio.timeout(self.policy.summary_timeout):
                reply = await self.llm.complete_whole(
                    model, title_prompt(question, answer), TITLE_MAX_TOKENS)
            usage = reply.usage or Usage()
            title = clean_title(reply.text)
            if title is None:
                self._report("title", chat_id, "empty", usage, started)
                return usage
            stored = await self.store.store_title(chat_id, title)
            self._report("title", chat_id, "ok" if stored else "stale", usage, started)
        except Exception as exc:  # a background job: logged and counted, never a turn's failure
            self._failed("title", chat_id, exc, usage, started)
        return usage

    def _failed(
        self, kind: str, chat_id: str, exc: Exception, usage: Usage, started: float
    ) -> None:
        # The class only: a driver's message may quote the text it was given.
        outcome = "timeout" if isinstance(exc, TimeoutError) else "error"
        if not isinstance(exc, ChatError | TimeoutError):  # expected ones: the report's line
            log.error("%s job of chat %s crashed: %s", kind, chat_id, type(exc).__name__)
        self._report(kind, chat_id, outcome, usage, started, type(exc).__name__)

    def _report(
        self, kind: str, chat_id: str, outcome: str, usage: Usage, started: float,
        error: str | None = None,
    ) -> None:
        report = ContextReport(kind, chat_id, outcome, usage, time.perf_counter() - started,
                               error)
        for observe in self.observers:
            try:
                observe(report)
            except Exception:
                log.exception("context observer %r failed", observe)
