"""Voice notes, photos, the typing indicator and the blocklist, through the fake Twilio."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import httpx
from PIL import Image

from chatms.service.inbound import QUOTA_REPLY
from chatms.service.inbound_media import (
    FETCH_FAILED_REPLY,
    TOO_LONG_REPLY,
    TRANSCRIBE_FAILED_REPLY,
)
from tests.fakes.openai import FakeOpenAI, Script
from tests.fakes.twilio import FakeTwilio, inbound_form, new_sender
from tests.integration.test_history import unary
from tests.integration.test_limits import pool, wait_closed
from tests.integration.test_whatsapp import deliver, started, twilio_env
from tests.support import AUTH_TOKEN

OGG = b"OggS\x00\x02" + bytes(range(256)) * 64


def jpeg(width: int = 1024, height: int = 768) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


async def test_voice_note_is_transcribed_and_answered_once(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    # Titles off: their tokens would be counted too, whenever the background job ends.
    app = await started(start_app, **twilio_env(fake_twilio, TITLES_ENABLED="false"))
    sender = new_sender()
    fake_openai.transcripts.append("qual a capital do Brasil")
    url = fake_twilio.add_media("audio/ogg", OGG)
    form = inbound_form(sender, "", media=[(url, "audio/ogg")])
    assert (await deliver(app, form)).status_code == 200
    [post] = await fake_twilio.wait_for(sender, 1)
    assert post.form["Body"] == "You said: qual a capital do Brasil"
    [heard] = fake_openai.transcriptions
    assert (heard.model, heard.filename, heard.audio) == (
        "gpt-4o-mini-transcribe", "voice-note.ogg", OGG)
    assert fake_twilio.hosts.cdn_saw_credentials == 0
    await wait_closed(app, sender, 1)
    [chat] = (await app.chats.chats(sender)).chats
    user = (await app.chats.history(sender, chat.id))[0]  # the system message is apart
    assert user.content == "qual a capital do Brasil"
    [marker] = user.attachments
    assert (marker.kind, marker.content_type, marker.size) == ("voice", "audio/ogg", len(OGG))
    assert url.endswith(marker.ref)
    async with httpx.AsyncClient() as http:  # the HTTP history shows the marker too
        shown = (await http.get(
            f"http://127.0.0.1:{app.settings.server.web_port}/chats/{chat.id}",
            params={"user_id": sender}, headers={"authorization": AUTH_TOKEN})).json()
    assert shown["messages"][0]["attachments"] == [
        {"kind": "voice", "content_type": "audio/ogg", "size": len(OGG), "ref": marker.ref}]
    assert "attachments" not in shown["messages"][1]
    got = await unary(app, "GetChat", user_id=sender, chat_id=chat.id)  # and gRPC (grpcio)
    [asked] = [m for m in got.messages if m.role == "user"]
    [seen] = asked.attachments
    assert (seen.kind, seen.content_type, seen.size, seen.ref) == (
        "voice", "audio/ogg", len(OGG), marker.ref)
    assert all(not m.attachments for m in got.messages if m.role != "user")
    spent = await pool(app).fetchval("SELECT tokens FROM user_usage WHERE user_id = $1", sender)
    assert spent == 25 + 11 + 6  # transcription (20 + 5 words) and the turn, as reported


async def test_failed_fetch_and_failed_transcription_are_answered_politely(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    app = await started(start_app, **twilio_env(fake_twilio, WHATSAPP_MAX_MEDIA_BYTES="4096"))
    sender = new_sender()
    gone = fake_twilio.add_media("audio/ogg", OGG, status=404)
    fake_openai.transcripts.append(500)
    failing = fake_twilio.add_media("audio/ogg", OGG[:2000])
    huge = fake_twilio.add_media("audio/ogg", OGG)  # 16 KiB, over the 4 KiB limit
    for url in (gone, failing, huge):
        form = inbound_form(sender, "", media=[(url, "audio/ogg")])
        assert (await deliver(app, form)).status_code == 200
    posts = await fake_twilio.wait_for(sender, 3)
    assert [p.form["Body"] for p in posts] == [
        FETCH_FAILED_REPLY, TRANSCRIBE_FAILED_REPLY, TOO_LONG_REPLY]
    await wait_closed(app, sender, 3)
    assert fake_openai.requests == [] and len(fake_openai.transcriptions) == 1
    rows = await pool(app).fetch("SELECT status, parts FROM inbound_messages WHERE sender = $1"
                                " ORDER BY id", sender)
    assert [(r["status"], len(r["parts"])) for r in rows] == [("done", 1)] * 3


async def test_photo_with_caption_reaches_the_model_as_image_content(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    app = await started(start_app, **twilio_env(fake_twilio, MODEL="gpt-4o"))
    sender = new_sender()
    photo = jpeg()
    url = fake_twilio.add_media("image/jpeg", photo)
    form = inbound_form(sender, "what colour is this?", media=[(url, "image/jpeg")])
    assert (await deliver(app, form)).status_code == 200
    [post] = await fake_twilio.wait_for(sender, 1)
    assert post.form["Body"] == "You said: what colour is this? [1 image(s)]"
    content = fake_openai.requests[0].body["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "what colour is this?"}
    assert content[1]["type"] == "image_url"
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,/9j/")
    # Later turns see the placeholder only: the photo is sent once, and not stored.
    await wait_closed(app, sender, 1)
    assert (await deliver(app, inbound_form(sender, "thanks"))).status_code == 200
    await fake_twilio.wait_for(sender, 2)
    later = [m["content"] for m in fake_openai.requests[1].body["messages"]]
    assert later[1:] == ["[image] what colour is this?",
                         "You said: what colour is this? [1 image(s)]", "thanks"]
    [chat] = (await app.chats.chats(sender)).chats
    history = await app.chats.history(sender, chat.id)
    assert history[0].attachments[0].kind == "image"
    assert history[0].tokens < 20  # the placeholder's tokens, not the image's 765


async def test_typing_is_shown_and_its_failure_changes_nothing(
    start_app, fake_twilio: FakeTwilio
) -> None:
    app = await started(start_app, **twilio_env(fake_twilio))
    sender = new_sender()
    first = inbound_form(sender, "hello")
    assert (await deliver(app, first)).status_code == 200
    await fake_twilio.wait_for(sender, 1)
    [typing] = fake_twilio.typing
    assert typing.form == {"channel": "whatsapp", "messageId": first["MessageSid"]}
    fake_twilio.fail_typing(500, 500)
    assert (await deliver(app, inbound_form(sender, "again"))).status_code == 200
    posts = await fake_twilio.wait_for(sender, 2)
    assert [p.form["Body"] for p in posts] == ["You said: hello", "You said: again"]


async def test_blocked_numbers_get_nothing_and_only_the_arrival_is_stored(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    sender = new_sender()
    app = await started(start_app, **twilio_env(
        fake_twilio, WHATSAPP_BLOCKED_NUMBERS="+1 555 0100, " + sender.removeprefix("whatsapp:")))
    form = inbound_form(sender, "let me in")
    assert (await deliver(app, form)).status_code == 200
    assert (await deliver(app, form)).status_code == 200  # a redelivery too
    other = new_sender()
    assert (await deliver(app, inbound_form(other, "hi"))).status_code == 200
    await fake_twilio.wait_for(other, 1)  # the worker ran; the blocked one got nothing
    assert fake_twilio.sent_to(sender) == [] and len(fake_openai.requests) == 1
    assert await pool(app).fetchval(
        "SELECT count(*) FROM inbound_messages WHERE sender = $1", sender) == 0
    arrivals = await pool(app).fetch(
        "SELECT * FROM blocked_arrivals WHERE sender = $1", sender)
    assert [r["message_id"] for r in arrivals] == [form["MessageSid"]]
    assert set(arrivals[0].keys()) == {"channel", "message_id", "sender", "received_at"}


async def continued_chat(app: Any, sender: str, model: str | None = None) -> str:
    """A chat of `sender` (started as a web turn naming `model` starts one), made the chat
    their WhatsApp messages continue."""
    async with app.chats.turn(sender, None, "hello", "test", model=model) as turn:
        async for _ in turn:
            pass
    await pool(app).execute(
        "INSERT INTO channel_senders (channel, sender, chat_id) VALUES ('whatsapp', $1, $2)",
        sender, uuid.UUID(turn.chat_id))
    return str(turn.chat_id)


async def photo_on_chat(start_app: Any, fake_twilio: FakeTwilio, default: str, chat: str,
                        caption: str) -> str:
    """Under MODEL=`default`, a sender's chat on the model `chat` (see `continued_chat`),
    then a photo with `caption` from them. Returns the reply they got."""
    app = await started(start_app, **twilio_env(
        fake_twilio, MODEL=default, MODELS=f"{chat}=16385", TITLES_ENABLED="false"))
    sender = new_sender()
    await continued_chat(app, sender, chat)
    url = fake_twilio.add_media("image/jpeg", jpeg())
    assert (await deliver(app, inbound_form(sender, caption, media=[(url, "image/jpeg")]))
            ).status_code == 200
    [post] = await fake_twilio.wait_for(sender, 1)
    return str(post.form["Body"])


async def test_a_photo_on_a_text_only_chat_is_not_read_under_a_vision_default(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    """A chat keeps the model it was started with: whether a photo can be read is that
    model's question, not the default MODEL's."""
    reply = await photo_on_chat(start_app, fake_twilio, "gpt-4o", "gpt-3.5-turbo", "what?")
    assert reply.startswith("Sorry, I can only read text") and "photos" not in reply
    assert len(fake_openai.requests) == 1  # the chat's first turn only


async def test_a_photo_on_a_vision_chat_is_read_under_a_text_only_default(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    reply = await photo_on_chat(start_app, fake_twilio, "gpt-3.5-turbo", "gpt-4o", "and this?")
    assert reply == "You said: and this? [1 image(s)]"
    asked = fake_openai.requests[-1].body
    assert asked["model"] == "gpt-4o"
    assert asked["messages"][-1]["content"][0] == {"type": "text", "text": "and this?"}
    assert asked["messages"][-1]["content"][1]["type"] == "image_url"


async def test_a_voice_note_tried_again_behind_a_busy_chat_is_transcribed_once(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    app = await started(start_app, **twilio_env(fake_twilio, TITLES_ENABLED="false"))
    sender = new_sender()
    chat_id = await continued_chat(app, sender)
    fake_openai.queue(Script(pieces=["a", "b", "c", "d"], gap=0.5))

    async def slow_turn() -> None:  # the same chat, busy for about two seconds
        async with app.chats.turn(sender, chat_id, "a slow one", "test") as turn:
            async for _ in turn:
                started_streaming.set()

    started_streaming = asyncio.Event()
    busy = asyncio.create_task(slow_turn())
    await asyncio.wait_for(started_streaming.wait(), 10)
    fake_openai.transcripts.append("qual a capital do Brasil")
    url = fake_twilio.add_media("audio/ogg", OGG)
    assert (await deliver(app, inbound_form(sender, "", media=[(url, "audio/ogg")]))
            ).status_code == 200
    await busy
    [post] = await fake_twilio.wait_for(sender, 1, within=20)
    assert post.form["Body"] == "You said: qual a capital do Brasil"
    assert len(fake_openai.transcriptions) == 1  # the job ran twice: first the chat was busy


async def test_a_photo_the_daily_quota_cannot_cover_is_refused_before_the_upstream(
    start_app, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
) -> None:
    """A 1024x768 photo costs gpt-4o 765 prompt tokens: with 500 left, the turn would pass
    the quota, so it is refused (the words alone would fit)."""
    app = await started(start_app, **twilio_env(
        fake_twilio, MODEL="gpt-4o", WHATSAPP_DAILY_TOKENS="500", TITLES_ENABLED="false"))
    sender = new_sender()
    url = fake_twilio.add_media("image/jpeg", jpeg())
    assert (await deliver(app, inbound_form(sender, "what is it?", media=[(url, "image/jpeg")]))
            ).status_code == 200
    [post] = await fake_twilio.wait_for(sender, 1)
    assert post.form["Body"] == QUOTA_REPLY
    assert fake_openai.requests == []
