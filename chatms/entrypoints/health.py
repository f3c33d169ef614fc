"""Readiness as a set of named pings (one per dependency), for `/readyz` and gRPC health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from grpclib.health.check import ServiceCheck
from grpclib.health.service import Health

from chatms.domain.errors import ChatError

# A ping returns when its dependency is fine and raises when it is not.
Ping = Callable[[], Awaitable[None]]


class NotReady(Exception):
    """Raised by a ping; its message says what is wrong and goes into the probe's answer."""


class Readiness:
    def __init__(self, pings: Mapping[str, Ping], timeout: float = 1.0) -> None:
        self.pings = dict(pings)
        self.timeout = timeout

    async def _run(self, ping: Ping) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                await ping()
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except (NotReady, ChatError) as exc:
            return str(exc) or type(exc).__name__
        except Exception as exc:  # a driver's message may name hosts: the type says enough
            return f"failed: {type(exc).__name__}"
        return "ok"

    async def check(self) -> tuple[bool, dict[str, str]]:
        """(ready, {check name: "ok" or what is wrong}), every ping run at once."""
        results = await asyncio.gather(*(self._run(p) for p in self.pings.values()))
        checks = dict(zip(self.pings, results, strict=True))
        return all(r == "ok" for r in results), checks

    async def ready(self) -> bool:
        return (await self.check())[0]


def grpc_health(readiness: Readiness, services: Collection[Any]) -> Health:
    """`grpc.health.v1.Health` answering SERVING only while `readiness` holds, for "" and each
    service; a result is reused for at most one second so probes cannot hammer the database."""
    check = ServiceCheck(readiness.ready, check_ttl=1.0, check_timeout=readiness.timeout + 1.0)
    return Health({service: [check] for service in services})
