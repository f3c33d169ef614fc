"""Upstream faults: retried before the first token, reported clearly after it, never a hang."""

from __future__ import annotations

import asyncpg
import grpc

from tests.fakes.openai import Script
from tests.integration.grpc_client import chat_stream
from tests.support import fetch, new_user
from tests.support import grpc_target as target

PIECES = [f"w{i} " for i in range(6)]



async def last_answer(database_url: str, chat_id: str) -> asyncpg.Record:
    rows = await fetch(
        database_url,
        "SELECT content, completion, finish_reason FROM messages"
        " WHERE chat_id = $1 AND role = 'assistant' ORDER BY seq DESC LIMIT 1", chat_id,
    )
    return rows[0]


async def test_rate_limit_is_retried_honoring_retry_after(start_app, fake_openai) -> None:
    """A 429 with Retry-After, then a 500, are retried and the answer arrives."""
    app = await start_app(UPSTREAM_MAX_RETRIES="2")
    fake_openai.queue(Script(status=429, retry_after="0.05"), Script(status=500))
    result = await chat_stream(target(app), new_user(), "hello")
    assert result.code == grpc.StatusCode.OK, result.details
    assert result.answer == "You said: hello" and len(fake_openai.requests) == 3


async def test_retries_are_bounded(start_app, fake_openai) -> None:
    """When every attempt fails, the turn ends UNAVAILABLE after max retries + 1 attempts."""
    app = await start_app(UPSTREAM_MAX_RETRIES="2")
    fake_openai.queue(*[Script(status=503)] * 5)
    result = await chat_stream(target(app), new_user(), "hello")
    assert result.code == grpc.StatusCode.UNAVAILABLE
    assert len(fake_openai.requests) == 3


async def test_stream_broken_before_first_token_is_retried(start_app, fake_openai) -> None:
    """A stream cut before any text reached the client is retried transparently."""
    app = await start_app(UPSTREAM_MAX_RETRIES="1")
    fake_openai.queue(Script(cut_after=0))
    result = await chat_stream(target(app), new_user(), "hi there")
    assert result.code == grpc.StatusCode.OK, result.details
    assert result.answer == "You said: hi there" and len(fake_openai.requests) == 2


async def test_stream_broken_after_first_token_is_not_restarted(
    start_app, fake_openai, database_url: str
) -> None:
    """A stream cut midway ends UNAVAILABLE, once, and the partial answer is stored flagged."""
    app = await start_app(UPSTREAM_MAX_RETRIES="2")
    fake_openai.queue(Script(pieces=PIECES, cut_after=2))
    result = await chat_stream(target(app), new_user(), "hi")
    assert result.code == grpc.StatusCode.UNAVAILABLE
    assert result.answer == "w0 w1 " and len(fake_openai.requests) == 1
    row = await last_answer(database_url, result.chat_id)
    assert (row["content"], row["completion"]) == ("w0 w1 ", "upstream_error")


async def test_error_object_inside_the_stream(start_app, fake_openai, database_url: str) -> None:
    """An error object mid-stream ends the turn UNAVAILABLE with the partial answer kept."""
    app = await start_app()
    fake_openai.queue(Script(pieces=PIECES, error_after=3))
    result = await chat_stream(target(app), new_user(), "hi")
    assert result.code == grpc.StatusCode.UNAVAILABLE
    assert "mid-stream" in result.details
    row = await last_answer(database_url, result.chat_id)
    assert (row["content"], row["completion"]) == ("w0 w1 w2 ", "upstream_error")


async def test_malformed_lines_and_comments_are_skipped(start_app, fake_openai) -> None:
    """Malformed data lines, comments and other event fields do not break the answer."""
    app = await start_app()
    fake_openai.queue(Script(raw_before=[": keep-alive\n\n", "data: {not json\n\n",
                                         "event: ping\ndata: 42\n\n", "retry: 100\n\n"]))
    result = await chat_stream(target(app), new_user(), "still fine")
    assert result.code == grpc.StatusCode.OK, result.details
    assert result.answer == "You said: still fine"


async def test_finish_reasons_are_recorded(start_app, fake_openai, database_url: str) -> None:
    """`length` and `content_filter` finish the turn normally and are stored with the answer."""
    app = await start_app()
    for reason in ("length", "content_filter"):
        fake_openai.queue(Script(pieces=["cut"], finish_reason=reason))
        result = await chat_stream(target(app), new_user(), "hi")
        assert result.code == grpc.StatusCode.OK
        row = await last_answer(database_url, result.chat_id)
        assert (row["completion"], row["finish_reason"]) == ("complete", reason)


async def test_missing_done_after_a_finish_reason_is_accepted(start_app, fake_openai) -> None:
    """A server that omits [DONE] after finishing (some compatible servers do) still answers."""
    app = await start_app()
    fake_openai.queue(Script(done=False))
    result = await chat_stream(target(app), new_user(), "no done")
    assert result.code == grpc.StatusCode.OK, result.details


