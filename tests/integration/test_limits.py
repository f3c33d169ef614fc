"""Per-user limits at every door: refused with the right status, and never sent upstream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx

from chatms.domain.limits import DAILY_TOKENS, RATE
from chatms.service.inbound import QUOTA_REPLY, RATE_REPLY
from tests.fakes.openai import FakeOpenAI, Script
from tests.fakes.twilio import FakeTwilio, inbound_form, new_sender
from tests.integration.grpc_client import chat_stream
from tests.integration.test_whatsapp import deliver, started, twilio_env
from tests.support import AUTH_TOKEN, grpc_target, new_user


def pool(app: object) -> Any:
    """The app's own PostgreSQL pool, to look behind the service's back."""
    return app.storage.database.pool  # type: ignore[attr-defined]


async def clear_of_a_minute_boundary() -> None:
    """The rate is counted per UTC minute: start a rate test at least 10 s before the next one,
    so that its messages all fall in one window (waits at most 10 s)."""
    second = datetime.now(UTC).second + datetime.now(UTC).microsecond / 1e6
    if second > 50:
        await asyncio.sleep(60.5 - second)


def refusals(app: object, limit: str, transport: str) -> float:
    value = app.metrics.registry.get_sample_value(  # type: ignore[attr-defined]
        "chatms_limit_refusals_total", {"limit": limit, "transport": transport})
    return value or 0.0


async def test_limits_are_off_by_default_on_grpc_and_http(start_app, fake_openai: FakeOpenAI
                                                          ) -> None:
    app = await start_app()
    user = new_user()
    results = [await chat_stream(grpc_target(app), user, f"m{i}") for i in range(25)]
    assert {r.code for r in results} == {grpc.StatusCode.OK}
    assert app.settings.whatsapp.messages_per_minute == 20  # on by default for WhatsApp
    assert app.settings.whatsapp.daily_tokens == 200_000


async def test_grpc_rate_limit_is_resource_exhausted_without_upstream_call(
    start_app, fake_openai: FakeOpenAI
) -> None:
    app = await start_app(USER_MESSAGES_PER_MINUTE="2")
    user, other = new_user(), new_user()
    await clear_of_a_minute_boundary()
    first = [await chat_stream(grpc_target(app), user, f"m{i}") for i in range(2)]
    refused = await chat_stream(grpc_target(app), user, "one too many")
    assert [r.code for r in first] == [grpc.StatusCode.OK] * 2
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 messages per minute" in refused.details and "retry in" in refused.details
    assert (await chat_stream(grpc_target(app), other, "me too")).code == grpc.StatusCode.OK
    assert len(fake_openai.requests) == 3  # the refused message never went upstream
    assert refusals(app, RATE, "grpc") == 1


async def test_http_quota_is_429_with_retry_after_without_upstream_call(
    start_app, fake_openai: FakeOpenAI
) -> None:
    # Titles off: their tokens count too (see the test below), and would make this one race.
    app = await start_app(USER_DAILY_TOKENS="20", TITLES_ENABLED="false")
    user = new_user()
    url = f"http://127.0.0.1:{app.settings.server.web_port}/chat"
    async with httpx.AsyncClient(headers={"authorization": AUTH_TOKEN}, timeout=20) as http:
        for _ in range(50):  # the HTTP listener binds in the background
            try:
                ok = await http.post(url, json={"user_id": user, "user_message": "hi there"})
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        assert ok.status_code == 200  # spends 11 prompt + 3 completion tokens (fake usage)
        # 6 tokens left: less than this turn's prompt (the whole chat so far), so refused.
        refused = await http.post(url, json={"user_id": user, "user_message": "more",
                                             "chat_id": ok.json()["chat_id"]})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert "midnight UTC" in refused.json()["error"]["message"]
    assert 0 < int(refused.headers["retry-after"]) <= 86_400
    assert len(fake_openai.requests) == 1
    assert refusals(app, DAILY_TOKENS, "http") == 1


async def test_one_turn_cannot_pass_the_daily_quota(start_app, fake_openai: FakeOpenAI) -> None:
    """A turn's answer may take only what the quota leaves after its prompt; a prompt the
    quota cannot cover is refused before anything goes upstream, and the chat stays free."""
    app = await start_app(USER_DAILY_TOKENS="1000", TITLES_ENABLED="false")
    user = new_user()
    first = await chat_stream(grpc_target(app), user, "hi there")
    assert first.code == grpc.StatusCode.OK, first.details
    asked = fake_openai.requests[0].body["max_tokens"]
    assert 1000 - 40 < asked < 1000  # not MAX_TOKENS (1024): 1000 less this turn's prompt
    await pool(app).execute("UPDATE user_usage SET tokens = 990 WHERE user_id = $1", user)
    refused = await chat_stream(grpc_target(app), user, "and more", first.chat_id)
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "10 tokens left" in refused.details and "midnight UTC" in refused.details
    assert len(fake_openai.requests) == 1
    assert refusals(app, DAILY_TOKENS, "grpc") == 1
    await pool(app).execute("UPDATE user_usage SET tokens = 0 WHERE user_id = $1", user)
    again = await chat_stream(grpc_target(app), user, "and more", first.chat_id)
    assert again.code == grpc.StatusCode.OK, again.details  # the chat was not left leased


async def test_whatsapp_is_told_once_per_window_and_nothing_goes_upstream(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    app = await started(start_app, **twilio_env(fake_twilio, WHATSAPP_MESSAGES_PER_MINUTE="2"))
    sender = new_sender()
    await clear_of_a_minute_boundary()
    for i in range(5):
        assert (await deliver(app, inbound_form(sender, f"msg {i}"))).status_code == 200
    posts = await fake_twilio.wait_for(sender, 3)
    await wait_closed(app, sender, 5)
    bodies = [p.form["Body"] for p in fake_twilio.sent_to(sender)]
    assert bodies == ["You said: msg 0", "You said: msg 1", RATE_REPLY]
    assert len(posts) == 3 and len(fake_openai.requests) == 2
    assert refusals(app, RATE, "whatsapp") == 3


async def test_whatsapp_daily_quota_counts_every_token(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    # 16: the first turn's prompt (15 tokens as counted here) fits, with room for 1 more.
    app = await started(start_app, **twilio_env(fake_twilio, WHATSAPP_DAILY_TOKENS="16",
                                                TITLES_ENABLED="false"))
    sender = new_sender()
    fake_openai.queue(Script(pieces=["short"]))
    for text in ("first", "second", "third"):
        assert (await deliver(app, inbound_form(sender, text))).status_code == 200
    await fake_twilio.wait_for(sender, 2)
    await wait_closed(app, sender, 3)
    bodies = [p.form["Body"] for p in fake_twilio.sent_to(sender)]
    assert bodies == ["short", QUOTA_REPLY]  # the third: told already, answered by silence
    assert len(fake_openai.requests) == 1
    assert fake_openai.requests[0].body["max_tokens"] == 1  # what the quota left
    spent = await pool(app).fetchval("SELECT tokens FROM user_usage WHERE user_id = $1", sender)
    assert spent == 12  # 11 prompt + 1 completion, as the fake reported them


async def test_title_tokens_count_against_the_quota(start_app, fake_openai: FakeOpenAI) -> None:
    """The title made after a new chat's first turn is spent for its owner too."""
    app = await start_app(USER_DAILY_TOKENS="100000")
    user = new_user()
    assert (await chat_stream(grpc_target(app), user, "hello there")).code == grpc.StatusCode.OK
    turn = 11 + 3  # the fake's reported usage for "You said: hello there"
    spent = 0
    for _ in range(200):  # bounded: 10 s for the background title job
        spent = await pool(app).fetchval(
            "SELECT tokens FROM user_usage WHERE user_id = $1", user) or 0
        if spent > turn:
            break
        await asyncio.sleep(0.05)
    assert len(fake_openai.titles) == 1 and spent > turn


async def wait_closed(app: object, sender: str, count: int, within: float = 15) -> None:
    """Until `count` messages of `sender` are closed (done or failed); fails on timeout."""
    for _ in range(int(within / 0.05)):
        closed = await pool(app).fetchval(  # type: ignore[attr-defined]
            "SELECT count(*) FROM inbound_messages WHERE sender = $1"
            " AND status IN ('done', 'failed')", sender)
        if closed >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{closed} of {count} messages of {sender} closed")
