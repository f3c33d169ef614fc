"""PostgreSQL through asyncpg: the pool, the migrations, and the chat repository.

Each turn costs two statements on the hot path of an existing chat: one that leases the
chat and returns its live window, and one that stores the turn and releases the lease.
Both are single statements, so each is atomic and one round trip.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar

import asyncpg

from chatms.config import DatabaseSettings
from chatms.domain.context import Summary
from chatms.domain.errors import (
    ChatBusy,
    ChatEnded,
    ChatNotFound,
    InvalidInput,
    StorageRefused,
    Unavailable,
)
from chatms.domain.model import (
    Chat,
    ChatConfig,
    ChatStatus,
    Completion,
    Message,
    PendingTurn,
    Role,
)
from chatms.service.ports import (
    ChatDetail,
    ChatPage,
    ChatSummary,
    Lease,
    StoredMessage,
    StoredSummary,
)

log = logging.getLogger("chatms.postgres")

T = TypeVar("T")

# A finished answer is worth waiting for: under a burst of load its commit waits this many
# acquire timeouts for a pooled connection before giving up (to the background retry).
STORE_PATIENCE = 6.0

# Any fixed 64-bit number: replicas starting together take turns migrating.
MIGRATION_LOCK_KEY = 0x63686174_6D73


# Told (statement text, seconds, failed) after each statement; the driver calls it
# soon after, outside the query's own path.
QueryObserver = Callable[[str, float, bool], None]


async def _init_connection(
    conn: asyncpg.Connection, on_query: QueryObserver | None = None
) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    if on_query is not None:
        conn.add_query_logger(
            lambda q: on_query(q.query, q.elapsed, q.exception is not None)
        )


class _StatelessConnection(asyncpg.Connection):  # type: ignore[misc]
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


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every packaged migration, in order."""
    found = []
    for entry in resources.files("chatms.adapters").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the migrations not yet applied; returns their names."""
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied.append(name)
    for name in applied:
        log.info("applied migration %s", name)
    return applied


async def pending_migrations(pool: asyncpg.Pool) -> list[str]:
    """Names of packaged migrations the database lacks (all of them on an empty database)."""
    async with pool.acquire() as conn:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        done = (
            {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            if exists
            else set()
        )
    return [name for version, name, _ in migration_files() if version not in done]


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


class PoolExhausted(Unavailable):
    """No pooled connection within the acquire timeout: trying again only waits longer."""


@asynccontextmanager
async def pooled(pool: asyncpg.Pool, wait: float) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection whose driver errors become domain errors.

    asyncpg's errors can quote a statement's parameters (an argument it could not encode, a
    constraint's failing row), which hold message text: none of it is passed on or chained,
    so no log line or traceback can show it. The SQLSTATE says what went wrong.
    """
    try:
        async with pool.acquire(timeout=wait) as conn:
            yield conn
    except TimeoutError:
        log.warning("database unavailable: no connection within %gs", wait)
        raise PoolExhausted("database unavailable; please retry") from None
    except DB_UNAVAILABLE as exc:
        # After a server restart every idle connection is dead: replace them all rather
        # than fail once per stale connection.
        await pool.expire_connections()
        log.warning("database unavailable: %s", type(exc).__name__)
        raise Unavailable("database unavailable; please retry") from None
    except asyncpg.PostgresError as exc:
        state = getattr(exc, "sqlstate", None) or "unknown"
        log.error("database refused a statement: %s (SQLSTATE %s)", type(exc).__name__, state)
        raise StorageRefused(f"the database refused the statement (SQLSTATE {state})") from None


# whatsapp_inbound.status -> what a chat's history says of the answer's delivery.
DELIVERY = {"pending": "sending", "sending": "sending", "done": "delivered", "failed": "failed"}

_ACQUIRE = """
WITH leased AS (
    UPDATE chats SET lease_id = $3, lease_until = now() + make_interval(secs => $4)
    WHERE id = $1 AND owner_id = $2 AND status = 'active'
      AND (lease_until IS NULL OR lease_until < now() OR lease_id = $3)
    RETURNING id, config, next_seq
)
SELECT l.config, l.next_seq, w.*, s.*
FROM leased l, LATERAL (
    -- One row of arrays: the chat's config is sent and decoded once, not once per message.
    SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(role ORDER BY seq) AS roles,
           array_agg(content ORDER BY seq) AS contents, array_agg(tokens ORDER BY seq) AS tokens,
           array_agg(completion ORDER BY seq) AS completions,
           array_agg(finish_reason ORDER BY seq) AS reasons
    FROM messages WHERE chat_id = l.id AND NOT erased
) w LEFT JOIN LATERAL (
    -- The chat's rolling summary, if it has one (same statement: no extra round trip).
    SELECT version AS summary_version, through_seq AS summary_through,
           content AS summary_content, tokens AS summary_tokens, model AS summary_model
    FROM chat_summaries WHERE chat_id = l.id ORDER BY version DESC LIMIT 1
) s ON true
"""