async def test_first_token_timeout(start_app, fake_openai, database_url: str) -> None:
    """An upstream silent past the first-token timeout ends the turn DEADLINE_EXCEEDED."""
    app = await start_app(UPSTREAM_FIRST_TOKEN_TIMEOUT="0.3")
    fake_openai.queue(Script(first_delay=3))
    result = await chat_stream(target(app), new_user(), "hi")
    assert result.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert result.messages == []


async def test_idle_timeout_mid_stream(start_app, fake_openai, database_url: str) -> None:
    """An upstream that stalls mid-answer ends the turn DEADLINE_EXCEEDED, partial kept."""
    app = await start_app(UPSTREAM_IDLE_TIMEOUT="0.3")
    fake_openai.queue(Script(pieces=PIECES, gap=2))
    result = await chat_stream(target(app), new_user(), "hi")
    assert result.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert result.answer == "w0 "
    row = await last_answer(database_url, result.chat_id)
    assert (row["content"], row["completion"]) == ("w0 ", "timeout")


async def test_rejected_key_is_not_echoed(start_app, fake_openai) -> None:
    """The upstream's 401 text quotes part of the key; the client never sees it."""
    app = await start_app(OPENAI_API_KEY="sk-wrong-key-abcdefgh")
    result = await chat_stream(target(app), new_user(), "hi")
    assert result.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "sk-" not in result.details and "efgh" not in result.details


async def test_chunks_of_unexpected_shape_are_skipped(start_app, fake_openai) -> None:
    """Chunks whose parts are not what OpenAI sends are skipped, not a crash."""
    app = await start_app()
    odd = ['data: {"choices": ["x"]}\n\n', 'data: {"choices": [{"delta": "s"}]}\n\n',
           'data: {"choices": [{"delta": {"content": 5}}]}\n\n',
           'data: {"choices": {"0": 1}, "usage": {"prompt_tokens": "abc"}}\n\n']
    fake_openai.queue(Script(raw_before=odd))
    result = await chat_stream(target(app), new_user(), "odd chunks")
    assert result.code == grpc.StatusCode.OK, result.details
    assert result.answer == "You said: odd chunks"


async def test_keep_alives_cannot_outlive_the_turn_limit(start_app, fake_openai) -> None:
    """An upstream that keeps the stream alive without finishing is cut at the turn limit."""
    app = await start_app(TURN_TIMEOUT_SECONDS="1", UPSTREAM_IDLE_TIMEOUT="0.5")
    fake_openai.queue(Script(pieces=["a"] + [""] * 40, gap=0.1))  # empty deltas: bytes only
    result = await chat_stream(target(app), new_user(), "hang on")
    assert result.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "turn time limit" in result.details


async def test_a_new_chat_refused_before_any_answer_is_not_stored(
    start_app, fake_openai, database_url: str
) -> None:
    """A first turn that fails before any answer leaves no orphan chat behind."""
    app = await start_app()
    user = new_user()
    for status in (400, 429, 500):
        fake_openai.queue(Script(status=status))
        assert (await chat_stream(target(app), user, "hi")).code != grpc.StatusCode.OK
    await app.chats.drain(grace=5)
    assert await fetch(database_url, "SELECT id FROM chats WHERE owner_id = $1", user) == []


async def test_a_refused_question_is_not_asked_again(
    start_app, fake_openai, database_url: str
) -> None:
    """In an existing chat, a question the upstream refused stays in history, not in context."""
    app = await start_app()
    user = new_user()
    chat_id = (await chat_stream(target(app), user, "first")).chat_id
    fake_openai.queue(Script(status=400))
    refused = await chat_stream(target(app), user, "refused one", chat_id=chat_id)
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    await chat_stream(target(app), user, "second", chat_id=chat_id)
    sent = [m["content"] for m in fake_openai.requests[-1].body["messages"]]
    assert "refused one" not in sent and sent[-1] == "second"
    rows = await fetch(database_url, "SELECT content FROM messages WHERE chat_id = $1", chat_id)
    assert "refused one" in [r["content"] for r in rows]


async def test_an_empty_event_stream_is_retried_once_then_ends_the_turn(
    start_app, fake_openai
) -> None:
    """A 200 with no event is tried once more; the same empty answer again ends the turn
    at once with a clear error, whatever retries are left."""
    app = await start_app(UPSTREAM_MAX_RETRIES="5")
    fake_openai.queue(*[Script(empty=True)] * 6)
    result = await chat_stream(target(app), new_user(), "hello")
    assert result.code == grpc.StatusCode.UNAVAILABLE
    assert "empty event stream" in result.details
    assert len(fake_openai.requests) == 2

    fake_openai.scripts.clear()
    fake_openai.queue(Script(empty=True))  # one empty answer, then a good one
    result = await chat_stream(target(app), new_user(), "hello")
    assert result.code == grpc.StatusCode.OK and result.answer == "You said: hello"


async def test_a_numeric_error_code_does_not_repeat_the_status(start_app, fake_openai) -> None:
    """Some compatible servers send the status again as the code: it is said once."""
    app = await start_app()
    fake_openai.queue(Script(status=403, error_code="403"))
    result = await chat_stream(target(app), new_user(), "hi")
    assert "(HTTP 403)" in result.details
    assert "(403)" not in result.details.replace("(HTTP 403)", "")
