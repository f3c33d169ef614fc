"""5: database work per turn on chats with 1, 1 000 and 10 000 prior messages.

In-process, against the run's PostgreSQL, through chatms's own PostgresChatRepository:
a turn's database work is `acquire` (lease + live window) and `commit_turn` (store +
release) on its path, and beside the stream `begin` (the question, an empty answer) and one
flush of the answer so far per STREAM_FLUSH_MS streamed. Statements are counted with
asyncpg's query logger on a one-connection pool, so after the first turn asyncpg's statement
cache is warm and each statement is one round trip. Prior messages are seeded with SQL; all
but the last ten are erased. The three chats take turns in rotation so that caches and noise
hit them alike.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import asyncpg

from chatms.adapters.pgpool import create_pool
from chatms.adapters.postgres import PostgresChatRepository
from chatms.domain.budget import TokenBudget
from chatms.domain.model import Completion, Usage
from chatms.service.ports import Lease, Progress

CONFIG = {"model": "gpt-4o-mini", "temperature": 1.0, "top_p": 1.0, "max_tokens": 1024,
          "stop": [], "presence_penalty": 0.0, "frequency_penalty": 0.0}
LIVE = 10
FLUSHES = 2  # an answer streamed for 0.6 to 0.9 s at STREAM_FLUSH_MS=300
SIZES = (1, 1_000, 10_000)
BUDGET = TokenBudget(128_000, 1024)


async def seed(conn: asyncpg.Connection, prior: int) -> tuple[str, str]:
    chat_id, owner = str(uuid.uuid4()), f"bench-db-{uuid.uuid4().hex[:8]}"
    await conn.execute(
        "INSERT INTO chats (id, owner_id, config, next_seq, message_count)"
        " VALUES ($1, $2, $3, $4, $4)", chat_id, owner, CONFIG, prior + 1,
    )
    await conn.execute(
        "INSERT INTO messages (chat_id, seq, role, content, tokens)"
        " VALUES ($1, 0, 'system', 'You are a helpful assistant.', 10)", chat_id,
    )
    await conn.execute(
        "INSERT INTO messages (chat_id, seq, role, content, tokens, erased)"
        " SELECT $1, s, CASE WHEN s % 2 = 1 THEN 'user' ELSE 'assistant' END,"
        "  repeat('lorem ipsum ', 8), 30, s <= $2 - $3 FROM generate_series(1, $2) AS s",
        chat_id, prior, LIVE,
    )
    await conn.execute("ANALYZE messages")
    return chat_id, owner


class Counted:
    """A one-connection pool whose statements are logged while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.statements: list[str] = []
        self.beside: list[int] = []  # statements per turn written beside the stream

    def log(self, query: str, elapsed: float, failed: bool) -> None:
        if self.on:
            self.statements.append(" ".join(query.split())[:70])


async def one_turn(
    repo: PostgresChatRepository, chat_id: str, owner: str, counted: Counted
) -> tuple[float, float, float]:
    """(acquire, commit, writes beside the stream) in ms; statements counted by phase.

    On the turn's path: `acquire` (before the upstream is asked) and `commit` (after the
    answer). Beside the stream, off that path: `begin` (the question and an empty answer)
    and the flushes of the answer so far, one per STREAM_FLUSH_MS streamed: here FLUSHES.
    """
    lease = Lease(str(uuid.uuid4()), 60)
    t0 = time.perf_counter()
    chat = await repo.acquire(chat_id, owner, lease)
    t1 = time.perf_counter()
    pending = chat.add_user_message("what next?", 3, BUDGET)
    path = len(counted.statements)
    await repo.begin(chat, pending, lease, create=False)
    answer = "this." * 20
    step = len(answer) // FLUSHES
    for n in range(FLUSHES):
        await repo.flush([Progress(chat_id, lease, pending.user.seq + 1, n * step,
                                   answer[n * step:(n + 1) * step], 10)])
    beside = len(counted.statements) - path
    counted.beside.append(beside)
    t2 = time.perf_counter()
    chat.add_assistant_message(pending, answer, 20, Completion.COMPLETE, "stop", Usage(100, 20))
    t3 = time.perf_counter()
    await repo.commit_turn(chat, pending, lease)
    return (t1 - t0) * 1e3, (time.perf_counter() - t3) * 1e3, (t2 - t1) * 1e3


