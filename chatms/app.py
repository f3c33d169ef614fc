"""The running service: both servers and the inbound worker in one loop, and their shutdown.

An `App` is built whole by `chatms.builder.build_app`; here it only starts and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grpclib.server import Server
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette

from chatms.config import Settings
from chatms.domain.errors import StartupError
from chatms.observability.metrics import Metrics
from chatms.service.chats import ChatService
from chatms.service.inbound_worker import InboundWorker

if TYPE_CHECKING:  # the builder imports this module
    from chatms.builder import Storage

log = logging.getLogger("chatms")


@contextlib.contextmanager
def listen_errors(prefix: str, host: str, port: int) -> Iterator[None]:
    """A listener that cannot be opened stops the start with one line naming the setting."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"{prefix}_SERVER_PORT={port} is already in use on {host}: stop what listens"
                f" there or set {prefix}_SERVER_PORT to a free port"
            ) from None
        host_setting = "GRPC_HOST" if prefix == "GRPC" else "WEB_HOST"
        raise StartupError(
            f"cannot listen on {host_setting}={host} {prefix}_SERVER_PORT={port}"
            f" ({exc.strerror or exc}): change {host_setting} or {prefix}_SERVER_PORT"
        ) from None


@dataclass
class App:
    """Everything `chatms serve` runs. `start` listens; `stop` drains and closes it all."""

    settings: Settings
    metrics: Metrics
    storage: Storage
    chats: ChatService
    grpc_server: Server
    web: Starlette
    inbound_worker: InboundWorker | None  # None: no text channel is configured
    closing: contextlib.AsyncExitStack  # the clients, pool and database, in build order
    _web_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _web_task: asyncio.Task[Any] | None = None
    _grpc_listening: bool = False
    _sweeper: asyncio.Task[None] | None = None  # marks the answers of dead processes

    async def start(self) -> None:
        """Listen on both ports and start the inbound worker; on a failure, stop again."""
        try:
            await self._listen()
        except BaseException:
            await self.stop()
            raise
        s = self.settings
        log.info("chatms ready: gRPC on %s:%d, HTTP on %s:%d (model %s)",
                 s.server.grpc_host, s.server.grpc_port, s.server.web_host, s.server.web_port,
                 s.model.model)

    async def _listen(self) -> None:
        server = self.settings.server
        with listen_errors("GRPC", server.grpc_host, server.grpc_port):
            await self.grpc_server.start(server.grpc_host, server.grpc_port)
        self._grpc_listening = True
        web = HypercornConfig()
        # Listen before start() returns, so callers can connect at once; Hypercorn takes
        # over a duplicate of the socket and closes it when it stops.
        address = (server.web_host, server.web_port)
        with listen_errors("WEB", *address), \
                socket.create_server(address, backlog=1024) as listener:
            web.bind = [f"fd://{os.dup(listener.fileno())}"]
        web.graceful_timeout = 1.0
        # Hypercorn's messages through our handlers and format, not a handler of its own.
        web.errorlog = logging.getLogger("hypercorn.error")
        # Hypercorn's ASGIFramework type is narrower than what Starlette declares.
        asgi: Any = self.web
        self._web_task = asyncio.create_task(
            serve(asgi, web, shutdown_trigger=self._web_stop.wait)
        )
        if self.inbound_worker is not None:
            self.inbound_worker.start()
        self._sweeper = asyncio.create_task(self.chats.sweep_interrupted())

    async def stop(self) -> None:
        """Stop taking turns, let those in flight finish within the grace period, then close."""
        grace = self.settings.server.shutdown_grace_seconds
        # First, so /readyz and gRPC health say 503 / NOT_SERVING while we drain.
        self.chats.stop_accepting()
        log.info("stopped accepting turns; waiting up to %gs for %d in flight",
                 grace, self.chats.in_flight)
        # One grace period for everything in flight, inbound jobs and streams alike.
        waits: list[Awaitable[object]] = [self.chats.wait_idle(grace)]
        if self.inbound_worker is not None:
            waits.append(self.inbound_worker.stop(grace))
        idle, *_ = await asyncio.gather(*waits)
        if idle is False:
            log.warning("shutdown grace period over; ending %d turns", self.chats.in_flight)
        if self._grpc_listening:
            self.grpc_server.close()
            await self.grpc_server.wait_closed()
        self._web_stop.set()
        if self._web_task is not None:
            await self._web_task
        await self.chats.drain(grace=self.settings.server.store_grace_seconds)
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.closing.aclose()
        log.info("chatms stopped")
