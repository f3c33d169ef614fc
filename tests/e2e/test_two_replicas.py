"""Two `chatms serve` replicas on one PostgreSQL never interleave, lose or duplicate messages."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import grpc

from tests.e2e.grpc_sync import chat
from tests.fakes.openai import FakeOpenAI, Script
from tests.support import new_user


def outcome(target: str, user: str, text: str, chat_id: str) -> str:
    try:
        chat(target, user, text, chat_id)
    except grpc.RpcError as exc:
        return exc.code().name
    return "OK"


def test_racing_turns_across_replicas(serve, fake_openai: FakeOpenAI, database_url: str) -> None:
    """Racing turns on one chat through two replicas: one wins each race, history stays whole."""
    a, b = serve(), serve()
    user = new_user()
    chat_id = chat(a.grpc_target, user, "start")[-1].chat_id
    rounds = 6
    fake_openai.queue(*[Script(pieces=["x", "y", "z"], gap=0.15) for _ in range(2 * rounds)])
    results: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        for r in range(rounds):
            futures = [pool.submit(outcome, p.grpc_target, user, f"r{r}-{name}", chat_id)
                       for p, name in ((a, "a"), (b, "b"))]
            results += [f.result() for f in futures]
    assert set(results) <= {"OK", "ABORTED"}
    assert "ABORTED" in results  # the turns really did race
    wins = results.count("OK")
    assert wins >= rounds  # every race has a winner

    async def stored() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetch(
                "SELECT seq, role, content FROM messages WHERE chat_id = $1 ORDER BY seq",
                chat_id)
        finally:
            await conn.close()

    rows = asyncio.run(stored())
    assert [r["seq"] for r in rows] == list(range(len(rows)))
    assert len(rows) == 1 + 2 * (1 + wins)
    roles = [r["role"] for r in rows[1:]]
    assert roles == ["user", "assistant"] * (1 + wins)  # never two turns interleaved
    user_texts = [r["content"] for r in rows[1:] if r["role"] == "user"]
    assert len(user_texts) == len(set(user_texts))  # nothing duplicated
