"""Hostile and malformed input over gRPC: clear INVALID_ARGUMENT, stored data untouched."""

from __future__ import annotations

import asyncpg
import grpc

from tests.integration.grpc_client import chat_stream
from tests.support import AUTH_TOKEN, new_user
from tests.support import grpc_target as target

INJECTIONS = [
    "'; DROP TABLE chats; --",
    "$1 $2 %s %(x)s {0} {{x}}",
    "Robert'); DELETE FROM messages WHERE ('1'='1",
    "\u202eevil\u202c \x1b[31mred\x1b[0m \x07\x08 tab\there",
    "<script>alert(1)</script> ${jndi:ldap://x} `rm -rf /`",
]



def raw_request(user_id: bytes, message: bytes) -> bytes:
    """A ChatRequest encoded by hand, so that it can carry bytes no client library would send."""
    def field(number: int, value: bytes) -> bytes:
        return bytes([number << 3 | 2, len(value)]) + value
    return field(2, user_id) + field(3, message)


async def call_raw(target_: str, payload: bytes) -> grpc.aio.AioRpcError | None:
    async with grpc.aio.insecure_channel(target_) as channel:
        call = channel.unary_stream("/pb.ChatService/ChatStream")(
            payload, metadata=(("authorization", AUTH_TOKEN),), timeout=10)
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


async def test_invalid_utf8_is_invalid_argument(start_app, fake_openai) -> None:
    """A string field holding invalid UTF-8 is refused as INVALID_ARGUMENT, not a crash."""
    app = await start_app()
    error = await call_raw(target(app), raw_request(b"eve", b"\xff\xfe bad"))
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fake_openai.requests == []


async def test_oversized_grpc_message_is_refused(start_app) -> None:
    """A request over GRPC_MAX_MESSAGE_BYTES is INVALID_ARGUMENT naming the limit."""
    app = await start_app(GRPC_MAX_MESSAGE_BYTES="2048")
    result = await chat_stream(target(app), new_user(), "x" * 5000)
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "2048" in result.details


async def test_field_limits(start_app, fake_openai) -> None:
    """Over-long messages and user ids, and NUL characters, are refused before any upstream call."""
    app = await start_app(MAX_MESSAGE_CHARS="100", MAX_USER_ID_CHARS="10")
    cases = [(new_user()[:10], "y" * 101), ("u" * 11, "hi"), ("nul-user", "a\x00b"),
             ("nul\x00id", "hi")]
    for user, text in cases:
        result = await chat_stream(target(app), user, text)
        assert result.code == grpc.StatusCode.INVALID_ARGUMENT, (user, text)
    assert fake_openai.requests == []


async def test_injection_shaped_text_is_stored_verbatim(
    start_app, fake_openai, database_url: str
) -> None:
    """SQL-, format- and terminal-shaped strings in every field are stored exactly as sent."""
    app = await start_app()
    for text in INJECTIONS:
        user = "u' OR '1'='1 " + new_user()
        result = await chat_stream(target(app), user, text)
        assert result.code == grpc.StatusCode.OK, result.details
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow(
                "SELECT c.owner_id, m.content FROM chats c JOIN messages m ON m.chat_id = c.id"
                " WHERE c.id = $1 AND m.role = 'user'", result.chat_id)
            assert await conn.fetchval("SELECT count(*) FROM chats") > 0
        finally:
            await conn.close()
        assert (row["owner_id"], row["content"]) == (user, text)


async def test_a_very_long_single_token_is_handled(start_app) -> None:
    """One 30 000-character word is counted off the event loop and answered."""
    app = await start_app()
    result = await chat_stream(target(app), new_user(), "a" * 30_000)
    assert result.code == grpc.StatusCode.OK, result.details
