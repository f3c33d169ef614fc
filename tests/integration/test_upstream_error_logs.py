"""The upstream's own error text never reaches our log: a proxy's may echo the prompt."""

from __future__ import annotations

import logging
import traceback

import grpc
import pytest

from tests.fakes.openai import FakeOpenAI, Script
from tests.integration.grpc_client import chat_stream
from tests.support import grpc_target as target
from tests.support import new_user

PROMPT = "my-private-question-7d1e"


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        if record.exc_info:
            lines.extend(traceback.format_exception(*record.exc_info))
    return "\n".join(lines)


async def test_an_error_that_echoes_the_prompt_is_logged_by_its_code_only(
    start_app, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = await start_app(UPSTREAM_MAX_RETRIES="0")
    echo = f"Invalid content in message: '{PROMPT}'"
    fake_openai.queue(Script(status=400, error_code="invalid_prompt", error_text=echo))
    refused = await chat_stream(target(app), new_user(), PROMPT)
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION, refused
    fake_openai.queue(Script(pieces=["a", "b", "c"], error_after=2, error_text=echo))
    broken = await chat_stream(target(app), new_user(), PROMPT)
    assert broken.code == grpc.StatusCode.UNAVAILABLE, broken
    logged = logged_text(caplog)
    assert "upstream answered HTTP 400 (invalid_prompt)" in logged
    assert "upstream error mid-stream" in logged
    assert PROMPT not in logged and "Invalid content" not in logged
