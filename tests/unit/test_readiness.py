"""Readiness answers in bounded time whatever its dependencies do: up, down or hanging."""

from __future__ import annotations

import asyncio
import time

from chatms.domain.errors import Unavailable
from chatms.entrypoints.health import NotReady, Readiness


async def fine() -> None:
    return None


async def hangs() -> None:
    await asyncio.Event().wait()  # never answers


async def down() -> None:
    raise Unavailable("database unavailable; please retry")


async def broken() -> None:
    raise NotReady("pending: 005_inbound_queue.sql")


async def test_a_hanging_dependency_is_reported_within_the_timeout() -> None:
    """One ping that never answers: the check still ends after its timeout, not ready."""
    readiness = Readiness({"database": hangs, "accepting": fine}, timeout=0.2)
    started = time.monotonic()
    async with asyncio.timeout(5):  # a check that hangs fails here instead of hanging the suite
        ready, checks = await readiness.check()
    assert time.monotonic() - started < 2
    assert not ready
    assert checks == {"database": "no answer within 0.2s", "accepting": "ok"}


async def test_down_and_not_ready_dependencies_say_why() -> None:
    """A dependency that fails says its own message; all of them are asked at once."""
    readiness = Readiness({"database": down, "migrations": broken, "accepting": fine})
    ready, checks = await readiness.check()
    assert not ready and checks == {
        "database": "database unavailable; please retry",
        "migrations": "pending: 005_inbound_queue.sql",
        "accepting": "ok",
    }
    assert await Readiness({"accepting": fine}).ready()
