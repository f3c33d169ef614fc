"""The service's running state: whether it takes turns, what runs now, and what must finish.

Shutdown reads and drives these two; a turn reports to them, nothing else does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from chatms.domain.errors import Unavailable

log = logging.getLogger("chatms.turns")


class TurnGate:
    """Lets turns in while the service accepts them, and counts those in flight."""

    def __init__(self) -> None:
        self.accepting = True
        self.in_flight = 0
        # Turns in flight per transport, read by the metrics at scrape time.
        self.streaming: Counter[str] = Counter()
        self._idle = asyncio.Event()
        self._idle.set()

    def check_open(self) -> None:
        if not self.accepting:
            raise Unavailable("service is shutting down")

    def stop_accepting(self) -> None:
        """Refuse new turns from now on; turns in flight go on."""
        self.accepting = False

    def started(self, transport: str) -> None:
        self.in_flight += 1
        self.streaming[transport] += 1
        self._idle.clear()

    def ended(self, transport: str) -> None:
        self.in_flight -= 1
        self.streaming[transport] -= 1
        if not self.in_flight:
            self._idle.set()

    async def wait_idle(self, grace: float) -> bool:
        """Wait up to `grace` seconds for the turns in flight; True when none is left."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


class Background:
    """Work that outlives the turn that started it (storing an answer, giving a lease back).

    Held until done, so that shutdown can wait for it.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for the work to finish; cancel what is left then."""
        try:
            async with asyncio.timeout(grace):
                while self._tasks:
                    await asyncio.gather(*self._tasks, return_exceptions=True)
        except TimeoutError:
            log.error("%d turns were still being stored at shutdown", len(self._tasks))
            for task in self._tasks:
                task.cancel()
