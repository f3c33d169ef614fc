"""OpenAI's Chat Completions API, streamed over one shared httpx client (no SDK).

Works with any OpenAI-compatible server (Ollama, vLLM, llama.cpp, LiteLLM) through
OPENAI_BASE_URL. Failures become the domain's upstream errors; the API key never appears
in any of their messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from chatms.adapters.openai_errors import (
    error_code,
    error_for_status,
    redact,
    retry_after,
)
from chatms.adapters.sse import EventTooLarge, SSEDecoder
from chatms.adapters.upstream_http import (
    UpstreamClient,
    abandon_connection,
    finish_body,
    unlink_body,
)
from chatms.adapters.upstream_http import build_http_client as build_http_client  # old home
from chatms.config import UpstreamSettings
from chatms.domain.budget import token_count
from chatms.domain.errors import (
    NotConfigured,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatms.domain.media import ImageInput
from chatms.domain.model import ChatConfig, Usage
from chatms.domain.text import storable
from chatms.service.ports import Finished, UpstreamEvent

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




class _Retry(Exception):
    def __init__(self, error: UpstreamError, delay: float | None, empty: bool = False) -> None:
        self.error = error
        self.delay = delay
        self.empty = empty


class _EmptyStream(UpstreamUnavailable):
    """A 200 whose event stream held no event at all: a broken server more than a blip."""


@dataclass(slots=True)
class _Ending:
    """What the chunks said so far about how the answer ends (private to one stream)."""

    deadline: float
    finish_reason: str | None = None
    usage: Usage | None = None
    done: bool = False  # `[DONE]` arrived
    failure: UpstreamError | None = None  # an error object arrived


class OpenAIClient:
    def __init__(self, http: UpstreamClient, settings: UpstreamSettings) -> None:
        self.http = http
        self.settings = settings
        self.url = httpx.URL(settings.base_url.rstrip("/") + "/chat/completions")
        # identity: the stream is read raw, skipping httpx's decoder layer per chunk.
        headers = {"content-type": "application/json", "accept": "text/event-stream",
                   "accept-encoding": "identity"}
        if settings.api_key:
            headers["authorization"] = f"Bearer {settings.api_key}"
        # Merged with the client's own headers and timeouts once, not per request
        # (`build_request` costs twice what building the request does).
        merged = httpx.Headers(http.headers)
        merged.update(headers)
        # A request made from a stream gets no headers added: Host and Content-Length are ours.
        self._headers = [(b"Host", self.url.netloc), *merged.raw]
        self._extensions = {"timeout": http.timeout.as_dict()}

    async def complete(
        self,
        config: ChatConfig,
        messages: Sequence[tuple[str, str]],
        deadline: float,
        images: Sequence[ImageInput] = (),
    ) -> AsyncGenerator[UpstreamEvent, None]:
        """Text deltas, then `Finished`; retries only happen before the first delta went out.

        `images` go with the last message (this turn's user message) as image content.
        """
        if not self.settings.api_key:
            raise NotConfigured("OPENAI_API_KEY is not set; the service cannot answer")
        payload = json.dumps(request_body(config, messages, images)).encode()
        ending = _Ending(deadline)
        response, events, first = await self._first_delta_with_retries(payload, ending)
        whole = False
        try:
            if first is not None:
                yield first
                async for delta in events:
                    yield delta
            whole = True
        finally:
            # Shielded: grpclib cancels a handler once for its deadline and again when the
            # client resets the stream; a second cancel must not leave the upstream open.
            await asyncio.shield(self._release(events, response, whole))
        yield Finished(ending.finish_reason, ending.usage)

    async def _first_delta_with_retries(
        self, payload: bytes, ending: _Ending
    ) -> tuple[httpx.Response, AsyncGenerator[str, None], str | None]:
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.first_token_timeout
        attempts = empties = 0
        while True:
            attempts += 1
            try:
                return await self._until_first_delta(payload, ending, deadline)
            except _Retry as retry:
                empties += retry.empty
                if empties > 1:  # the same empty answer twice: it will not get better
                    raise retry.error from None
                delay = retry.delay
                if delay is None:
                    delay = s.backoff_base * 2 ** (attempts - 1)
                    delay *= 0.5 + random.random()  # noqa: S311 (jitter, not crypto)
                # Retries fit within the first-token deadline, or are not tried at all.
                if attempts > s.max_retries or loop.time() + delay > deadline:
                    raise retry.error from None
                log.info(
                    "upstream attempt %d failed (%s); retrying in %.2fs",
                    attempts, retry.error, delay,
                )
                await asyncio.sleep(delay)

    @staticmethod
    async def _release(
        events: AsyncGenerator[str, None], response: httpx.Response, whole: bool
    ) -> None:
        await events.aclose()
        await response.aclose()
        if not whole:
            await abandon_connection(response)
        unlink_body(response)

    async def _until_first_delta(
        self, payload: bytes, ending: _Ending, deadline: float
    ) -> tuple[httpx.Response, AsyncGenerator[str, None], str | None]:
        """Open the stream and read it up to the first text delta, within the deadline.

        Nothing has reached the caller yet, so every transient failure here may be retried.
        """
        length = (b"Content-Length", str(len(payload)).encode())
        request = httpx.Request("POST", self.url, stream=httpx.ByteStream(payload),
                                headers=[*self._headers, length], extensions=self._extensions)
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout_at(deadline):
                response = await self.http.open_stream(request)
                if response.status_code != 200:
                    body = await response.aread()
                    error = error_for_status(response.status_code, body)
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _Retry(error, retry_after(response))
                    raise error
                encoded = response.headers.get("content-encoding", "identity") != "identity"
                chunks = response.aiter_bytes() if encoded else response.aiter_raw()
                events = self._events(chunks, ending)
                try:
                    first = await anext(events, None)
                except _EmptyStream as exc:
                    raise _Retry(exc, None, empty=True) from None
                except (UpstreamUnavailable, UpstreamTimeout) as exc:
                    raise _Retry(exc, None) from None
                return response, events, first
        except TimeoutError:
            await asyncio.shield(self._close(response))
            raise UpstreamTimeout("upstream sent no answer in time") from None
        except httpx.TimeoutException:
            await asyncio.shield(self._close(response))
            raise _Retry(UpstreamTimeout("upstream timed out"), None) from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            await asyncio.shield(self._close(response))
            detail = redact(str(exc), self.settings.api_key)[:200]
            raise _Retry(UpstreamUnavailable(f"upstream unreachable: {detail}"), None) from None
        except BaseException:
            await asyncio.shield(self._close(response))
            raise

    @staticmethod
    async def _close(response: httpx.Response | None) -> None:
        if response is not None:
            await response.aclose()
            unlink_body(response)

    async def _events(
        self, chunks: AsyncIterator[bytes], ending: _Ending
    ) -> AsyncGenerator[str, None]:
        """Text deltas from the SSE byte stream, recording the finish reason and usage.

        All the deltas one network read brought are handed out together: a backlog (a slow
        client, a burst upstream) becomes one message instead of one per token.
        """
        decoder = SSEDecoder(self.settings.max_event_bytes)
        deadline = ending.deadline
        events = 0
        try:
            async for chunk in chunks:
                if time.monotonic() > deadline:
                    raise UpstreamTimeout("the answer took longer than the turn time limit")
                fed = decoder.feed(chunk)
                events += len(fed)
                texts = self._parse(fed, ending)
                if texts:
                    # NUL and lone surrogates cannot be stored (nor sent over gRPC).
                    yield storable(texts[0] if len(texts) == 1 else "".join(texts))
                if ending.failure is not None:
                    raise ending.failure
                if ending.done:
                    await finish_body(chunks)
                    break
            else:
                fed = decoder.close()
                events += len(fed)
                texts = self._parse(fed, ending)
                if texts:
                    yield storable("".join(texts))
                if ending.failure is not None:
                    raise ending.failure
        except httpx.TimeoutException:
            raise UpstreamTimeout("upstream stalled mid-answer") from None
        except EventTooLarge as exc:
            raise UpstreamUnavailable(f"upstream sent {exc}") from None
        except httpx.DecodingError:
            raise UpstreamUnavailable(
                "upstream sent a body that does not match its Content-Encoding"
            ) from None
        except (httpx.TransportError, httpx.StreamError):
            if ending.finish_reason is None:
                raise UpstreamUnavailable("upstream connection broke mid-answer") from None
        if not ending.done and ending.finish_reason is None:
            if events == 0:
                raise _EmptyStream("upstream answered 200 with an empty event stream")
            # Some OpenAI-compatible servers omit [DONE]; a finish reason says the answer is whole.
            raise UpstreamUnavailable("upstream stream ended before the answer was finished")

    @staticmethod
    def _parse(events: list[bytes], ending: _Ending) -> list[str]:
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
