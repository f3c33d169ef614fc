"""Turns that run on without their client: bounded, and driven by a task of their own."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

from chatms.domain.errors import ChatError

if TYPE_CHECKING:
    from chatms.service.turn import Turn


class DetachedTurns:
    """How many turns run on without their client, per user and in all, within bounds."""

    def __init__(self, per_user: int, per_process: int) -> None:
        self.per_user = per_user
        self.per_process = per_process
        self.by_user: Counter[str] = Counter()

    def detach(self, user_id: str) -> bool:
        """Count one more detached turn of the user if the bounds allow; else False."""
        if (self.by_user[user_id] >= self.per_user
                or self.by_user.total() >= self.per_process):
            return False
        self.by_user[user_id] += 1
        return True

    def attach(self, user_id: str) -> None:
        """A detached turn ended."""
        self.by_user[user_id] -= 1
        if self.by_user[user_id] <= 0:
            del self.by_user[user_id]

    def __bool__(self) -> bool:
        return bool(self.by_user)


def run_detachable(turn: Turn) -> tuple[asyncio.Future[None], asyncio.Task[None]]:
    """Run a turn to its end in a task of its own, so that it can outlive its caller.

    Returns a future resolved once the turn has started (or failed to: its error, such as
    "chat is busy", comes through it) and the task, which ends once the turn is stored.
    The caller follows the answer through `turn.live`.
    """
    entered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def drive() -> None:
        try:
            async with turn:
                entered.set_result(None)
                async for _ in turn:
                    pass
        except BaseException as exc:
            if not entered.done():
                entered.set_exception(exc if isinstance(exc, Exception) else ChatError(
                    "the turn was cancelled before it started"))
            raise

    driver = asyncio.ensure_future(drive())
    # Nobody may be left to await a detached turn: its errors are in its report and log.
    driver.add_done_callback(lambda done: done.cancelled() or done.exception())
    entered.add_done_callback(lambda done: done.cancelled() or done.exception())
    return entered, driver
