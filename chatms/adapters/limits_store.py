"""Per-user usage counters in PostgreSQL, so that limits hold across replicas.

Each call is one statement: counting a message and reading the day's tokens happen together.
"""

from __future__ import annotations

import asyncpg

from chatms.adapters.pgpool import Connections
from chatms.config import DatabaseSettings
from chatms.domain.limits import Usage

_COUNT = """
INSERT INTO user_usage AS u (user_id, minute, messages, day, tokens)
VALUES ($1, date_trunc('minute', now()), $2, (now() AT TIME ZONE 'UTC')::date, 0)
ON CONFLICT (user_id) DO UPDATE SET
    messages = CASE WHEN u.minute = EXCLUDED.minute THEN u.messages + $2 ELSE $2 END,
    minute = EXCLUDED.minute,
    tokens = CASE WHEN u.day = EXCLUDED.day THEN u.tokens ELSE 0 END,
    day = EXCLUDED.day
RETURNING now() AS now, messages, tokens
"""

_SPEND = """
INSERT INTO user_usage AS u (user_id, minute, messages, day, tokens)
VALUES ($1, date_trunc('minute', now()), 0, (now() AT TIME ZONE 'UTC')::date, $2)
ON CONFLICT (user_id) DO UPDATE SET
    tokens = CASE WHEN u.day = EXCLUDED.day THEN u.tokens + $2 ELSE $2 END,
    day = EXCLUDED.day
"""

# Inserted, or taken over once the last notice's window is over: then (and only then) the
# user is told again.
_NOTICE = """
INSERT INTO limit_notices AS n (user_id, limit_name, until)
VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (user_id, limit_name) DO UPDATE SET until = EXCLUDED.until
WHERE n.until <= now()
RETURNING 1
"""


class PostgresUsageStore:
    def __init__(self, pool: asyncpg.Pool, settings: DatabaseSettings | None = None) -> None:
        self.pool = pool
        self._conn = Connections(pool, settings)

    async def count_messages(self, user_id: str, messages: int) -> Usage:
        """Count `messages` for this minute; returns the counts including them."""
        row = await self._run("fetchrow", _COUNT, user_id, messages)
        return Usage(row["now"], row["messages"], row["tokens"])

    async def spend_tokens(self, user_id: str, tokens: int) -> None:
        if tokens > 0:
            await self._run("execute", _SPEND, user_id, tokens)

    async def notice_due(self, user_id: str, limit: str, window_seconds: float) -> bool:
        """True once per window: whether the user should be told about `limit` now."""
        return await self._run("fetchval", _NOTICE, user_id, limit, window_seconds) is not None

    async def _run(self, method: str, sql: str, *args: object) -> asyncpg.Record:
        """One statement; driver failures become domain errors (see `Connections`)."""
        async with self._conn() as conn:
            return await getattr(conn, method)(sql, *args)
