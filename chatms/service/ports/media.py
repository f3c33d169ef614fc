"""Ports for what comes with a message besides text: media downloads and speech to text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Media:
    content_type: str
    data: bytes


class MediaFetcher(Protocol):
    async def fetch(self, media_url: str, content_type: str) -> Media:
        """The media's bytes. Raises MediaTooLarge or MediaUnavailable."""
        ...


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    tokens: int | None  # as the upstream reported them (None when it bills by duration)
    seconds: float | None  # the audio's duration, when the upstream reported it


class Transcriber(Protocol):
    async def transcribe(self, audio: bytes, content_type: str) -> Transcript:
        """Speech to text. Raises an UpstreamError (or NotConfigured)."""
        ...
