"""What a finished turn, summary or title tells its observers (metrics, logs), and the
request id a turn carries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field

from chatms.domain.errors import ChatError
from chatms.domain.model import Completion, Usage

log = logging.getLogger("chatms.turns")

# Set by a door from the caller's `x-request-id` (or left unset for a fresh one), so each
# door tags its turns without passing the id through every call.
REQUEST_ID: ContextVar[str | None] = ContextVar("chatms_request_id", default=None)


@dataclass(slots=True)
class TurnReport:
    """One finished turn, for observers: timings, outcome and usage; no message bodies."""

    transport: str
    chat_id: str
    user_id: str
    new_chat: bool
    outcome: str
    error: str | None = None
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)  # as the upstream reported it
    started: float = 0.0  # time.perf_counter()
    first_token_at: float | None = None
    finished: float = 0.0
    deltas: int = 0
    request_id: str = ""

    def end(self, completion: Completion, exc: BaseException | None) -> None:
        """The turn ended now, as `completion`; `exc`: what was raised from it, if anything
        (a whole answer that was not stored is `store_failed`)."""
        self.finished = time.perf_counter()
        if exc is None:
            self.outcome = "ok" if completion is Completion.COMPLETE else completion.value
        else:
            whole = completion in (Completion.COMPLETE, Completion.TOO_LONG)
            self.outcome = "store_failed" if whole else completion.value
        if isinstance(exc, ChatError):
            self.error = type(exc).__name__


# Called once per turn when it ends; an observer that raises is logged and skipped.
TurnObserver = Callable[[TurnReport], None]


def tell_observers(report: TurnReport, observers: Iterable[TurnObserver]) -> None:
    for observe in observers:
        try:
            observe(report)
        except Exception:
            log.exception("turn observer %r failed", observe)


@dataclass(frozen=True, slots=True)
class ContextReport:
    """One summary or title attempt, for observers: no text of the chat."""

    kind: str  # "summary" or "title"
    chat_id: str
    outcome: str  # ok, error, timeout, empty, busy (claimed elsewhere), stale (overtaken)
    usage: Usage
    seconds: float
    error: str | None = None


ContextObserver = Callable[[ContextReport], None]
