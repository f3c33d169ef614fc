"""The WhatsApp webhook and worker: signed Twilio posts in, answers out through a fake Twilio."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from chatms.entrypoints.whatsapp import EMPTY_TWIML
from chatms.service.inbound import EMPTY_REPLY, MEDIA_REPLY, RESET_REPLY, UPSTREAM_REPLY
from tests.fakes.openai import FakeOpenAI, Script
from tests.fakes.twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OUR_NUMBER,
    FakeTwilio,
    inbound_form,
    new_sender,
    sign,
)
from tests.support import until

PATH = "/webhooks/twilio/whatsapp"


def twilio_env(fake: FakeTwilio, **extra: str) -> dict[str, str]:
    """WhatsApp through the fake Twilio; one answer per message (no burst window) unless
    a test sets WHATSAPP_BURST_WINDOW_MS itself."""
    return {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_BASE_URL": fake.base_url,
            "TWILIO_MESSAGING_BASE_URL": fake.messaging_base_url,
            "WHATSAPP_BURST_WINDOW_MS": "0", **extra}


def local_url(app: Any) -> str:
    return f"http://127.0.0.1:{app.settings.server.web_port}{PATH}"


async def started(start_app: Any, **env: str) -> Any:
    """An app whose HTTP listener answers (Hypercorn binds in the background)."""
    app = await start_app(**env)
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{app.settings.server.web_port}/healthz"
                if (await client.get(url)).status_code == 200:
                    return app
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError("HTTP listener did not come up")


async def deliver(app: Any, form: dict[str, str], *, signed_url: str | None = None,
                  signature: str | None = None) -> httpx.Response:
    url = local_url(app)
    sig = signature if signature is not None else sign(signed_url or url, form)
    headers = {"X-Twilio-Signature": sig} if sig else {}
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=form, headers=headers)


async def stored(app: Any, message_sid: str) -> Any:
    return await app.storage.database.pool.fetchrow(
        "SELECT status, parts_sent, failures, last_error FROM inbound_messages"
        " WHERE channel = 'whatsapp' AND message_id = $1", message_sid)


async def settled(app: Any, message_sid: str, within: float = 15) -> Any:
    """The message's row once it is done or failed; a row still open then fails the test.

    A settled row is never claimed again: nothing more is sent for it after this.
    """

    async def closed() -> Any:
        row = await stored(app, message_sid)
        return row if row is not None and row["status"] in ("done", "failed") else None

    return await until(closed, f"message {message_sid} to be settled", within)


async def rows_of(app: Any, sender: str) -> int:
    return await app.storage.database.pool.fetchval(
        "SELECT count(*) FROM inbound_messages WHERE channel = 'whatsapp' AND sender = $1", sender)


async def test_normal_exchange(start_app, fake_twilio: FakeTwilio) -> None:
    """A signed message is acknowledged with empty TwiML and answered through the REST API."""
    app = await started(start_app, **twilio_env(fake_twilio))
    sender = new_sender()
    form = inbound_form(sender, "hello there")
    reply = await deliver(app, form)
    assert reply.status_code == 200 and reply.text == EMPTY_TWIML
    assert reply.headers["content-type"].startswith("text/xml")
    [post] = await fake_twilio.wait_for(sender, 1)
    assert post.form == {"From": OUR_NUMBER, "To": sender, "Body": "You said: hello there"}
    row = await settled(app, form["MessageSid"])  # closed right after the send is recorded
    assert (row["status"], row["parts_sent"]) == ("done", 1)
    sid = await app.storage.database.pool.fetchval(
        "SELECT o.provider_id FROM outbound_parts o JOIN inbound_messages m ON m.id = o.inbound_id"
        " WHERE m.channel = 'whatsapp' AND m.message_id = $1", form["MessageSid"])
    assert sid == post.sid
    page = await app.chats.chats(sender)
    assert len(page.chats) == 1 and page.chats[0].message_count == 2


async def test_bad_or_missing_signature_is_refused(start_app, fake_twilio: FakeTwilio) -> None:
    """Behind a proxy only a signature over PUBLIC_BASE_URL counts; others get 403, unstored."""
    app = await started(start_app, **twilio_env(
        fake_twilio, PUBLIC_BASE_URL="https://chat.example.com/"))
    sender = new_sender()
    public = "https://chat.example.com" + PATH
    refused = [
        (inbound_form(sender, "a"), {}),  # signed for the local URL, not the public one
        (inbound_form(sender, "b"), {"signature": ""}),
        (inbound_form(sender, "c"), {"signature": sign(public, {"Body": "x"})}),
        (inbound_form(sender, "d"), {"signature": sign(public, inbound_form(sender, "d"),
                                                       token="other-token")}),
    ]
    for form, how in refused:
        reply = await deliver(app, form, **how)
        assert reply.status_code == 403, reply.text
        assert await stored(app, form["MessageSid"]) is None
    good = inbound_form(sender, "fine")
    assert (await deliver(app, good, signed_url=public)).status_code == 200
    assert (await fake_twilio.wait_for(sender, 1))[0].form["Body"] == "You said: fine"


async def test_wrong_account_or_bad_fields_are_refused(start_app, fake_twilio: FakeTwilio) -> None:
    """A signed message for another account (403) or with a NUL byte (400) is not stored."""
    app = await started(start_app, **twilio_env(fake_twilio))
    form = inbound_form(new_sender(), "hi", account_sid="AC" + "9" * 32)
    reply = await deliver(app, form)
    assert reply.status_code == 403
    assert await stored(app, form["MessageSid"]) is None
    nul = inbound_form(new_sender(), "a\x00b")
    reply = await deliver(app, nul)
    assert reply.status_code == 400 and "NUL" in reply.text
    assert await stored(app, nul["MessageSid"]) is None


async def test_not_configured_is_503(start_app, fake_openai: FakeOpenAI) -> None:
    """Without Twilio credentials the webhook says so with 503 and stores nothing."""
    app = await started(start_app)
    form = inbound_form(new_sender(), "hi")
    reply = await deliver(app, form)
    assert reply.status_code == 503 and "TWILIO_AUTH_TOKEN" in reply.text
    assert await stored(app, form["MessageSid"]) is None
    assert fake_openai.requests == []


async def test_duplicate_message_sid_is_answered_once(
    start_app, fake_twilio: FakeTwilio, fake_openai: FakeOpenAI
) -> None:
    """Redeliveries, one after the other or at the same moment, are acknowledged and ignored."""
    app = await started(start_app, **twilio_env(fake_twilio))
    sender = new_sender()
    first = inbound_form(sender, "once")
    replies = [await deliver(app, first), await deliver(app, first)]
    second = inbound_form(sender, "twice")
    replies += await asyncio.gather(*(deliver(app, second) for _ in range(4)))
    assert [r.status_code for r in replies] == [200] * 6
    await fake_twilio.wait_for(sender, 2)
    # Both rows settled and no third row: no further answer can be sent for this sender.
    for form in (first, second):
        assert (await settled(app, form["MessageSid"]))["status"] == "done"
    assert await rows_of(app, sender) == 2
    posts = fake_twilio.sent_to(sender)
    assert [p.form["Body"] for p in posts] == ["You said: once", "You said: twice"]
    assert len(fake_openai.requests) == 2


async def test_long_answer_arrives_in_ordered_parts(
    start_app, fake_twilio: FakeTwilio, fake_openai: FakeOpenAI
) -> None:
    """A 4000-character answer arrives as ordered parts of at most 1600 characters."""
    app = await started(start_app, **twilio_env(fake_twilio))
    paragraph = ("Sentence number one is here. " * 30).strip()  # 869 characters
    answer = "\n\n".join(f"{i}: {paragraph}" for i in range(4))
    answer = (answer + " " + "tail words " * 200)[:4000]
    fake_openai.queue(Script(pieces=[answer[i:i + 7] for i in range(0, 4000, 7)]))
    sender = new_sender()
    form = inbound_form(sender, "tell me a lot")
    assert (await deliver(app, form)).status_code == 200
    await fake_twilio.wait_for(sender, 4)
    assert (await settled(app, form["MessageSid"]))["parts_sent"] == 4  # and no fifth part
    posts = fake_twilio.sent_to(sender)
    bodies = [p.form["Body"] for p in posts]
    assert all(len(b) <= 1600 for b in bodies)
    assert "".join("".join(bodies).split()) == "".join(answer.split())
    # Two paragraphs do not fit in one part, so each part is one paragraph, in order.
    assert [b[:3] for b in bodies] == ["0: ", "1: ", "2: ", "3: "]
    assert [p.at for p in posts] == sorted(p.at for p in posts)


async def test_reset_starts_a_new_chat(
    start_app, fake_twilio: FakeTwilio, fake_openai: FakeOpenAI
) -> None:
    """/reset ends the active chat with a confirmation; the next message starts a fresh one."""
    app = await started(start_app, **twilio_env(fake_twilio))
    sender = new_sender()
    for n, text in enumerate(["first", "second", "/Reset", "after"], start=1):
        assert (await deliver(app, inbound_form(sender, text))).status_code == 200
        await fake_twilio.wait_for(sender, n)
    bodies = [p.form["Body"] for p in fake_twilio.sent_to(sender)]
    assert bodies == ["You said: first", "You said: second", RESET_REPLY, "You said: after"]
    assert [m["content"] for m in fake_openai.requests[1].body["messages"]][1:] == [
        "first", "You said: first", "second"]
    assert [m["role"] for m in fake_openai.requests[2].body["messages"]] == ["system", "user"]
    chats = (await app.chats.chats(sender)).chats
    assert sorted(c.status for c in chats) == ["active", "ended"]


async def test_media_and_oversized_bodies_get_a_reply_without_upstream(
    start_app, fake_twilio: FakeTwilio, fake_openai: FakeOpenAI
) -> None:
    """With voice notes and photos off, media without text gets today's reply; a body over
    the limit gets a clear reply; neither calls the upstream."""
    app = await started(start_app, **twilio_env(
        fake_twilio, WHATSAPP_MAX_BODY_CHARS="50", WHATSAPP_VOICE_ENABLED="false",
        VISION_MODELS="none"))
    sender = new_sender()
    assert (await deliver(app, inbound_form(sender, "", num_media=1))).status_code == 200
    assert (await deliver(app, inbound_form(sender, "x" * 51))).status_code == 200
    posts = await fake_twilio.wait_for(sender, 2)
    assert posts[0].form["Body"] == MEDIA_REPLY
    assert "51 characters" in posts[1].form["Body"] and "50" in posts[1].form["Body"]
    assert fake_openai.requests == []


async def test_empty_answer_gets_a_reply(
    start_app, fake_twilio: FakeTwilio, fake_openai: FakeOpenAI
) -> None:
    """An empty answer from the model still gets the user a reply, never silence."""
    app = await started(start_app, **twilio_env(fake_twilio))
    fake_openai.queue(Script(pieces=[]))
    sender = new_sender()
    assert (await deliver(app, inbound_form(sender, "say nothing"))).status_code == 200
    [post] = await fake_twilio.wait_for(sender, 1)
    assert post.form["Body"] == EMPTY_REPLY


async def test_rapid_messages_are_answered_in_order(
    start_app, fake_twilio: FakeTwilio, fake_openai: FakeOpenAI
) -> None:
    """Three quick messages are acknowledged at once and answered in order, one turn at a time."""
    app = await started(start_app, **twilio_env(fake_twilio))
    fake_openai.queue(Script(first_delay=1.0))
    sender = new_sender()
    for text in ("one", "two", "three"):
        assert (await deliver(app, inbound_form(sender, text))).status_code == 200
    assert fake_twilio.sent_to(sender) == []  # acknowledged before the slow answer
    posts = await fake_twilio.wait_for(sender, 3)
    assert [p.form["Body"] for p in posts] == ["You said: one", "You said: two",
                                              "You said: three"]
    last = [m["content"] for m in fake_openai.requests[-1].body["messages"]][1:]
    assert last == ["one", "You said: one", "two", "You said: two", "three"]


async def test_twilio_failures_are_retried_or_recorded(
    start_app, fake_twilio: FakeTwilio
) -> None:
    """429 and 5xx are retried until sent; a refusal is recorded on the message."""
    app = await started(start_app, **twilio_env(fake_twilio))
    sender = new_sender()
    fake_twilio.fail_next(429, 500)
    assert (await deliver(app, inbound_form(sender, "retry me"))).status_code == 200
    [post] = await fake_twilio.wait_for(sender, 1)
    assert post.form["Body"] == "You said: retry me" and fake_twilio.attempts == 3

    fake_twilio.fail_next(400)
    refused = inbound_form(sender, "refused")
    assert (await deliver(app, refused)).status_code == 200
    row = await settled(app, refused["MessageSid"])
    assert row["status"] == "failed" and "HTTP 400" in row["last_error"]
    assert len(fake_twilio.sent_to(sender)) == 1


async def test_upstream_failure_gets_an_apology_and_the_chat_goes_on(
    start_app, fake_twilio: FakeTwilio, fake_openai: FakeOpenAI
) -> None:
    """When the model fails the user gets an apology, and the next message continues that chat."""
    app = await started(start_app, **twilio_env(fake_twilio))
    fake_openai.queue(Script(status=500))
    sender = new_sender()
    assert (await deliver(app, inbound_form(sender, "first"))).status_code == 200
    await fake_twilio.wait_for(sender, 1)
    assert (await deliver(app, inbound_form(sender, "second"))).status_code == 200
    posts = await fake_twilio.wait_for(sender, 2)
    assert [p.form["Body"] for p in posts] == [UPSTREAM_REPLY, "You said: second"]
    assert len((await app.chats.chats(sender)).chats) == 1
