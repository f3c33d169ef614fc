"""One dedicated LISTEN connection per process, outside the pool, for the turns' signals.

The turns' statements send NOTIFY on `chatms_turns` (see postgres_answers); this hears
them and routes each to the watchers of its chat, or a stop to the service. A lost
connection is re-opened with backoff, and every watcher is told to reload from the
database then, since notifications sent meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from chatms.adapters.pgpool import DB_UNAVAILABLE
from chatms.adapters.postgres_answers import CHANNEL
from chatms.service.ports import Signal

log = logging.getLogger("chatms.listen")

UUID_CHARS = 36
PING_SECONDS = 10.0
RETRY_MAX_SECONDS = 5.0


def parse(payload: str) -> tuple[str, str, Signal | None]:
    """(kind, chat id, signal) of a payload; the signal is None for a stop."""
    kind, chat_id, rest = payload[:1], payload[2:2 + UUID_CHARS], payload[3 + UUID_CHARS:]
    if kind == "p":
        start, _, text = rest.partition(" ")
        return kind, chat_id, Signal("progress", int(start), text if _ else None)
    if kind == "e":
        return kind, chat_id, Signal("end", completion=rest)
    return kind, chat_id, None


class PostgresListener:
    def __init__(self, dsn: str, channel: str = CHANNEL) -> None:
        self.dsn = dsn
        self.channel = channel
        self.connected = asyncio.Event()
        self._watchers: dict[str, set[Callable[[Signal], None]]] = {}
        self._on_stop: Callable[[str], None] = lambda chat_id: None
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None

    def watch(self, chat_id: str, handler: Callable[[Signal], None]) -> Callable[[], None]:
        """Call `handler` with each signal of the chat until the returned function is called."""
        self._watchers.setdefault(chat_id, set()).add(handler)

        def unwatch() -> None:
            handlers = self._watchers.get(chat_id)
            if handlers is not None:
                handlers.discard(handler)
                if not handlers:
                    del self._watchers[chat_id]

        return unwatch

    def on_stop(self, handler: Callable[[str], None]) -> None:
        self._on_stop = handler

    async def start(self, wait: float = 5.0) -> None:
        self._task = asyncio.create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(*DB_UNAVAILABLE):
                await self._conn.close(timeout=2)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            lost = asyncio.Event()
            try:
                self._conn = conn = await asyncpg.connect(self.dsn, timeout=5)
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self.channel, self._heard)
                self.connected.set()
                delay = 0.1
                self._reload_all()  # anything sent while we were away is lost
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), PING_SECONDS)
                    if not lost.is_set():  # a silent network drops nothing by itself
                        await conn.fetchval("SELECT 1", timeout=5)
            except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", type(exc).__name__)
            self.connected.clear()
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
            self._reload_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _heard(self, conn: object, pid: int, channel: str, payload: str) -> None:
        chat_id = payload[2:2 + UUID_CHARS]
        if payload.startswith("s "):
            self._on_stop(chat_id)
            return
        handlers = self._watchers.get(chat_id)
        if not handlers:
            return  # nobody here follows this chat: the common case, kept cheap
        try:
            _, _, signal = parse(payload)
        except ValueError:
            log.warning("ignored a malformed notification on %s", channel)
            return
        if signal is not None:
            for handler in tuple(handlers):
                handler(signal)

    def _reload_all(self) -> None:
        reload = Signal("reload")
        for handlers in tuple(self._watchers.values()):
            for handler in tuple(handlers):
                handler(reload)
