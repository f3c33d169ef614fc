"""Non-streamed Chat Completions (summaries, titles): one request, one `chat.completion` object.

Beside the streaming client of `openai.py`, on the same shared httpx client; failures become
the same domain errors, and the API key never appears in any of their messages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx

from chatms.adapters.openai_errors import error_for_status, redact
from chatms.adapters.upstream_http import unlink_body
from chatms.config import UpstreamSettings
from chatms.domain.errors import NotConfigured, UpstreamTimeout, UpstreamUnavailable
from chatms.domain.model import Usage
from chatms.domain.text import storable
from chatms.service.ports import WholeAnswer

# A summary or a title is short; a body larger than this is not read on (a hostile upstream).
MAX_BODY_BYTES = 1 << 20
MAX_REPORTED_TOKENS = 10_000_000


def whole_request_body(
    model: str, messages: Sequence[tuple[str, str]], max_tokens: int
) -> dict[str, Any]:
    """A request without `stream`: the answer comes back as one JSON object."""
    return {
        "model": model,
        "messages": [{"role": role, "content": content} for role, content in messages],
        "max_tokens": max_tokens,
    }


def parse_whole_answer(body: bytes) -> WholeAnswer:
    """The text, finish reason and usage of a `chat.completion` object, checked for shape."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        reason = choice.get("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamUnavailable("upstream sent a completion of an unexpected shape") from None
    if not isinstance(text, str):
        raise UpstreamUnavailable("upstream sent a completion of an unexpected shape")
    usage = data.get("usage")
    counted = None
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            counted = Usage(*(min(max(n, 0), MAX_REPORTED_TOKENS) for n in (prompt, completion)))
    return WholeAnswer(storable(text), reason if isinstance(reason, str) else None, counted)


class OpenAIWholeClient:
    def __init__(self, http: httpx.AsyncClient, settings: UpstreamSettings) -> None:
        self.http = http
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if settings.api_key:
            self._headers["authorization"] = f"Bearer {settings.api_key}"

    async def complete_whole(
        self, model: str, messages: Sequence[tuple[str, str]], max_tokens: int
    ) -> WholeAnswer:
        """One non-streamed completion; no retries (the caller's work is retried later as a
        whole). The caller bounds it with its own deadline."""
        if not self.settings.api_key:
            raise NotConfigured("OPENAI_API_KEY is not set; the service cannot answer")
        payload = json.dumps(whole_request_body(model, messages, max_tokens)).encode()
        try:
            async with self.http.stream(
                "POST", self.url, content=payload, headers=self._headers
            ) as response:
                body = await _bounded_body(response)
        except httpx.TimeoutException:
            raise UpstreamTimeout("upstream sent no answer in time") from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            detail = redact(str(exc), self.settings.api_key)[:200]
            raise UpstreamUnavailable(f"upstream unreachable: {detail}") from None
        unlink_body(response)
        if response.status_code != 200:
            raise error_for_status(response.status_code, body)
        return parse_whole_answer(body)


async def _bounded_body(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise UpstreamUnavailable(f"upstream answer is larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)
