"""Twilio media fetching and OpenAI transcription against the loopback fakes' real wire formats."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx
import pytest

from chatms.adapters.transcription import OpenAITranscriber
from chatms.adapters.twilio import TwilioSender
from chatms.adapters.twilio_media import TwilioMediaFetcher
from chatms.config import UpstreamSettings, WhatsAppSettings
from chatms.domain.errors import (
    MediaTooLarge,
    MediaUnavailable,
    UpstreamRejected,
    UpstreamUnavailable,
)
from tests.fakes.openai import API_KEY, FakeOpenAI
from tests.fakes.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

OGG = b"OggS" + bytes(range(256)) * 40  # an Ogg page header, then payload


def twilio(fake: FakeTwilio, **changes: object) -> WhatsAppSettings:
    values: dict[str, object] = {
        "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "api_base_url": fake.base_url,
        "messaging_base_url": fake.messaging_base_url, **changes}
    return replace(WhatsAppSettings(), **values)


def fetcher(http: httpx.AsyncClient, fake: FakeTwilio, max_bytes: int = 1_000_000,
            timeout: float = 10.0) -> TwilioMediaFetcher:
    return TwilioMediaFetcher(twilio(fake, max_media_bytes=max_bytes, media_timeout=timeout),
                              http)


async def test_media_is_fetched_through_the_redirect_without_forwarding_credentials(
    fake_twilio: FakeTwilio,
) -> None:
    url = fake_twilio.add_media("audio/ogg", OGG)
    async with httpx.AsyncClient() as http:
        media = await fetcher(http, fake_twilio).fetch(url, "audio/ogg")
    assert media.data == OGG and media.content_type == "audio/ogg"
    assert fake_twilio.media_auth_failures == 0  # the API host got our credentials
    [cdn] = fake_twilio.hosts.cdn_requests  # the CDN was reached, without them
    assert "authorization" not in cdn.headers and fake_twilio.hosts.cdn_saw_credentials == 0


async def test_credentials_are_never_sent_off_twilio_api_host(fake_twilio: FakeTwilio) -> None:
    """A media URL on another host (or plain http) is not fetched at all."""
    fake_twilio.add_media("audio/ogg", OGG)
    async with httpx.AsyncClient() as http:
        f = fetcher(http, fake_twilio)
        for url in (f"{fake_twilio.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Media/ME1",
                    "https://evil.example/2010-04-01/Media/ME1",
                    "http://api.twilio.com/2010-04-01/Media/ME1",
                    "https://api.twilio.com.evil.example/Media/ME1"):
            with pytest.raises(MediaUnavailable, match="API host"):
                await f.fetch(url, "audio/ogg")
    assert fake_twilio.hosts.cdn_requests == [] and fake_twilio.media_auth_failures == 0


async def test_missing_media_is_unavailable(fake_twilio: FakeTwilio) -> None:
    url = fake_twilio.add_media("audio/ogg", OGG, status=404)
    async with httpx.AsyncClient() as http:
        with pytest.raises(MediaUnavailable, match="HTTP 404"):
            await fetcher(http, fake_twilio).fetch(url, "audio/ogg")


async def test_size_limit_holds_while_streaming(fake_twilio: FakeTwilio) -> None:
    """An endless chunked body is cut at the limit, long before the deadline."""
    url = fake_twilio.add_media("audio/ogg", OGG, endless=True)
    started = time.monotonic()
    async with httpx.AsyncClient() as http:
        with pytest.raises(MediaTooLarge):
            await fetcher(http, fake_twilio, max_bytes=200_000, timeout=20).fetch(url, "audio/ogg")
    assert time.monotonic() - started < 10


async def test_slow_media_meets_the_deadline(fake_twilio: FakeTwilio) -> None:
    url = fake_twilio.add_media("audio/ogg", OGG, stall=5)
    started = time.monotonic()
    async with httpx.AsyncClient() as http:
        with pytest.raises(MediaUnavailable, match="longer than"):
            await fetcher(http, fake_twilio, timeout=0.5).fetch(url, "audio/ogg")
    assert time.monotonic() - started < 3


def transcriber(http: httpx.AsyncClient, fake: FakeOpenAI,
                model: str = "gpt-4o-mini-transcribe") -> OpenAITranscriber:
    settings = replace(UpstreamSettings(), base_url=fake.base_url, api_key=API_KEY,
                       transcription_model=model, transcription_timeout=10.0)
    return OpenAITranscriber(http, settings)


async def test_transcription_sends_a_checked_multipart_form(fake_openai: FakeOpenAI) -> None:
    fake_openai.transcripts.append("oi, tudo bem?")
    async with httpx.AsyncClient() as http:
        heard = await transcriber(http, fake_openai).transcribe(OGG, "audio/ogg; codecs=opus")
    assert heard.text == "oi, tudo bem?" and heard.tokens == 23
    [request] = fake_openai.transcriptions
    assert (request.model, request.filename, request.audio) == (
        "gpt-4o-mini-transcribe", "voice-note.ogg", OGG)
    assert request.fields["response_format"] == "json"


async def test_whisper_reports_seconds_not_tokens(fake_openai: FakeOpenAI) -> None:
    async with httpx.AsyncClient() as http:
        heard = await transcriber(http, fake_openai, "whisper-1").transcribe(OGG, "audio/ogg")
    assert heard.tokens is None and heard.seconds == 2.0


async def test_transcription_failures_are_upstream_errors(fake_openai: FakeOpenAI) -> None:
    fake_openai.transcripts.append(500)
    async with httpx.AsyncClient() as http:
        with pytest.raises(UpstreamUnavailable):
            await transcriber(http, fake_openai).transcribe(OGG, "audio/ogg")
        with pytest.raises(UpstreamRejected):  # not an Ogg file: the fake refuses it
            await transcriber(http, fake_openai).transcribe(b"not audio", "audio/ogg")
        with pytest.raises(UpstreamRejected):
            await transcriber(http, fake_openai, "no-such-model").transcribe(OGG, "audio/ogg")
        assert API_KEY not in str(fake_openai.transcriptions)


async def test_typing_goes_to_the_messaging_host_and_failures_are_quiet(
    fake_twilio: FakeTwilio,
) -> None:
    async with httpx.AsyncClient() as http:
        sender = TwilioSender(twilio(fake_twilio), http, max_backoff=1.0)
        assert await sender.typing("SM" + "a" * 32)
        fake_twilio.fail_typing(500)
        assert not await sender.typing("SM" + "b" * 32)
        # The API host has no typing endpoint (404): one base URL for both would fail.
        wrong = TwilioSender(twilio(fake_twilio, messaging_base_url=fake_twilio.base_url), http,
                             max_backoff=1.0)
        assert not await wrong.typing("SM" + "c" * 32)
    [seen] = fake_twilio.typing
    assert seen.form == {"channel": "whatsapp", "messageId": "SM" + "a" * 32}
