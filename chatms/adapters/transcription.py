"""Speech to text through the upstream's `POST /audio/transcriptions` (multipart, no SDK).

Any OpenAI-compatible server that offers the endpoint works. Failures become the domain's
upstream errors (the API key never appears in them), like the chat completions adapter's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import httpx

from chatms.adapters.openai_errors import error_for_status
from chatms.config import UpstreamSettings
from chatms.domain.errors import NotConfigured, UpstreamTimeout, UpstreamUnavailable
from chatms.service.ports import Transcript

log = logging.getLogger("chatms.openai")

# The file name's extension names the format to the upstream.
EXTENSIONS = {
    "audio/ogg": "ogg", "audio/opus": "ogg", "audio/mpeg": "mp3", "audio/mp3": "mp3",
    "audio/mp4": "m4a", "audio/m4a": "m4a", "audio/x-m4a": "m4a", "audio/aac": "m4a",
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/webm": "webm", "audio/flac": "flac",
    "audio/amr": "amr",
}


def file_name(content_type: str) -> str:
    base = content_type.split(";", 1)[0].strip().lower()
    ext = EXTENSIONS.get(base) or re.sub(r"[^a-z0-9]", "", base.rpartition("/")[2])[:8]
    return f"voice-note.{ext or 'ogg'}"


def _usage(body: dict[str, Any]) -> tuple[int | None, float | None]:
    usage = body.get("usage")
    tokens = seconds = None
    if isinstance(usage, dict):
        total = usage.get("total_tokens")
        if isinstance(total, int) and total >= 0:
            tokens = total
        if isinstance(usage.get("seconds"), int | float):
            seconds = float(usage["seconds"])
    if isinstance(body.get("duration"), int | float):
        seconds = float(body["duration"])
    return tokens, seconds


class OpenAITranscriber:
    def __init__(self, http: httpx.AsyncClient, settings: UpstreamSettings) -> None:
        self.http = http
        self.url = settings.base_url.rstrip("/") + "/audio/transcriptions"
        self.api_key = settings.api_key
        self.model = settings.transcription_model
        self.timeout = settings.transcription_timeout

    async def transcribe(self, audio: bytes, content_type: str) -> Transcript:
        if not self.api_key:
            raise NotConfigured("OPENAI_API_KEY is not set")
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self.http.post(
                    self.url,
                    headers={"authorization": f"Bearer {self.api_key}"},
                    data={"model": self.model, "response_format": "json"},
                    files={"file": (file_name(content_type), audio, content_type)},
                )
        except TimeoutError:
            raise UpstreamTimeout(f"transcription took longer than {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"transcription failed ({type(exc).__name__})") from None
        if reply.status_code != 200:
            raise error_for_status(reply.status_code, reply.content)
        try:
            body = json.loads(reply.content)
            text = body["text"]
        except (ValueError, KeyError, TypeError):
            raise UpstreamUnavailable("transcription answer is not JSON with a text") from None
        if not isinstance(text, str):
            raise UpstreamUnavailable("transcription answer is not JSON with a text")
        tokens, seconds = _usage(body)
        return Transcript(text.strip(), tokens, seconds)
