"""Turning what a channel received (text, a voice note, a photo) into one turn's user message.

A voice note becomes its transcript; a photo becomes image content for the model (when the
chat's model reads images) and a placeholder with its caption for later turns. What cannot be
used gets a polite reply in words instead of a turn, saying why.
"""

from __future__ import annotations

import base64
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from chatms.domain import errors
from chatms.domain.media import PHOTO, VOICE, Attachment, ImageInput, UserInput
from chatms.domain.texting import (
    AUDIO,
    DEFAULT_IMAGE_QUESTION,
    IMAGE,
    image_placeholder,
    join_burst,
    media_kind,
)
from chatms.domain.vision import ImageSize, accepts_images, image_tokens
from chatms.service.ports import (
    Media,
    MediaFetcher,
    Received,
    TokenCounter,
    Transcriber,
    Transcript,
)

log = logging.getLogger("chatms.media")

TEXT_ONLY_REPLY = "Sorry, I can only read text messages. Please send your question as text."
TOO_LONG_REPLY = (
    "Sorry, that voice note or photo is too large for me. Could you send a shorter one?"
)
FETCH_FAILED_REPLY = "Sorry, I could not download your voice note or photo. Please send it again."
TRANSCRIBE_FAILED_REPLY = (
    "Sorry, I could not understand that voice note. Please try again or send it as text."
)


@dataclass(frozen=True, slots=True)
class Read:
    """The readable messages as one user message (None: nothing to ask), and polite replies."""

    message: UserInput | None
    replies: tuple[str, ...]
    tokens_spent: int  # transcription tokens, for the user's daily quota


ImageSizer = Callable[[bytes, str], ImageSize]


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    voice_enabled: bool = True
    vision_models: tuple[str, ...] = ()


HEARD_KEPT = 256  # voice notes whose transcripts are kept for a retried job


def media_ref(url: str) -> str:
    """The provider's id of the media: the last segment of its URL."""
    return url.rstrip("/").rpartition("/")[2][:64]


class MediaReader:
    def __init__(
        self,
        fetcher: MediaFetcher,
        transcriber: Transcriber,
        size_of: ImageSizer,
        counter: TokenCounter,
        policy: MediaPolicy,
    ) -> None:
        self.fetcher = fetcher
        self.transcriber = transcriber
        self.size_of = size_of
        self.counter = counter
        self.policy = policy
        # Voice notes heard lately, by media URL: a job tried again (its chat was busy, the
        # database away) is not fetched, transcribed and charged a second time here.
        self._heard: OrderedDict[str, tuple[str, Attachment]] = OrderedDict()

    async def read(self, messages: list[Received], model: str) -> Read:
        """Read each message in order; the readable ones become one user message."""
        texts: list[str] = []
        questions: list[str] = []
        attachments: list[Attachment] = []
        images: list[ImageInput] = []
        replies: list[str] = []
        spent = 0
        for received in messages:
            try:
                if not received.media:
                    if received.body.strip():
                        texts.append(received.body)
                        questions.append(received.body)
                    continue
                url, content_type = received.media[0]
                kind = media_kind(content_type)
                if kind == AUDIO and self.policy.voice_enabled:
                    text, attachment, tokens = await self._voice(url, content_type)
                    spent += tokens
                    texts.append(join_burst([received.body, text]))
                    questions.append(texts[-1])
                    attachments.append(attachment)
                elif kind == IMAGE and accepts_images(model, self.policy.vision_models):
                    image, attachment = await self._photo(url, content_type, model)
                    texts.append(image_placeholder(received.body))
                    questions.append(received.body.strip())
                    attachments.append(attachment)
                    images.append(image)
                else:
                    replies.append(self._unsupported(kind, model))
            except errors.MediaTooLarge:
                replies.append(TOO_LONG_REPLY)
            except _NotHeard:
                replies.append(TRANSCRIBE_FAILED_REPLY)
            except errors.MediaUnavailable as exc:
                log.warning("media not fetched: %s", exc)
                replies.append(FETCH_FAILED_REPLY)
        return Read(self._message(texts, questions, attachments, images), tuple(replies), spent)

    def _unsupported(self, kind: str, model: str) -> str:
        """The polite reply to media we do not read: it names what we do read."""
        readable = ["text"]
        if self.policy.voice_enabled:
            readable.append("voice notes")
        if accepts_images(model, self.policy.vision_models):
            readable.append("photos (JPEG, PNG or WebP)")
        if len(readable) == 1:
            return TEXT_ONLY_REPLY
        listed = ", ".join(readable[:-1]) + " and " + readable[-1]
        return f"Sorry, I can only read {listed}. Please send your question in one of those."

    @staticmethod
    def _message(texts: list[str], questions: list[str], attachments: list[Attachment],
                 images: list[ImageInput]) -> UserInput | None:
        text = join_burst(texts)
        if not text:
            return None
        question = join_burst(questions) or DEFAULT_IMAGE_QUESTION
        return UserInput(text, question, tuple(attachments), tuple(images))

    async def _voice(self, url: str, content_type: str) -> tuple[str, Attachment, int]:
        kept = self._heard.get(url)
        if kept is not None:
            self._heard.move_to_end(url)
            return kept[0], kept[1], 0  # its tokens were counted when it was heard
        media = await self.fetcher.fetch(url, content_type)
        try:
            heard = await self.transcriber.transcribe(media.data, content_type)
        except (errors.UpstreamError, errors.NotConfigured) as exc:
            log.warning("voice note not transcribed: %s", type(exc).__name__)
            raise _NotHeard() from None
        if not heard.text.strip():
            raise _NotHeard()
        tokens = heard.tokens if heard.tokens is not None else self.counter.count(heard.text)
        attachment = Attachment(VOICE, content_type, len(media.data), media_ref(url),
                                heard.seconds)
        self._heard[url] = (heard.text, attachment)
        if len(self._heard) > HEARD_KEPT:
            self._heard.popitem(last=False)
        return heard.text, attachment, tokens

    async def _photo(self, url: str, content_type: str, model: str
                     ) -> tuple[ImageInput, Attachment]:
        media = await self.fetcher.fetch(url, content_type)
        size = self.size_of(media.data, content_type)
        encoded = base64.b64encode(media.data).decode("ascii")
        base_type = content_type.split(";", 1)[0].strip().lower()
        image = ImageInput(f"data:{base_type};base64,{encoded}", image_tokens(model, size))
        return image, Attachment(PHOTO, content_type, len(media.data), media_ref(url))


class _NotHeard(errors.MediaUnavailable):
    """A voice note that could not be transcribed (told apart from one not fetched)."""


class _NoMedia:
    """Fetches, hears and counts nothing: the parts of a reader for text-only channels, whose
    policy never asks for them."""

    async def fetch(self, media_url: str, content_type: str) -> Media:
        raise errors.MediaUnavailable("this channel reads no media")

    async def transcribe(self, audio: bytes, content_type: str) -> Transcript:
        raise errors.NotConfigured("this channel transcribes nothing")

    def count(self, text: str) -> int:
        return 0


def _no_size(data: bytes, content_type: str) -> ImageSize:
    raise errors.MediaUnavailable("this channel reads no images")


def text_only() -> MediaReader:
    """A reader for a channel that reads text only: media get the polite text-only reply."""
    none = _NoMedia()
    return MediaReader(none, none, _no_size, none, MediaPolicy(voice_enabled=False))
