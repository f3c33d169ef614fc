"""Voice notes, photos, bursts, typing and limits against a real `chatms serve` process."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime

import grpc
import httpx
from PIL import Image

from chatms.service.inbound import RATE_REPLY
from chatms.service.inbound_media import FETCH_FAILED_REPLY, TRANSCRIBE_FAILED_REPLY
from tests.e2e.grpc_sync import chat
from tests.e2e.test_whatsapp_restart import wait_until
from tests.fakes.openai import FakeOpenAI
from tests.fakes.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, inbound_form, new_sender, sign
from tests.support import AUTH_TOKEN as SERVICE_TOKEN
from tests.support import new_user

OGG = b"OggS\x00\x02" + bytes(range(256)) * 32


def _env(fake_twilio: FakeTwilio, **extra: str) -> dict[str, str]:
    return {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_BASE_URL": fake_twilio.base_url,
            "TWILIO_MESSAGING_BASE_URL": fake_twilio.messaging_base_url,
            "MODEL": "gpt-4o", "TITLES_ENABLED": "false", **extra}


def _post(url: str, form: dict[str, str]) -> int:
    return httpx.post(url, data=form, headers={"X-Twilio-Signature": sign(url, form)}).status_code


def _bodies(fake_twilio: FakeTwilio, sender: str, count: int) -> list[str]:
    wait_until(lambda: len(fake_twilio.sent_to(sender)) >= count, 20, f"{count} answers")
    time.sleep(0.5)  # bounded observation window: a wrong extra answer would show up here
    return [p.form["Body"] for p in fake_twilio.sent_to(sender)]


def test_voice_photo_burst_and_typing_through_a_real_process(
    serve, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    proc = serve(**_env(fake_twilio))
    url = proc.http_url + "/webhooks/twilio/whatsapp"

    # A voice note: transcribed and answered once; the typing indicator is shown for it.
    voice = new_sender()
    fake_openai.transcripts.append("bom dia")
    form = inbound_form(voice, "", media=[(fake_twilio.add_media("audio/ogg", OGG),
                                           "audio/ogg")])
    assert _post(url, form) == 200
    assert _bodies(fake_twilio, voice, 1) == ["You said: bom dia"]
    assert form["MessageSid"] in [t.form["messageId"] for t in fake_twilio.typing]
    assert fake_twilio.hosts.cdn_saw_credentials == 0

    # A failed fetch and a failed transcription: polite replies, no chat completion.
    failing = new_sender()
    calls = len(fake_openai.requests)
    fake_openai.transcripts.append(500)
    for media in (fake_twilio.add_media("audio/ogg", OGG, status=404),
                  fake_twilio.add_media("audio/ogg", OGG)):
        assert _post(url, inbound_form(failing, "", media=[(media, "audio/ogg")])) == 200
    assert _bodies(fake_twilio, failing, 2) == [FETCH_FAILED_REPLY, TRANSCRIBE_FAILED_REPLY]
    assert len(fake_openai.requests) == calls

    # A photo with a caption reaches the model as image content.
    photo = new_sender()
    out = io.BytesIO()
    Image.new("RGB", (800, 600), (0, 90, 40)).save(out, "PNG")
    form = inbound_form(photo, "which colour?",
                        media=[(fake_twilio.add_media("image/png", out.getvalue()), "image/png")])
    assert _post(url, form) == 200
    assert _bodies(fake_twilio, photo, 1) == ["You said: which colour? [1 image(s)]"]
    parts = fake_openai.requests[-1].body["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"]

    # Three quick messages (one delivered twice): one answer.
    burst = new_sender()
    forms = [inbound_form(burst, text) for text in ("a", "b", "c")]
    for form in (forms[0], forms[1], forms[1], forms[2]):
        assert _post(url, form) == 200
    assert _bodies(fake_twilio, burst, 1) == ["You said: a\nb\nc"]


def test_limits_refuse_at_every_door_of_a_real_process(
    serve, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    second = datetime.now(UTC).second
    if second > 45:  # the rate is counted per UTC minute: keep this test inside one
        time.sleep(61 - second)
    proc = serve(**_env(fake_twilio, USER_MESSAGES_PER_MINUTE="1",
                        WHATSAPP_MESSAGES_PER_MINUTE="1"))
    user = new_user()
    assert chat(proc.grpc_target, user, "first")
    try:
        chat(proc.grpc_target, user, "second")
        raise AssertionError("the second gRPC message was not refused")
    except grpc.RpcError as refused:
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reply = httpx.post(proc.http_url + "/chat", json={"user_id": user, "user_message": "third"},
                       headers={"authorization": SERVICE_TOKEN}, timeout=20)
    assert reply.status_code == 429 and int(reply.headers["retry-after"]) >= 1
    sender = new_sender()
    url = proc.http_url + "/webhooks/twilio/whatsapp"
    for text in ("one", "two", "three"):
        assert _post(url, inbound_form(sender, text)) == 200
        time.sleep(1.7)  # apart: no burst
    assert _bodies(fake_twilio, sender, 2) == ["You said: one", RATE_REPLY]
    assert len(fake_openai.requests) == 2  # one gRPC turn, one WhatsApp turn
    metrics = httpx.get(proc.http_url + "/metrics").text
    assert 'chatms_limit_refusals_total{limit="rate",transport="grpc"} 1.0' in metrics
    assert 'chatms_limit_refusals_total{limit="rate",transport="http"} 1.0' in metrics
    assert 'chatms_limit_refusals_total{limit="rate",transport="whatsapp"} 2.0' in metrics
