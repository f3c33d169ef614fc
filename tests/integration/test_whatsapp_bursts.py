"""Bursts: messages of one sender in a quick row get one answer (the default 1500 ms window)."""

from __future__ import annotations

import asyncio
import time

from tests.fakes.openai import FakeOpenAI, Script
from tests.fakes.twilio import FakeTwilio, inbound_form, new_sender
from tests.integration.test_limits import pool, wait_closed
from tests.integration.test_whatsapp import deliver, started, twilio_env


def burst_env(fake: FakeTwilio) -> dict[str, str]:
    env = twilio_env(fake)
    del env["WHATSAPP_BURST_WINDOW_MS"]  # the default window
    return env


async def test_three_quick_messages_get_one_answer_and_each_sid_is_recorded(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    app = await started(start_app, **burst_env(fake_twilio))
    assert app.settings.whatsapp.burst_window_ms == 1500
    sender = new_sender()
    forms = [inbound_form(sender, text) for text in ("oi", "tudo bem?", "me ajuda com uma coisa")]
    for form in forms:
        assert (await deliver(app, form)).status_code == 200
        await asyncio.sleep(0.2)
    # A redelivery of one of them, inside the burst, adds nothing.
    assert (await deliver(app, forms[1])).status_code == 200
    [post] = await fake_twilio.wait_for(sender, 1)
    await wait_closed(app, sender, 3)
    assert post.form["Body"] == "You said: oi\ntudo bem?\nme ajuda com uma coisa"
    assert len(fake_openai.requests) == 1
    rows = await pool(app).fetch(
        "SELECT id, message_id, status, answered_by, parts FROM inbound_messages"
        " WHERE channel = 'whatsapp' AND sender = $1 ORDER BY id", sender)
    assert [r["message_id"] for r in rows] == [f["MessageSid"] for f in forms]
    assert [r["status"] for r in rows] == ["done"] * 3
    assert [r["answered_by"] for r in rows] == [None, rows[0]["id"], rows[0]["id"]]
    assert rows[0]["parts"] == [post.form["Body"]]
    [chat] = (await app.chats.chats(sender)).chats
    assert chat.message_count == 2  # one user message, one answer


async def test_a_lone_message_waits_no_longer_than_the_window(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    """Stated bound from the issue: the window (1.5 s), plus one second of slack for load."""
    app = await started(start_app, **burst_env(fake_twilio))
    sender = new_sender()
    acknowledged = time.monotonic()
    assert (await deliver(app, inbound_form(sender, "alone"))).status_code == 200
    await fake_twilio.wait_for(sender, 1)
    asked = fake_openai.requests[0].at
    assert asked - acknowledged < 1.5 + 1.0


async def test_a_message_after_the_turn_started_waits_for_the_next_turn(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    app = await started(start_app, **burst_env(fake_twilio))
    fake_openai.queue(Script(first_delay=1.0))
    sender = new_sender()
    assert (await deliver(app, inbound_form(sender, "first"))).status_code == 200
    for _ in range(100):
        if fake_openai.requests:
            break
        await asyncio.sleep(0.05)
    assert (await deliver(app, inbound_form(sender, "late"))).status_code == 200
    posts = await fake_twilio.wait_for(sender, 2)
    assert [p.form["Body"] for p in posts] == ["You said: first", "You said: late"]
    await wait_closed(app, sender, 2)
    assert len(fake_openai.requests) == 2


async def test_a_reset_is_never_merged_into_a_burst(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    from chatms.service.inbound import RESET_REPLY

    app = await started(start_app, **burst_env(fake_twilio))
    sender = new_sender()
    for text in ("one", "two", "/reset", "three"):
        assert (await deliver(app, inbound_form(sender, text))).status_code == 200
    posts = await fake_twilio.wait_for(sender, 3)
    await wait_closed(app, sender, 4)
    assert [p.form["Body"] for p in posts] == ["You said: one\ntwo", RESET_REPLY,
                                              "You said: three"]