async def database_work(url: str, count: int) -> list[dict[str, Any]]:
    counted = Counted()
    # chatms's own pool (its connection class, codecs and query hook), one connection.
    pool = await create_pool(url, min_size=1, max_size=1, on_query=counted.log)
    try:
        async with pool.acquire() as conn:
            chats = [await seed(conn, prior) for prior in SIZES]
        repo = PostgresChatRepository(pool)
        times: dict[int, list[tuple[float, float, float]]] = {p: [] for p in SIZES}
        statements: dict[int, list[list[str]]] = {p: [] for p in SIZES}
        for i in range(count + 1):  # round 0 warms the statement cache; not counted
            for prior, (chat_id, owner) in zip(SIZES, chats, strict=True):
                counted.statements = []
                counted.on = i > 0
                took = await one_turn(repo, chat_id, owner, counted)
                if i > 0:
                    times[prior].append(took)
                    statements[prior].append(counted.statements)
        beside = max(counted.beside)
        return [
            {
                "prior_messages": prior, "turns": count,
                # On the turn's path (before the upstream call and after the answer).
                "statements_per_turn": max(len(s) for s in statements[prior]) - beside,
                "statements": statements[prior][0],
                # Added by resumable answers, beside the stream: begin + FLUSHES flushes.
                "writes_beside_stream": beside,
                "flushes": FLUSHES,
                "acquire_ms_p50": statistics.median(a for a, _, _ in times[prior]),
                "commit_ms_p50": statistics.median(c for _, c, _ in times[prior]),
                "beside_ms_p50": statistics.median(b for _, _, b in times[prior]),
                "turn_db_ms_p50": statistics.median(a + c for a, c, _ in times[prior]),
            }
            for prior in SIZES
        ]
    finally:
        await pool.close()


FLUSH_WIDTHS = (1, 20, 50)  # answers running at once, so written by one flush
EVENTS_PER_FLUSH = 21  # one answer's events in 300 ms at the bench's 14 ms spacing


async def flush_cost(url: str, ticks: int) -> list[dict[str, Any]]:
    """CPU of one flush tick with 1, 20 and 50 answers running: the statement writing them
    all and the NOTIFYs this process hears back (chatms's own LISTEN connection)."""
    from chatms.adapters.pg_listen import PostgresListener

    pool = await create_pool(url, min_size=1, max_size=2)
    listener = PostgresListener(url)
    await listener.start()
    repo = PostgresChatRepository(pool)
    rows = []
    try:
        for width in FLUSH_WIDTHS:
            running = []
            for _ in range(width):
                async with pool.acquire() as conn:
                    chat_id, owner = await seed(conn, 1)
                lease = Lease(str(uuid.uuid4()), 600)
                chat = await repo.acquire(chat_id, owner, lease)
                pending = chat.add_user_message("what next?", 3, BUDGET)
                await repo.begin(chat, pending, lease, create=False)
                running.append((chat_id, lease, pending.user.seq + 1))
            piece = " word" * EVENTS_PER_FLUSH

            async def tick(n: int, running: list[tuple[str, Lease, int]] = running,
                           piece: str = piece) -> None:
                await repo.flush([Progress(c, held, seq, n * len(piece), piece, 10)
                                  for c, held, seq in running])

            for n in range(10):  # warm: statement cache, pool
                await tick(n)
            cpu = time.process_time()
            for n in range(10, 10 + ticks):
                await tick(n)
            await asyncio.sleep(0.5)  # the last NOTIFYs heard
            per_tick = (time.process_time() - cpu) / ticks
            rows.append({"answers": width, "cpu_us_per_flush": per_tick * 1e6,
                         "cpu_us_per_event": per_tick * 1e6 / width / EVENTS_PER_FLUSH})
    finally:
        await listener.stop()
        await pool.close()
    return rows
