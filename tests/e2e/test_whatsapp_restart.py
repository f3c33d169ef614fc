"""WhatsApp exactly once across a crash of the real `chatms serve` process."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx

from tests.fakes.openai import FakeOpenAI, Script
from tests.fakes.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, inbound_form, new_sender, sign


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _row(database_url: str, message_sid: str) -> asyncpg.Record:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchrow(
            "SELECT status, parts_sent FROM inbound_messages"
            " WHERE channel = 'whatsapp' AND message_id = $1", message_sid)
    finally:
        await conn.close()


def test_answer_sent_once_after_sigkill_and_restart(
    serve, database_url: str, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    """A message acknowledged just before SIGKILL is answered exactly once after a restart."""
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "TWILIO_API_BASE_URL": fake_twilio.base_url, "WHATSAPP_CLAIM_SECONDS": "2",
           "WHATSAPP_BURST_WINDOW_MS": "0"}
    first = serve(**env)
    fake_openai.queue(Script(first_delay=5))  # the kill lands while the answer is awaited
    sender = new_sender()
    form = inbound_form(sender, "survive this")
    url = first.http_url + "/webhooks/twilio/whatsapp"
    reply = httpx.post(url, data=form, headers={"X-Twilio-Signature": sign(url, form)})
    assert reply.status_code == 200
    wait_until(lambda: len(fake_openai.requests) == 1, 15, "the turn to reach the upstream")
    assert first.proc is not None
    first.proc.kill()  # SIGKILL: no shutdown code runs
    first.proc.wait(10)
    assert fake_twilio.sent_to(sender) == []

    serve(**env)
    wait_until(lambda: len(fake_twilio.sent_to(sender)) >= 1, 30, "the answer after restart")
    # Once its row is done the message is never claimed again (and the first process is
    # dead): whatever was sent by then is all that will ever be sent.
    wait_until(lambda: asyncio.run(_row(database_url, form["MessageSid"]))["status"] == "done",
               15, "the message's row to be done")
    assert [p.form["Body"] for p in fake_twilio.sent_to(sender)] == ["You said: survive this"]
    row = asyncio.run(_row(database_url, form["MessageSid"]))
    assert (row["status"], row["parts_sent"]) == ("done", 1)


def test_sigterm_lets_the_answer_in_flight_go_out(
    serve, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    """SIGTERM during a WhatsApp turn sends its answer within the grace period, then exits 0."""
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "TWILIO_API_BASE_URL": fake_twilio.base_url, "WHATSAPP_BURST_WINDOW_MS": "0"}
    proc = serve(**env)
    fake_openai.queue(Script(first_delay=1))
    sender = new_sender()
    form = inbound_form(sender, "finish me")
    url = proc.http_url + "/webhooks/twilio/whatsapp"
    assert httpx.post(url, data=form, headers={"X-Twilio-Signature": sign(url, form)}).is_success
    wait_until(lambda: len(fake_openai.requests) == 1, 15, "the turn to reach the upstream")
    assert proc.terminate() == 0
    assert [p.form["Body"] for p in fake_twilio.sent_to(sender)] == ["You said: finish me"]
    assert "chatms stopped" in proc.log()


def test_voice_note_answered_once_after_sigkill_mid_turn(
    serve, database_url: str, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    """A voice note, acknowledged and transcribed, then SIGKILL while the model is asked:
    after a restart it is answered exactly once (with the default burst window)."""
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "TWILIO_API_BASE_URL": fake_twilio.base_url,
           "TWILIO_MESSAGING_BASE_URL": fake_twilio.messaging_base_url,
           "WHATSAPP_CLAIM_SECONDS": "2"}
    first = serve(**env)
    fake_openai.queue(Script(first_delay=5))  # the kill lands while the answer is awaited
    fake_openai.transcripts.extend(["remember the milk", "remember the milk"])
    sender = new_sender()
    voice = b"OggS\x00\x02" + bytes(range(256)) * 32
    media = fake_twilio.add_media("audio/ogg", voice)
    form = inbound_form(sender, "", media=[(media, "audio/ogg")])
    url = first.http_url + "/webhooks/twilio/whatsapp"
    reply = httpx.post(url, data=form, headers={"X-Twilio-Signature": sign(url, form)})
    assert reply.status_code == 200
    wait_until(lambda: len(fake_openai.requests) == 1, 15, "the turn to reach the upstream")
    assert len(fake_openai.transcriptions) == 1
    assert first.proc is not None
    first.proc.kill()
    first.proc.wait(10)
    assert fake_twilio.sent_to(sender) == []

    serve(**env)
    wait_until(lambda: len(fake_twilio.sent_to(sender)) >= 1, 30, "the answer after restart")
    row = asyncio.run(_row(database_url, form["MessageSid"]))
    wait_until(lambda: asyncio.run(_row(database_url, form["MessageSid"]))["status"] == "done",
               10, "the message to be closed")
    time.sleep(1.0)  # bounded observation window: a wrong second answer would show up here
    assert [p.form["Body"] for p in fake_twilio.sent_to(sender)] == [
        "You said: remember the milk"]
    row = asyncio.run(_row(database_url, form["MessageSid"]))
    assert (row["status"], row["parts_sent"]) == ("done", 1)
