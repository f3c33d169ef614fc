"""Per-user usage counters in a real PostgreSQL."""

from __future__ import annotations

import asyncio

from chatms.adapters.limits_store import PostgresUsageStore
from chatms.adapters.migrator import migrate
from chatms.adapters.pgpool import create_pool
from tests.support import new_user


async def test_counts_messages_per_minute_and_tokens_per_day(database_url: str) -> None:
    pool = await create_pool(database_url)
    try:
        await migrate(pool)
        store, user = PostgresUsageStore(pool), new_user()
        first = await store.count_messages(user, 1)
        assert (first.messages_this_minute, first.tokens_today) == (1, 0)
        await store.spend_tokens(user, 120)
        await store.spend_tokens(user, 0)
        counted = await asyncio.gather(*(store.count_messages(user, 2) for _ in range(5)))
        assert sorted(u.messages_this_minute for u in counted) == [3, 5, 7, 9, 11]
        assert {u.tokens_today for u in counted} == {120}
        # An old minute and an old day start again from zero.
        await pool.execute("UPDATE user_usage SET minute = minute - interval '2 minutes',"
                           " day = day - 1 WHERE user_id = $1", user)
        fresh = await store.count_messages(user, 1)
        assert (fresh.messages_this_minute, fresh.tokens_today) == (1, 0)
        assert await pool.fetchval("SELECT count(*) FROM user_usage WHERE user_id = $1",
                                   user) == 1
    finally:
        await pool.close()


async def test_one_notice_per_window(database_url: str) -> None:
    pool = await create_pool(database_url)
    try:
        await migrate(pool)
        store, user = PostgresUsageStore(pool), new_user()
        told = await asyncio.gather(*(store.notice_due(user, "rate", 60) for _ in range(4)))
        assert sorted(told) == [False, False, False, True]
        assert await store.notice_due(user, "daily_tokens", 60)  # each limit has its own
        await pool.execute("UPDATE limit_notices SET until = now() - interval '1 second'"
                           " WHERE user_id = $1 AND limit_name = 'rate'", user)
        assert await store.notice_due(user, "rate", 60)
    finally:
        await pool.close()
