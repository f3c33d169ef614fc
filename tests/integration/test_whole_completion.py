"""The non-streamed completion call (summaries, titles) against the loopback fake OpenAI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatms.adapters.openai_whole import OpenAIWholeClient
from chatms.adapters.upstream_http import build_http_client
from chatms.config import UpstreamSettings
from chatms.domain.context import summary_prompt, title_prompt
from chatms.domain.errors import UpstreamRejected, UpstreamUnavailable
from chatms.domain.model import Usage
from tests.fakes.openai import API_KEY, FakeOpenAI, WholeScript


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAIWholeClient]:
    settings = UpstreamSettings(base_url=fake_openai.base_url, api_key=API_KEY)
    http = build_http_client(settings)
    try:
        yield OpenAIWholeClient(http, settings)
    finally:
        await http.aclose()


async def test_a_title_call_is_one_json_completion(client, fake_openai) -> None:
    answer = await client.complete_whole(
        "gpt-4o-mini", title_prompt("Plan a trip to Lisbon in May", "Sure!"), 20)
    assert answer.text == '"Plan a trip to"' and answer.finish_reason == "stop"
    assert isinstance(answer.usage, Usage) and answer.usage.completion_tokens == 4
    [seen] = fake_openai.titles
    assert "stream" not in seen.body and seen.body["max_tokens"] == 20
    assert seen.headers["accept"] == "application/json" and not fake_openai.requests


async def test_summary_calls_are_told_from_titles_and_turns(client, fake_openai) -> None:
    from chatms.domain.context import FoldItem, SummaryPlan

    plan = SummaryPlan(None, (FoldItem(1, "user", "about topic-7", 5),), 1, 100)
    answer = await client.complete_whole("gpt-4o-mini", summary_prompt(plan), 100)
    assert answer.text == "Summary: topic-7"
    assert [s.kind for s in fake_openai.whole_requests] == ["summary"]


async def test_failures_map_to_upstream_errors(client, fake_openai) -> None:
    fake_openai.queue_whole("title", WholeScript(status=500), WholeScript(status=400),
                            WholeScript(null_content=True), WholeScript(delay=2))
    prompt = title_prompt("q", "a")
    with pytest.raises(UpstreamUnavailable):
        await client.complete_whole("m", prompt, 10)
    with pytest.raises(UpstreamRejected):
        await client.complete_whole("m", prompt, 10)
    assert (await client.complete_whole("m", prompt, 10)).text == ""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.complete_whole("m", prompt, 10)


async def test_unstorable_text_is_made_storable(client, fake_openai) -> None:
    fake_openai.queue_whole("title", WholeScript(text="Bad\x00title \ud800 here"))
    answer = await client.complete_whole("m", title_prompt("q", "a"), 10)
    assert answer.text == "Bad\ufffdtitle \ufffd here"