_WHY_NOT_LEASED = """
SELECT status, lease_until IS NOT NULL AND lease_until >= now() AS busy
FROM chats WHERE id = $1 AND owner_id = $2
"""

_CREATE = """
WITH chat AS (
    INSERT INTO chats (id, owner_id, config, lease_id, lease_until)
    VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
INSERT INTO messages (chat_id, seq, role, content, tokens)
SELECT id, 0, 'system', $6, $7 FROM chat
"""

# One statement, so one transaction and one round trip. Every part hangs on `chat`, the
# row whose lease we still hold: a turn that lost its lease stores nothing.
_COMMIT = """
WITH chat AS (
    UPDATE chats SET
        next_seq = $3,
        message_count = message_count + cardinality($4::integer[]),
        prompt_tokens = prompt_tokens + $11,
        completion_tokens = completion_tokens + $12,
        title = COALESCE(title, $13),
        updated_at = now(),
        lease_id = NULL,
        lease_until = NULL
    WHERE id = $1 AND lease_id = $2
    RETURNING id
), added AS (
    INSERT INTO messages (chat_id, seq, role, content, tokens, completion, finish_reason)
    SELECT chat.id, t.seq, t.role, t.content, t.tokens, t.completion, t.finish_reason
    FROM chat, unnest($4::integer[], $5::text[], $6::text[], $7::integer[], $8::text[],
                      $9::text[]) AS t(seq, role, content, tokens, completion, finish_reason)
), erased AS (
    UPDATE messages SET erased = true
    FROM chat WHERE messages.chat_id = chat.id AND messages.seq = ANY($10::integer[])
)
SELECT count(*) FROM chat
"""


_CHAT_DETAIL = """
SELECT c.status AS chat_status, c.title, c.config->>'model' AS model, s.*,
       m.seq, m.role, m.content, m.tokens, m.erased, m.completion, m.finish_reason, m.created_at,
       w.status AS delivery
FROM chats c
LEFT JOIN LATERAL (
    SELECT version AS summary_version, through_seq AS summary_through,
           content AS summary_content, tokens AS summary_tokens, model AS summary_model,
           created_at AS summary_at
    FROM chat_summaries WHERE chat_id = c.id ORDER BY version DESC LIMIT 1
) s ON true
LEFT JOIN messages m ON m.chat_id = c.id
LEFT JOIN whatsapp_inbound w ON w.chat_id = c.id AND w.answer_seq = m.seq
WHERE c.id = $1 AND c.owner_id = $2 ORDER BY m.seq
"""


def _config_to_json(config: ChatConfig) -> dict[str, Any]:
    return {
        "model": config.model,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "stop": list(config.stop),
        "presence_penalty": config.presence_penalty,
        "frequency_penalty": config.frequency_penalty,
    }


def _config_from_json(data: dict[str, Any]) -> ChatConfig:
    return ChatConfig(
        model=data["model"],
        temperature=data["temperature"],
        top_p=data["top_p"],
        max_tokens=data["max_tokens"],
        stop=tuple(data["stop"]),
        presence_penalty=data["presence_penalty"],
        frequency_penalty=data["frequency_penalty"],
    )


def _summary_from(row: asyncpg.Record) -> Summary | None:
    if row["summary_version"] is None:
        return None
    return Summary(
        row["summary_content"], row["summary_through"], row["summary_tokens"],
        row["summary_version"], row["summary_model"],
    )


def _encode_cursor(updated_at: datetime, chat_id: str) -> str:
    raw = f"{updated_at.isoformat()}|{chat_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, chat_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), str(uuid.UUID(chat_id))
    except ValueError:
        raise InvalidInput("cursor is not valid") from None


