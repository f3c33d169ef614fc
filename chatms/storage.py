"""Where chatms keeps chats and inbound work: PostgreSQL, opened and migrated (or embedded
when no URL is set), or a storage of its own that a test or the benchmark hands
`build_app`. `open_database` is the one way to a migrated PostgreSQL, used by
`postgres_storage` and by `chatms migrate`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from chatms.adapters.context_store import PostgresContextStore
from chatms.adapters.embedded_postgres import EmbeddedPostgres
from chatms.adapters.inbound_store import PostgresInboundStore
from chatms.adapters.limits_store import PostgresUsageStore
from chatms.adapters.migrator import migrate, pending_migrations
from chatms.adapters.pg_listen import PostgresListener
from chatms.adapters.pgpool import QueryObserver, create_pool
from chatms.adapters.postgres_connect import wait_for_database
from chatms.config import DatabaseSettings, Settings
from chatms.entrypoints.health import NotReady, Ping
from chatms.observability.metrics import Metrics
from chatms.service.ports import ChatRepository, ContextStore, InboundStore, UsageStore


@dataclass(frozen=True)
class Database:
    """A migrated PostgreSQL: the pool, and the embedded server when we started one."""

    pool: asyncpg.Pool
    embedded: EmbeddedPostgres | None
    applied: list[str]  # the migrations applied on opening
    url: str = ""  # for connections of its own (the LISTEN connection)

    async def close(self) -> None:
        await self.pool.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


async def open_database(
    settings: DatabaseSettings, on_query: QueryObserver | None = None, max_size: int | None = None
) -> Database:
    """Connect (starting the embedded PostgreSQL when no URL is set), pool, and migrate."""
    embedded = None
    url = settings.url
    if url is None:
        embedded = EmbeddedPostgres(Path(settings.data_dir))
        try:
            url = await asyncio.to_thread(embedded.start)
        except BaseException:
            # Cancelled (Ctrl-C) while starting: stop waits for the start and undoes it.
            await asyncio.shield(asyncio.to_thread(embedded.stop))
            raise
    else:
        await wait_for_database(url, settings.connect_timeout)
    try:
        pool = await create_pool(url, settings, max_size=max_size, on_query=on_query)
        try:
            applied = await migrate(pool)
        except BaseException:
            await pool.close()
            raise
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    return Database(pool, embedded, applied, url)


@dataclass(frozen=True)
class Storage:
    """Where chats and inbound work are kept, what readiness asks of it, and how it closes."""

    chats: ChatRepository
    inbound: InboundStore | None  # None: text channels are off
    usage: UsageStore | None = None  # None: per-user limits cannot be counted (all off)
    context: ContextStore | None = None  # None: no summaries or titles
    checks: Mapping[str, Ping] = field(default_factory=dict)
    database: Database | None = None  # the PostgreSQL behind it, when it is one
    # What other replicas' turns say (progress, ends, stop requests); None: one process.
    signals: PostgresListener | None = None

    async def close(self) -> None:
        if self.signals is not None:
            await self.signals.stop()
        if self.database is not None:
            await self.database.close()


StorageFactory = Callable[[Settings, Metrics], Awaitable[Storage]]


async def postgres_storage(settings: Settings, metrics: Metrics) -> Storage:
    """Chats and inbound work in PostgreSQL, ready when it answers and its schema is current."""
    db = await open_database(settings.database, on_query=metrics.observe_query)
    repo = PostgresContextStore(db.pool, settings.database)

    async def migrations() -> None:
        pending = await pending_migrations(db.pool)
        if pending:
            raise NotReady("pending: " + ", ".join(pending))

    # Outside the pool: a LISTEN connection is never handed to anyone else.
    signals = PostgresListener(db.url)
    await signals.start()
    return Storage(
        chats=repo,
        inbound=PostgresInboundStore(db.pool, settings.database),
        usage=PostgresUsageStore(db.pool, settings.database),
        context=repo,
        checks={"database": repo.ping, "migrations": migrations},
        database=db,
        signals=signals,
    )
