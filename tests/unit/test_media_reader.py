"""MediaReader against in-memory ports: what each kind of message becomes, and failures."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatms.domain import errors
from chatms.domain.media import PHOTO, VOICE
from chatms.domain.vision import ImageSize
from chatms.service.inbound_media import (
    FETCH_FAILED_REPLY,
    HEARD_KEPT,
    TEXT_ONLY_REPLY,
    TOO_LONG_REPLY,
    TRANSCRIBE_FAILED_REPLY,
    MediaPolicy,
    MediaReader,
)
from chatms.service.ports import Media, Received, Transcript

VOICE_URL = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/MEvoice"
PHOTO_URL = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM2/Media/MEphoto"


@dataclass
class Fetcher:
    media: dict[str, bytes] = field(default_factory=dict)
    failures: dict[str, errors.MediaError] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def fetch(self, media_url: str, content_type: str) -> Media:
        self.calls.append(media_url)
        if media_url in self.failures:
            raise self.failures[media_url]
        return Media(content_type, self.media[media_url])


@dataclass
class Ear:
    text: str = "hello from a voice note"
    fail: bool = False
    heard: list[bytes] = field(default_factory=list)

    async def transcribe(self, audio: bytes, content_type: str) -> Transcript:
        self.heard.append(audio)
        if self.fail:
            raise errors.UpstreamUnavailable("down")
        return Transcript(self.text, 42, 3.5)


class Counter:
    def count(self, text: str) -> int:
        return len(text.split())


def reader(fetcher: Fetcher, ear: Ear, voice: bool = True,
           vision: tuple[str, ...] = ("gpt-4o",)) -> MediaReader:
    return MediaReader(fetcher, ear, lambda data, ct: ImageSize(1024, 1024), Counter(),
                       MediaPolicy(voice, vision))


async def test_voice_note_becomes_its_transcript_with_a_marker() -> None:
    fetcher, ear = Fetcher({VOICE_URL: b"OggS..."}), Ear()
    read = await reader(fetcher, ear).read([Received("", ((VOICE_URL, "audio/ogg"),))], "gpt-4o")
    assert read.replies == () and read.tokens_spent == 42
    assert read.message is not None and read.message.text == "hello from a voice note"
    [marker] = read.message.attachments
    assert (marker.kind, marker.content_type, marker.size, marker.ref, marker.seconds) == (
        VOICE, "audio/ogg", 7, "MEvoice", 3.5)


async def test_a_voice_note_read_again_is_not_fetched_heard_or_charged_again() -> None:
    """A job tried again (its chat was busy) reads its messages again: the voice note's
    transcript is kept, and a note that could not be heard is tried again."""
    fetcher, ear = Fetcher({VOICE_URL: b"OggS..."}), Ear(fail=True)
    read_voice = reader(fetcher, ear)
    note = [Received("", ((VOICE_URL, "audio/ogg"),))]
    assert (await read_voice.read(note, "gpt-4o")).replies == (TRANSCRIBE_FAILED_REPLY,)
    ear.fail = False
    first = await read_voice.read(note, "gpt-4o")
    again = await read_voice.read(note, "gpt-4o")
    assert len(ear.heard) == 2 and len(fetcher.calls) == 2  # the failure, then once
    assert (first.tokens_spent, again.tokens_spent) == (42, 0)
    assert first.message == again.message
    others = [f"{VOICE_URL}{i}" for i in range(HEARD_KEPT)]
    for url in others:  # the kept transcripts are bounded: the oldest go first
        fetcher.media[url] = b"OggS"
        await read_voice.read([Received("", ((url, "audio/ogg"),))], "gpt-4o")
    assert (await read_voice.read(note, "gpt-4o")).tokens_spent == 42


async def test_photo_goes_as_image_content_and_is_kept_as_a_placeholder() -> None:
    fetcher = Fetcher({PHOTO_URL: b"\xff\xd8jpeg"})
    read = await reader(fetcher, Ear()).read(
        [Received("what breed?", ((PHOTO_URL, "image/jpeg"),))], "gpt-4o-2024-08-06")
    assert read.message is not None
    assert (read.message.text, read.message.question) == ("[image] what breed?", "what breed?")
    [image] = read.message.images
    assert image.data_url == "data:image/jpeg;base64,/9hqcGVn" and image.tokens == 765
    assert read.message.attachments[0].kind == PHOTO
    bare = await reader(fetcher, Ear()).read([Received("", ((PHOTO_URL, "image/jpeg"),))],
                                             "gpt-4o")
    assert bare.message is not None and bare.message.question == "What is in this image?"


async def test_media_that_cannot_be_used_gets_a_reply_and_no_upstream_call() -> None:
    fetcher, ear = Fetcher({VOICE_URL: b"OggS", PHOTO_URL: b"jpeg"}), Ear()
    no_vision = await reader(fetcher, ear, vision=()).read(
        [Received("", ((PHOTO_URL, "image/jpeg"),))], "gpt-4o")
    voice_off = await reader(fetcher, ear, voice=False, vision=()).read(
        [Received("", ((VOICE_URL, "audio/ogg"),))], "gpt-4o")
    document = await reader(fetcher, ear).read(
        [Received("", (("https://api.twilio.com/x/MEdoc", "application/pdf"),))], "gpt-4o")
    assert no_vision.replies == ("Sorry, I can only read text and voice notes. Please send your"
                                 " question in one of those.",)
    assert voice_off.replies == (TEXT_ONLY_REPLY,)
    assert document.replies == ("Sorry, I can only read text, voice notes and photos (JPEG, "
                                "PNG or WebP). Please send your question in one of those.",)
    assert no_vision.message is voice_off.message is document.message is None
    assert fetcher.calls == [] and ear.heard == []


async def test_fetch_and_transcription_failures_are_told_apart() -> None:
    fetcher = Fetcher({VOICE_URL: b"OggS"}, {
        PHOTO_URL: errors.MediaTooLarge("big"),
        "https://api.twilio.com/x/MEgone": errors.MediaUnavailable("gone")})
    deaf = Ear(fail=True)
    read = await reader(fetcher, deaf).read([
        Received("", ((VOICE_URL, "audio/ogg"),)),
        Received("", ((PHOTO_URL, "image/png"),)),
        Received("", (("https://api.twilio.com/x/MEgone", "audio/ogg"),)),
        Received("and a question"),
    ], "gpt-4o")
    assert read.replies == (TRANSCRIBE_FAILED_REPLY, TOO_LONG_REPLY, FETCH_FAILED_REPLY)
    assert read.message is not None and read.message.text == "and a question"
    silent = await reader(fetcher, Ear(text="  ")).read(
        [Received("", ((VOICE_URL, "audio/ogg"),))], "gpt-4o")
    assert silent.replies == (TRANSCRIBE_FAILED_REPLY,) and silent.message is None


async def test_a_burst_joins_texts_and_transcripts_in_arrival_order() -> None:
    fetcher = Fetcher({VOICE_URL: b"OggS"})
    read = await reader(fetcher, Ear(text="second, spoken")).read([
        Received("first"), Received("", ((VOICE_URL, "audio/ogg"),)), Received("third"),
    ], "gpt-4o")
    assert read.message is not None
    assert read.message.text == read.message.question == "first\nsecond, spoken\nthird"
