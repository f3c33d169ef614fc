"""A broken or hostile OpenAI-compatible upstream: every turn ends cleanly and is stored."""

from __future__ import annotations

import logging
import traceback

import grpc
import pytest

from tests.fakes.openai import FakeOpenAI, Script
from tests.integration.grpc_client import chat_stream
from tests.integration.http_client import chat_sse, client, fake_settled
from tests.support import fetch, new_user
from tests.support import grpc_target as target

OK = grpc.StatusCode.OK


async def stored_turn(database_url: str, chat_id: str) -> list[tuple[str, str, str]]:
    """(role, content, completion) of the chat's last user message and answer."""
    rows = await fetch(
        database_url, "SELECT role, content, completion FROM messages WHERE chat_id = $1"
        " AND role <> 'system' ORDER BY seq DESC LIMIT 2", chat_id)
    return [(r["role"], r["content"], r["completion"]) for r in reversed(rows)]


async def existing_chat(app: object, user: str) -> str:
    first = await chat_stream(target(app), user, "hello")
    assert first.code == OK, first.details
    return first.chat_id


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "\udfff"])
async def test_unstorable_model_text_is_replaced_and_the_turn_completes(
    start_app, fake_openai: FakeOpenAI, database_url: str, bad: str
) -> None:
    """NUL and lone surrogates from the model become U+FFFD, on the wire and in the database."""
    app = await start_app()
    user = new_user()
    chat_id = await existing_chat(app, user)
    fake_openai.queue(Script(pieces=[f"a{bad}b", f" c{bad}"]))
    result = await chat_stream(target(app), user, "say something odd", chat_id)
    assert result.code == OK, result.details
    assert result.answer == "a\ufffdb c\ufffd"
    assert await stored_turn(database_url, chat_id) == [
        ("user", "say something odd", "complete"), ("assistant", "a\ufffdb c\ufffd", "complete")]

    fake_openai.queue(Script(pieces=[f"x{bad}"]))
    async with client(app) as http:
        sse = await chat_sse(http, {"user_id": user, "user_message": "and again"})
    assert sse.status == 200 and sse.named("done")[0]["content"] == "x\ufffd"


