"""Listening sockets that hold at most a fixed number of client connections.

Neither grpclib nor Hypercorn bounds its connections: both accept whatever the kernel
queues, so a flood of idle or slow clients runs the process out of file descriptors, and
then the database and the upstream fail too. Here a listener accepts only while it holds
fewer connections than its cap; beyond it, new clients wait in the kernel's backlog and
take no descriptor. The caps are set below the process's file limit, which is raised to
its hard limit at start.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("chatms.listener")

# Descriptors kept free for what is not a client: log files, the embedded PostgreSQL's
# pipes, DNS lookups, the listening sockets themselves.
BASE_RESERVE = 64

Release = Callable[[], None]
ServeSocket = Callable[[socket.socket, Release], Coroutine[Any, Any, None]]


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open file limit from %d to %d", soft, target)
    return soft


def connection_cap(wanted: int, listeners: int, reserve: int, file_limit: int) -> int:
    """Connections each listener may hold so that all of them, plus the reserve, fit."""
    room = max(file_limit - reserve - BASE_RESERVE, listeners * 8) // listeners
    if wanted > room:
        log.warning(
            "MAX_CONNECTIONS=%d does not fit the open file limit %d (%d listeners, %d kept"
            " for the database and the upstream): using %d", wanted, file_limit, listeners,
            reserve + BASE_RESERVE, room,
        )
    return min(wanted, room)


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    sock = socket.create_server((host, port), backlog=backlog)
    sock.setblocking(False)
    return sock


class BoundedListener:
    """Accepts from `sock` while fewer than `cap` accepted connections are open.

    The listening socket stays registered with the event loop while there is room, and
    each readiness accepts everything queued (as asyncio's own servers do); at the cap it
    is unregistered until a connection closes. `serve` gets each accepted socket and a
    `release` to call once the connection is closed (calling it twice is harmless).
    """

    def __init__(self, sock: socket.socket, cap: int, serve: ServeSocket) -> None:
        self.sock = sock
        self.cap = cap
        self._serve = serve
        self._open = 0
        self._reading = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        return self._open

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._resume()

    def _resume(self) -> None:
        if self._loop is not None and not (self._reading or self._closed) \
                and self._open < self.cap:
            self._loop.add_reader(self.sock.fileno(), self._accept_ready)
            self._reading = True

    def _pause(self) -> None:
        if self._loop is not None and self._reading:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False

    def _accept_ready(self) -> None:
        assert self._loop is not None
        while self._open < self.cap:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENOBUFS, ECONNABORTED: wait, never spin
                log.warning("accept failed: %s", exc.strerror or type(exc).__name__)
                self._pause()
                self._loop.call_later(0.1, self._resume)
                return
            conn.setblocking(False)
            self._open += 1
            task = self._loop.create_task(self._serve(conn, self._releaser()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._pause()  # at the cap: new clients wait in the kernel's backlog

    def _releaser(self) -> Release:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._open -= 1
                self._resume()

        return release

    def close(self) -> None:
        """Stop accepting; connections already open are left to their servers."""
        self._pause()
        self._closed = True
        self.sock.close()

    async def wait_closed(self) -> None:
        """Nothing to wait for: accepting stops at `close` (kept for grpclib's Server)."""

    async def wait_served(self, timeout: float) -> None:  # noqa: ASYNC109 (a grace period)
        """Give the connections' serving tasks `timeout` to end, then cancel the rest."""
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
