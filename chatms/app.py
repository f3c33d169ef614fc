"""The running service: both servers and the inbound worker in one loop, and their shutdown.

An `App` is built whole by `chatms.builder.build_app`; here it only starts and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field

from starlette.applications import Starlette

from chatms.config import Settings
from chatms.domain.errors import StartupError
from chatms.entrypoints.grpc_edge import HardenedServer
from chatms.entrypoints.http_edge import HttpListener, hypercorn_config
from chatms.entrypoints.listener import bind, connection_cap, raise_file_limit
from chatms.observability.metrics import Metrics
from chatms.service.chats import ChatService
from chatms.service.inbound_worker import InboundWorker
from chatms.storage import Storage

log = logging.getLogger("chatms")

# Twilio's client pool (chatms.adapters.twilio): descriptors a connection cap leaves free.
TWILIO_CONNECTIONS = 20


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
    grpc_server: HardenedServer
    web: Starlette
    ops: Starlette | None  # /metrics and /readyz on their own listener (OPS_PORT), if set
    inbound_worker: InboundWorker | None  # None: no text channel is configured
    closing: contextlib.AsyncExitStack  # the clients, pool and database, in build order
    _listeners: list[HttpListener] = field(default_factory=list)
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
        s = self.settings
        server = s.server
        # Each listener holds at most its cap of client connections, all of them within
        # the file limit, leaving room for the database's and the upstreams' connections.
        listeners = 3 if self.ops is not None else 2
        reserve = s.database.pool_size + s.upstream.max_connections + TWILIO_CONNECTIONS
        cap = connection_cap(s.edge.max_connections, listeners, reserve, raise_file_limit())
        with listen_errors("GRPC", server.grpc_host, server.grpc_port):
            grpc_socket = bind(server.grpc_host, server.grpc_port)
        await self.grpc_server.start_on(grpc_socket, cap)
        self._grpc_listening = True
        # Bound here, so callers can connect as soon as start() returns.
        config = hypercorn_config(s.edge)
        with listen_errors("WEB", server.web_host, server.web_port):
            web_socket = bind(server.web_host, server.web_port)
        coalesce = s.edge.http_coalesce_writes
        self._listeners.append(HttpListener(self.web, config, web_socket, cap, coalesce))
        if self.ops is not None:
            try:
                ops_socket = bind(server.ops_host, server.ops_port)
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on OPS_HOST={server.ops_host} OPS_PORT={server.ops_port}"
                    f" ({exc.strerror or exc}): change OPS_HOST or OPS_PORT"
                ) from None
            self._listeners.append(HttpListener(self.ops, config, ops_socket, cap, coalesce))
        for listener in self._listeners:
            listener.start()
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
        for listener in self._listeners:
            await listener.stop()
        await self.chats.drain(grace=self.settings.server.store_grace_seconds)
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.closing.aclose()
        log.info("chatms stopped")
