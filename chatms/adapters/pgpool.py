"""PostgreSQL connections through asyncpg: the pool, and its failures as domain errors.

Every store takes its connections from `Connections`, so an outage or an exhausted pool is
`Unavailable` everywhere, and a bug in a statement stays the error it is.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg

from chatms.config import DatabaseSettings
from chatms.domain.errors import StorageRefused, Unavailable

log = logging.getLogger("chatms.postgres")

T = TypeVar("T")

# Told (statement text, seconds, failed) after each statement; the driver calls it
# soon after, outside the query's own path.
QueryObserver = Callable[[str, float, bool], None]

# Errors that mean "the database is not there right now", as opposed to a bug in a query.
DB_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # asyncpg's own state machine, confused by a connection that died mid-statement.
    asyncpg.exceptions.InternalClientError,
)


async def _init_connection(
    conn: asyncpg.Connection, on_query: QueryObserver | None = None
) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    if on_query is not None:
        conn.add_query_logger(
            lambda q: on_query(q.query, q.elapsed, q.exception is not None)
        )


class _StatelessConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no types
    """A connection the pool hands back without a reset statement.

    asyncpg's default reset (unlock advisory locks, CLOSE ALL, UNLISTEN, RESET ALL) costs a
    round trip per release. chatms keeps no session state (no SET, LISTEN, cursors or
    session advisory locks; the migration lock is transaction-scoped), so there is nothing
    to reset. An open transaction is still rolled back by asyncpg before reuse.
    """

    def get_reset_query(self) -> str:
        return ""


async def create_pool(
    dsn: str,
    settings: DatabaseSettings | None = None,
    *,
    min_size: int = 1,
    max_size: int | None = None,
    on_query: QueryObserver | None = None,
) -> asyncpg.Pool:
    """A pool of `settings.pool_size` connections (or `max_size`), each observed by `on_query`."""
    settings = settings or DatabaseSettings()
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size or settings.pool_size,
        command_timeout=settings.command_timeout,
        init=functools.partial(_init_connection, on_query=on_query),
        connection_class=_StatelessConnection,
    )


class PoolExhausted(Unavailable):
    """No pooled connection within the acquire timeout: trying again only waits longer."""


class Connections:
    """Connections from `pool`, waited for at most `settings.acquire_timeout` seconds."""

    def __init__(self, pool: asyncpg.Pool, settings: DatabaseSettings | None = None) -> None:
        self.pool = pool
        self.acquire_timeout = (settings or DatabaseSettings()).acquire_timeout

    @asynccontextmanager
    async def __call__(self, patience: float = 1.0) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection whose driver errors, then or while it is used, become domain
        errors: `PoolExhausted`, `Unavailable` (an outage) or `StorageRefused`.

        asyncpg's errors can quote a statement's parameters (an argument it could not encode,
        a constraint's failing row), which hold message text: none of it is passed on or
        chained, so no log line or traceback can show it. The SQLSTATE says what went wrong.
        `patience` multiplies the acquire timeout: a turn that already streamed its answer
        waits longer for a connection than one that has not started.
        """
        wait = self.acquire_timeout * patience
        try:
            async with self.pool.acquire(timeout=wait) as conn:
                yield conn
        except TimeoutError:
            log.warning("database unavailable: no connection within %gs", wait)
            raise PoolExhausted("database unavailable; please retry") from None
        except DB_UNAVAILABLE as exc:
            # After a server restart every idle connection is dead: replace them all rather
            # than fail once per stale connection.
            await self.pool.expire_connections()
            log.warning("database unavailable: %s", type(exc).__name__)
            raise Unavailable("database unavailable; please retry") from None
        except asyncpg.PostgresError as exc:
            state = getattr(exc, "sqlstate", None) or "unknown"
            log.error("database refused a statement: %s (SQLSTATE %s)", type(exc).__name__, state)
            raise StorageRefused(
                f"the database refused the statement (SQLSTATE {state})"
            ) from None

    @staticmethod
    async def twice(call: Callable[[], Awaitable[T]]) -> T:
        """Run an idempotent statement, once more on a fresh connection if the first one died."""
        try:
            return await call()
        except (PoolExhausted, StorageRefused):
            raise  # trying again only waits longer, or is refused again
        except Unavailable:
            return await call()

    async def ping(self) -> None:
        async with self() as conn:
            await conn.fetchval("SELECT 1")
