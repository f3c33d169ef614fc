"""The HTTP listeners: Hypercorn's connection handling on a BoundedListener.

`hypercorn.asyncio.serve` accepts every connection the kernel offers. This runs
Hypercorn's own per-connection server (`TCPServer`, pinned with Hypercorn in pyproject;
tests/integration/test_http_edge.py fails if it changes) on sockets accepted by a
`BoundedListener`, so each listener holds at most its cap. Hypercorn's idle timeout still
applies: a connection is closed when it sends no complete request head, or stays idle
between requests, for `keep_alive_timeout`; it is kept as one timer (`IdleTimer`) instead
of Hypercorn's task, which was cancelled, awaited and started again around every request.
A request body as a whole must arrive within the body timeout (`read_body`): a silent
client, or one trickling a byte at a time, gets 408. Hypercorn's `read_timeout` is left
unset on purpose: it also times the client's silence while a response streams, and would
cut a long answer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config as HypercornConfig
from hypercorn.utils import wrap_app
from starlette.requests import Request

from chatms.config import EdgeSettings
from chatms.entrypoints.coalesced_writes import HeadWithBody
from chatms.entrypoints.listener import BoundedListener, Release


class BodyTooLarge(Exception):
    """The body passed the byte limit (the rest is never read)."""


class BodyTimeout(Exception):
    """The body did not arrive in full within the body timeout."""


async def read_body(request: Request, limit: int, timeout: float) -> bytes:  # noqa: ASYNC109
    """The whole body, refused past `limit` bytes or `timeout` seconds."""
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyTooLarge(f"request body is larger than {limit} bytes")
    except TimeoutError:
        raise BodyTimeout(f"request body did not arrive within {timeout:g}s") from None
    return bytes(body)


def hypercorn_config(limits: EdgeSettings, graceful_timeout: float = 1.0) -> HypercornConfig:
    config = HypercornConfig()
    config.keep_alive_timeout = limits.http_idle_timeout
    config.graceful_timeout = graceful_timeout
    # Hypercorn's messages through our handlers and format, not a handler of its own.
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


class ResetIsEnd(asyncio.StreamReaderProtocol):
    """A client's reset ends its connection as its close does (Hypercorn stops reading on
    either). Kept by the reader, the reset's exception would hold the connection's objects
    in a cycle: its traceback's frames hold the reader."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(None if isinstance(exc, ConnectionError) else exc)


class IdleTimer:
    """Hypercorn's keep-alive wait (its `AsyncioSingleTask` running `_idle_timeout`) as one
    timer handle: the same closes, at the same moments, without two tasks and a loop round
    trip on each request's path. `fire` closes the connection now (shutdown does so for
    the idle ones)."""

    def __init__(self, server: TCPServer, seconds: float, idle: set[IdleTimer],
                 terminated: Any) -> None:
        self._server: TCPServer | None = server
        self._seconds = seconds
        self._idle = idle  # the listener's idle connections, closed at once on shutdown
        self._terminated = terminated
        self._handle: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None

    async def restart(self, task_group: object, action: object) -> None:
        """Idle from now on (Hypercorn passes its task group and `_idle_timeout`)."""
        self._cancel()
        if self._terminated.is_set():
            self.fire()
            return
        self._handle = asyncio.get_running_loop().call_later(self._seconds, self.fire)
        self._idle.add(self)

    async def stop(self) -> None:
        """A request is being served: not idle."""
        self._cancel()

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._idle.discard(self)

    def end(self) -> None:
        """The connection is over: unlink its server from its protocol (which sends through a
        method of the server) and from this timer, so that the connection's objects go when
        dropped, not at the cyclic collector's next full pass. A close under way ends first."""
        closing = self._closing
        if closing is not None and not closing.done():
            closing.add_done_callback(lambda _: self.end())
            return
        server, self._server = self._server, None
        if server is not None:
            vars(server).pop("protocol", None)

    def fire(self) -> None:
        self._cancel()
        if self._closing is None and self._server is not None:
            self._closing = asyncio.ensure_future(self._server._initiate_server_close())
            # A connection already broken as it closes: nothing to do.
            self._closing.add_done_callback(lambda done: done.cancelled() or done.exception())


class HttpListener:
    """One ASGI app served on one bounded listening socket until `stop`.

    With `coalesce`, a response's head leaves in one send with the first part of its body
    (`HeadWithBody`): Hypercorn writes them apart."""

    def __init__(self, app: Any, config: HypercornConfig, sock: socket.socket, cap: int,
                 coalesce: bool = True) -> None:
        self.config = config
        self._coalesce = coalesce
        self._app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self._context = WorkerContext(None)
        self._idle: set[IdleTimer] = set()
        self.listener = BoundedListener(sock, cap, self._serve)

    def start(self) -> None:
        self.listener.start()

    async def _serve(self, conn: socket.socket, release: Release) -> None:
        try:
            reader, writer = await self._streams(conn)
            server = TCPServer(self._app, asyncio.get_running_loop(), self.config,
                               self._context, {}, reader, writer)
            timer = IdleTimer(
                server, self.config.keep_alive_timeout, self._idle, self._context.terminated)
            server.idle_task = timer  # type: ignore[assignment]  # the same two methods
            try:
                await server
            finally:
                timer.end()
        except OSError:
            conn.close()
        finally:
            release()

    async def _streams(
        self, conn: socket.socket
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """`asyncio.open_connection(sock=conn)`, each head sent with its body when asked."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = ResetIsEnd(reader, loop=loop)
        transport, _ = await loop.create_connection(lambda: protocol, sock=conn)
        if self._coalesce:
            transport = HeadWithBody(transport)  # type: ignore[assignment]
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def stop(self) -> None:
        """Stop accepting, tell idle connections to close, give the rest the grace period."""
        self.listener.close()
        await self.listener.wait_closed()
        await self._context.terminated.set()
        for timer in list(self._idle):  # idle connections close now, the rest when done
            timer.fire()
        await self.listener.wait_served(self.config.graceful_timeout)
