"""A WhatsApp answer is retried through a Twilio outage until the delivery deadline, and a
failure past it shows in the chat's history and in a metric."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.fakes.twilio import FakeTwilio, inbound_form, new_sender
from tests.integration.http_client import AUTH, base_url
from tests.integration.test_whatsapp import deliver, started, stored, twilio_env


async def until_settled(app: Any, sid: str, within: float = 20) -> Any:
    for _ in range(int(within / 0.1)):
        row = await stored(app, sid)
        if row["status"] in ("done", "failed"):
            return row
        await asyncio.sleep(0.1)
    raise AssertionError(f"message still {row['status']} after {within}s: {dict(row)}")


async def history_and_metrics(app: Any, sender: str) -> tuple[list[dict[str, Any]], str]:
    [chat] = (await app.chats.chats(sender)).chats
    async with httpx.AsyncClient(base_url=base_url(app), timeout=10) as http:
        detail = (await http.get(f"/chats/{chat.id}", params={"user_id": sender},
                                 headers=AUTH)).json()
        metrics = (await http.get("/metrics")).text
    return detail["messages"], metrics


async def test_an_outage_longer_than_the_old_five_attempts_is_ridden_out(
    start_app, fake_twilio: FakeTwilio
) -> None:
    """24 failed sends (six rounds of four) and then Twilio recovers: the answer goes out once."""
    app = await started(start_app, **twilio_env(
        fake_twilio, WHATSAPP_DELIVERY_DEADLINE="60", WHATSAPP_RETRY_MAX_SECONDS="0.05"))
    sender = new_sender()
    fake_twilio.fail_next(*[503] * 24)
    form = inbound_form(sender, "are you there")
    assert (await deliver(app, form)).status_code == 200
    row = await until_settled(app, form["MessageSid"])
    assert row["status"] == "done" and row["failures"] >= 5
    assert [p.form["Body"] for p in fake_twilio.sent_to(sender)] == ["You said: are you there"]
    messages, _ = await history_and_metrics(app, sender)
    assert [m.get("delivery") for m in messages] == [None, "delivered"]


async def test_past_the_deadline_the_failure_is_in_the_history_and_a_metric(
    start_app, fake_twilio: FakeTwilio
) -> None:
    """Twilio never recovers: retried until the deadline, then failed, visibly."""
    app = await started(start_app, **twilio_env(
        fake_twilio, WHATSAPP_DELIVERY_DEADLINE="3", WHATSAPP_RETRY_MAX_SECONDS="0.05"))
    sender = new_sender()
    fake_twilio.fail_next(*[503] * 100_000)
    form = inbound_form(sender, "hello?")
    assert (await deliver(app, form)).status_code == 200
    try:
        row = await until_settled(app, form["MessageSid"])
    finally:
        fake_twilio.failures.clear()
    assert row["status"] == "failed" and row["failures"] >= 2
    assert "not delivered within 3s" in row["last_error"] and "HTTP 503" in row["last_error"]
    assert fake_twilio.sent_to(sender) == []
    messages, metrics = await history_and_metrics(app, sender)
    assert messages[-1]["role"] == "assistant" and messages[-1]["delivery"] == "failed"
    assert messages[-1]["content"] == "You said: hello?"
    assert 'chatms_whatsapp_undelivered_total{reason="deadline"} 1.0' in metrics
