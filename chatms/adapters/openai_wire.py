"""Chat Completions on the wire: a streamed request's body, and the streamed chunks read
into text deltas and how the answer ends. Pure: no I/O."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatms.adapters.openai_errors import error_code
from chatms.domain.budget import token_count
from chatms.domain.errors import UpstreamError, UpstreamUnavailable
from chatms.domain.media import ImageInput
from chatms.domain.model import ChatConfig, Usage
from chatms.domain.text import storable

log = logging.getLogger("chatms.openai")

MAX_FINISH_REASON = 64  # characters


def _with_images(text: str, images: Sequence[ImageInput]) -> list[dict[str, Any]]:
    """OpenAI's content parts: the words, then each image as a data: URL."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": image.data_url, "detail": "auto"}}
              for image in images]
    return parts


def request_body(
    config: ChatConfig,
    messages: Sequence[tuple[str, str]],
    images: Sequence[ImageInput] = (),
) -> dict[str, Any]:
    """The request; `images` go with the last message (this turn's user message)."""
    wire: list[dict[str, Any]] = [{"role": role, "content": content} for role, content in messages]
    if images:
        wire[-1]["content"] = _with_images(wire[-1]["content"], images)
    body: dict[str, Any] = {
        "model": config.model,
        "messages": wire,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "presence_penalty": config.presence_penalty,
        "frequency_penalty": config.frequency_penalty,
    }
    if config.stop:  # an empty list is rejected by the API (the original crashed on none)
        body["stop"] = list(config.stop)
    return body


@dataclass(slots=True)
class Ending:
    """What the chunks said so far about how the answer ends (private to one stream)."""

    deadline: float
    finish_reason: str | None = None
    usage: Usage | None = None
    done: bool = False  # `[DONE]` arrived
    failure: UpstreamError | None = None  # an error object arrived


def parse_chunks(events: list[bytes], ending: Ending) -> list[str]:
    """The text deltas of `events` up to `[DONE]` (which sets `ending.done`).

    One network read can bring the last deltas and `[DONE]` (or an error) together:
    they are kept, and an error object is left in `ending.failure`.

    Chunks are checked for shape, not trusted: a part that is not what OpenAI sends is
    skipped with a warning, like a line that is not JSON.
    """
    texts: list[str] = []
    for data in events:
        if data == b"[DONE]":
            ending.done = True
            break
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested past the C parser
            log.warning("upstream sent a malformed SSE data line; skipped")
            continue
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error"):
            code = error_code(data)
            # The code only: the upstream's own text may quote the prompt or the key.
            log.warning("upstream error mid-stream (%s)", code or "no error code")
            # Raised once the deltas before it (maybe from the same read) went out.
            ending.failure = UpstreamUnavailable(
                "upstream reported an error mid-stream" + (f" ({code})" if code else "")
            )
            break
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if isinstance(choice, dict):
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) and text:
                texts.append(text)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                # Stored beside the answer: OpenAI's are short words.
                ending.finish_reason = storable(reason[:MAX_FINISH_REASON])
        elif choice is not None:
            log.warning("upstream sent a chunk of an unexpected shape; skipped")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            prompt = token_count(usage.get("prompt_tokens"))
            completion = token_count(usage.get("completion_tokens"))
            if prompt is not None and completion is not None:
                ending.usage = Usage(prompt, completion)
    return texts