async def test_a_refused_store_frees_the_chat_at_once_and_logs_no_text(
    start_app, fake_openai: FakeOpenAI, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The database refuses the answer: a clear status, the chat free again at once, and no
    log record or traceback holding the question or the answer (asyncpg's errors carry the
    statement's parameters)."""
    caplog.set_level(logging.DEBUG)
    app = await start_app()
    user = new_user()
    chat_id = await existing_chat(app, user)
    question, answer = "my secret question 4711", "poison-marker answer 0815"
    await fetch(database_url, "ALTER TABLE messages ADD CONSTRAINT poison"
                " CHECK (content NOT LIKE '%poison-marker%') NOT VALID")
    try:
        fake_openai.queue(Script(pieces=[answer]))
        refused = await chat_stream(target(app), user, question, chat_id)
        fake_openai.queue(Script(pieces=[f"{answer} again"]))
        async with client(app) as http:
            sse = await chat_sse(http, {"user_id": user, "user_message": question,
                                        "chat_id": chat_id})
    finally:
        await fetch(database_url, "ALTER TABLE messages DROP CONSTRAINT poison")
    assert refused.code == grpc.StatusCode.UNAVAILABLE, (refused.code, refused.details)
    assert question not in refused.details and "poison" not in refused.details
    assert sse.status == 200 and sse.named("error")[0]["error"]["code"] == "unavailable"
    after = await chat_stream(target(app), user, "still there?", chat_id)
    assert after.code == OK, after.details  # not ABORTED: the lease was given back
    logged = []
    for record in caplog.records:
        logged.append(record.getMessage())
        logged.append(str(getattr(record, "fields", "")))
        if record.exc_info:
            logged.append("".join(traceback.format_exception(*record.exc_info)))
    assert logged
    for text in (question, "poison-marker"):
        assert not [line for line in logged if text in line]


async def test_usage_counts_beyond_int32_are_clamped(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """An upstream claiming 2**40 tokens does not break the store: the turn is kept."""
    app = await start_app()
    user = new_user()
    fake_openai.queue(Script(usage_counts=(2**40, 2**40)))
    new = await chat_stream(target(app), user, "count me")
    assert new.code == OK, new.details
    fake_openai.queue(Script(usage_counts=(-5, 2**63)))
    again = await chat_stream(target(app), user, "count me again", new.chat_id)
    assert again.code == OK, again.details
    [chat] = await fetch(database_url, "SELECT prompt_tokens, completion_tokens FROM chats"
                         " WHERE id = $1", new.chat_id)
    assert 0 <= chat["prompt_tokens"] < 2**32 and 0 <= chat["completion_tokens"] < 2**32
    answers = await fetch(database_url, "SELECT tokens FROM messages WHERE chat_id = $1"
                          " AND role = 'assistant'", new.chat_id)
    assert [r["tokens"] for r in answers] and all(r["tokens"] < 1000 for r in answers)


async def test_a_body_that_is_not_what_its_content_encoding_says(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """`Content-Encoding: gzip` over plain text is an upstream failure, and the turn is kept."""
    app = await start_app()
    user = new_user()
    chat_id = await existing_chat(app, user)
    fake_openai.queue(Script(content_encoding="gzip"))
    result = await chat_stream(target(app), user, "zip it", chat_id)
    assert result.code == grpc.StatusCode.UNAVAILABLE, (result.code, result.details)
    assert await stored_turn(database_url, chat_id) == [
        ("user", "zip it", "complete"), ("assistant", "", "upstream_error")]
    fake_openai.queue(Script(content_encoding="gzip"))
    async with client(app) as http:
        sse = await chat_sse(http, {"user_id": user, "user_message": "zip", "chat_id": chat_id})
    assert sse.status == 502 and sse.body["error"]["code"] == "upstream_unavailable"


async def test_a_line_that_never_ends_is_cut_at_the_event_limit(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """64 MB without a newline after some text: UNAVAILABLE at the line limit, text kept."""
    app = await start_app()
    user = new_user()
    chat_id = await existing_chat(app, user)
    fake_openai.queue(Script(pieces=["so far "], giant_line=64 * 1024 * 1024))
    result = await chat_stream(target(app), user, "go long", chat_id)
    assert result.code == grpc.StatusCode.UNAVAILABLE, (result.code, result.details)
    assert result.answer == "so far " and "larger than" in result.details
    assert await stored_turn(database_url, chat_id) == [
        ("user", "go long", "complete"), ("assistant", "so far ", "upstream_error")]


async def test_an_answer_over_the_limit_is_cut_stored_and_flagged(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """At MAX_ANSWER_CHARS the upstream is closed and the turn ends cleanly: what fits is
    sent and stored, flagged too_long; an endless stream ends the same way."""
    app = await start_app(MAX_ANSWER_CHARS="1000")
    fake_openai.queue(Script(pieces=["x" * 300] * 10))
    result = await chat_stream(target(app), new_user(), "a long one please")
    assert result.code == OK, result.details
    assert result.answer == "x" * 1000
    assert result.trailers["chatms-completion"] == "too_long"  # what its messages cannot say
    assert (await stored_turn(database_url, result.chat_id))[1] == (
        "assistant", "x" * 1000, "too_long")

    fake_openai.queue(Script(endless=True, pieces=["y" * 100], burst=10))
    async with client(app) as http:
        sse = await chat_sse(http, {"user_id": new_user(), "user_message": "forever"})
        metrics = (await http.get("/metrics")).text
    [done] = sse.named("done")
    assert sse.status == 200 and done["completion"] == "too_long"
    assert done["content"] == "y" * 1000
    assert "".join(d["delta"] for d in sse.named("delta")) == "y" * 1000
    assert 'chatms_turns_total{outcome="too_long",transport="http"} 1.0' in metrics
    await fake_settled(fake_openai)
    assert fake_openai.requests[-1].closed_early_at is not None  # the upstream was let go


async def test_deeply_nested_or_odd_chunks_are_skipped(
    start_app, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """JSON nested past the parser's depth, and a finish reason holding NUL or 100 kB, do
    not end the turn: the first is skipped like any malformed line, the second is bounded."""
    app = await start_app()
    user = new_user()
    chat_id = await existing_chat(app, user)
    nested = "data: " + "[" * 200_000 + "\n\n"
    fake_openai.queue(Script(pieces=["fine"], raw_before=[nested],
                             finish_reason="stop\x00" + "z" * 100_000))
    result = await chat_stream(target(app), user, "odd chunks", chat_id)
    assert result.code == OK, (result.code, result.details)
    assert result.answer == "fine"
    # Not plain ASCII once its NUL is replaced: not something gRPC metadata may carry.
    assert result.trailers["chatms-completion"] == "complete"
    assert "chatms-finish-reason" not in result.trailers
    [row] = await fetch(database_url, "SELECT finish_reason FROM messages WHERE chat_id = $1"
                        " AND role = 'assistant' ORDER BY seq DESC LIMIT 1", chat_id)
    assert len(row["finish_reason"]) <= 64 and "\x00" not in row["finish_reason"]
