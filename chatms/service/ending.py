"""How a turn ended, as the doors show it, and the reason read from what ended it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from chatms.domain.errors import UpstreamTimeout
from chatms.domain.model import Completion, Usage


@dataclass(frozen=True, slots=True)
class TurnResult:
    """How a turn ended, as the doors show it."""

    chat_id: str
    content: str
    completion: Completion
    finish_reason: str | None
    usage: Usage  # the upstream's count; else (0, the answer's tokens counted here)


def completion_for(
    exc: BaseException | None, accepting: bool, stopped: bool = False
) -> Completion:
    """Why an answer ended, from the exception that ended it (None: it is whole, or it was
    `stopped` by the stop route)."""
    if exc is None:
        return Completion.STOPPED if stopped else Completion.COMPLETE
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return Completion.CANCELLED if accepting else Completion.SHUTDOWN
    if isinstance(exc, UpstreamTimeout | TimeoutError):
        return Completion.TIMEOUT
    return Completion.UPSTREAM_ERROR
