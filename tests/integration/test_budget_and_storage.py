"""Token budget and persistence against the real database."""

from __future__ import annotations

import asyncpg
import grpc

from tests.fakes.openai import FakeOpenAI, Script
from tests.integration.grpc_client import chat_stream
from tests.support import fetch, new_user
from tests.support import grpc_target as target


async def stored(database_url: str, chat_id: str) -> list[asyncpg.Record]:
    return await fetch(
        database_url,
        "SELECT seq, role, content, tokens, erased, completion FROM messages"
        " WHERE chat_id = $1 ORDER BY seq", chat_id,
    )


async def test_small_window_erases_oldest_and_keeps_system(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """With a small window the oldest messages are flagged erased, never the system message."""
    app = await start_app(MODEL_MAX_TOKENS="120", MAX_TOKENS="20", CONTEXT_STRATEGY="truncate",
                          INITIAL_CHAT_MESSAGE="You are terse.")
    user = new_user()
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    chat_id = None
    for i in range(4):
        result = await chat_stream(target(app), user, f"{i} {words}", chat_id=chat_id)
        assert result.code == grpc.StatusCode.OK, result.details
        chat_id = result.chat_id
    sent = fake_openai.requests[-1].body["messages"]
    assert sent[0] == {"role": "system", "content": "You are terse."}
    assert sent[-1]["content"].startswith("3 ")
    assert not any(m["content"].startswith("0 ") for m in sent)
    rows = await stored(database_url, chat_id)
    assert [r["seq"] for r in rows] == list(range(9))  # nothing deleted
    assert rows[0]["role"] == "system" and not rows[0]["erased"]
    erased = [r["seq"] for r in rows if r["erased"]]
    assert erased and erased == list(range(1, len(erased) + 1))  # strictly oldest first
    live = sum(r["tokens"] for r in rows if not r["erased"]) - rows[-1]["tokens"]
    assert live + 3 + 20 <= 120


async def test_oversized_message_is_refused_with_counts(start_app, fake_openai) -> None:
    """A message that cannot fit beside the system message is INVALID_ARGUMENT with its size."""
    app = await start_app(MODEL_MAX_TOKENS="100", MAX_TOKENS="20")
    result = await chat_stream(target(app), new_user(), "word " * 200)
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "tokens" in result.details and "at most" in result.details
    assert fake_openai.requests == []


async def test_turn_is_stored_with_tokens_and_usage(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """A turn stores both messages with token counts, and the chat's usage totals."""
    app = await start_app()
    fake_openai.queue(Script(pieces=["Hi", "!"], finish_reason="stop"))
    result = await chat_stream(target(app), new_user(), "hello")
    rows = await stored(database_url, result.chat_id)
    assert [(r["role"], r["content"]) for r in rows] == [
        ("system", "You are a helpful assistant."), ("user", "hello"), ("assistant", "Hi!"),
    ]
    assert all(r["tokens"] > 0 for r in rows) and rows[2]["completion"] == "complete"
    conn = await asyncpg.connect(database_url)
    try:
        chat = await conn.fetchrow("SELECT * FROM chats WHERE id = $1", result.chat_id)
    finally:
        await conn.close()
    assert chat["prompt_tokens"] == 11 and chat["completion_tokens"] == 2
    assert chat["message_count"] == 2 and chat["lease_id"] is None


async def test_messages_are_append_only(start_app, database_url: str) -> None:
    """The database itself refuses to delete or rewrite a stored message."""
    app = await start_app()
    result = await chat_stream(target(app), new_user(), "keep me")
    conn = await asyncpg.connect(database_url)
    try:
        for sql in ("DELETE FROM messages WHERE chat_id = $1",
                    "UPDATE messages SET content = 'x' WHERE chat_id = $1"):
            try:
                await conn.execute(sql, result.chat_id)
            except asyncpg.RaiseError as exc:
                assert "append-only" in str(exc)
            else:
                raise AssertionError(f"{sql} was allowed")
    finally:
        await conn.close()