class PostgresChatRepository:
    def __init__(self, pool: asyncpg.Pool, settings: DatabaseSettings | None = None) -> None:
        self.pool = pool
        self.acquire_timeout = (settings or DatabaseSettings()).acquire_timeout

    @asynccontextmanager
    async def _conn(self, patience: float = 1.0) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; an outage or an exhausted pool becomes `Unavailable`.

        `patience` multiplies the acquire timeout: a turn that already streamed its answer
        waits longer for a connection than one that has not started.
        """
        async with pooled(self.pool, self.acquire_timeout * patience) as conn:
            yield conn

    async def _twice(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run an idempotent statement, once more on a fresh connection if the first one died."""
        try:
            return await call()
        except (PoolExhausted, StorageRefused):
            raise  # trying again only waits longer, or is refused again
        except Unavailable:
            return await call()

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1")

    async def create(self, chat: Chat, lease: Lease) -> None:
        async def insert() -> None:
            async with self._conn() as conn:
                await conn.execute(
                    _CREATE, chat.id, chat.owner, _config_to_json(chat.config), lease.token,
                    lease.seconds, chat.system.content, chat.system.tokens,
                )

        await self._twice(insert)  # idempotent: the insert does nothing the second time

    async def acquire(self, chat_id: str, owner: str, lease: Lease) -> Chat:
        async def lease_and_load() -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
            async with self._conn() as conn:
                row = await conn.fetchrow(_ACQUIRE, chat_id, owner, lease.token, lease.seconds)
                why = None if row else await conn.fetchrow(_WHY_NOT_LEASED, chat_id, owner)
            return row, why

        # Idempotent: a lease we already hold is granted again.
        row, why = await self._twice(lease_and_load)
        if row is None:
            if why is None:
                raise ChatNotFound()
            if why["status"] == ChatStatus.ENDED:
                raise ChatEnded()
            raise ChatBusy()
        messages = [
            Message(seq, Role(role), content, tokens, completion=Completion(completion),
                    finish_reason=reason)
            for seq, role, content, tokens, completion, reason in zip(
                row["seqs"] or (), row["roles"] or (), row["contents"] or (),
                row["tokens"] or (), row["completions"] or (), row["reasons"] or (), strict=True,
            )
        ]
        if not messages or messages[0].role is not Role.SYSTEM:
            # Created by a turn whose insert never landed; give the lease back.
            await self.release(chat_id, lease)
            raise ChatNotFound()
        return Chat(
            id=chat_id, owner=owner, config=_config_from_json(row["config"]),
            system=messages[0], live=messages[1:], next_seq=row["next_seq"],
            summary=_summary_from(row),
        )

    async def commit_turn(self, chat: Chat, turn: PendingTurn, lease: Lease) -> None:
        new = [turn.user] if turn.assistant is None else [turn.user, turn.assistant]
        usage = turn.usage

        async def store() -> bool:
            async with self._conn(patience=STORE_PATIENCE) as conn:
                stored = await conn.fetchval(
                    _COMMIT, chat.id, lease.token, chat.next_seq,
                    [m.seq for m in new], [m.role.value for m in new],
                    [m.content for m in new], [m.tokens for m in new],
                    [m.completion.value for m in new], [m.finish_reason for m in new],
                    turn.erased_seqs, usage.prompt_tokens, usage.completion_tokens,
                    turn.user.content[:200],
                )
                if stored == 1:
                    return True
                # No lease: either a first attempt committed before its connection died,
                # or the lease expired and the turn came too late.
                return bool(await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE chat_id = $1 AND seq = $2"
                    " AND role = 'user' AND content = $3)",
                    chat.id, turn.user.seq, turn.user.content,
                ))

        if not await self._twice(store):
            raise Unavailable("the turn outlived its lease on the chat and was not stored")

    async def renew(self, chat_id: str, lease: Lease) -> bool:
        async with self._conn() as conn:
            renewed = await conn.fetchval(
                "UPDATE chats SET lease_until = now() + make_interval(secs => $3)"
                " WHERE id = $1 AND lease_id = $2 RETURNING id",
                chat_id, lease.token, lease.seconds,
            )
        return renewed is not None

    async def release(self, chat_id: str, lease: Lease) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE chats SET lease_id = NULL, lease_until = NULL"
                " WHERE id = $1 AND lease_id = $2",
                chat_id, lease.token,
            )

    async def list_chats(self, owner: str, limit: int, cursor: str | None) -> ChatPage:
        after = _decode_cursor(cursor) if cursor else None
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, status, title, message_count, created_at, updated_at FROM chats"
                " WHERE owner_id = $1 AND ($2::timestamptz IS NULL"
                "   OR (updated_at, id) < ($2::timestamptz, $3::uuid))"
                " ORDER BY updated_at DESC, id DESC LIMIT $4",
                owner, after[0] if after else None, after[1] if after else None, limit + 1,
            )
        chats = [
            ChatSummary(
                str(r["id"]), r["status"], r["title"], r["message_count"],
                r["created_at"], r["updated_at"],
            )
            for r in rows[:limit]
        ]
        more = len(rows) > limit
        return ChatPage(chats, _encode_cursor(chats[-1].updated_at, chats[-1].id) if more else None)

    async def messages(self, chat_id: str, owner: str) -> list[StoredMessage]:
        return (await self.chat(chat_id, owner)).messages

    async def chat(self, chat_id: str, owner: str) -> ChatDetail:
        async with self._conn() as conn:
            rows = await conn.fetch(_CHAT_DETAIL, chat_id, owner)
        if not rows:
            raise ChatNotFound()
        messages = [
            StoredMessage(
                r["seq"], r["role"], r["content"], r["tokens"], r["erased"],
                r["completion"], r["finish_reason"], r["created_at"],
                DELIVERY.get(r["delivery"]),
            )
            for r in rows
            if r["seq"] is not None
        ]
        head = rows[0]
        summary = None
        if head["summary_version"] is not None:
            summary = StoredSummary(
                head["summary_version"], head["summary_through"], head["summary_content"],
                head["summary_tokens"], head["summary_model"], head["summary_at"],
            )
        return ChatDetail(chat_id, head["chat_status"], messages, head["title"],
                          head["model"], summary)

    async def end(self, chat_id: str, owner: str) -> None:
        async with self._conn() as conn:
            done = await conn.fetchval(
                "UPDATE chats SET status = 'ended', updated_at = now()"
                " WHERE id = $1 AND owner_id = $2 RETURNING id",
                chat_id, owner,
            )
        if done is None:
            raise ChatNotFound()

