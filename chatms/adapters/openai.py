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

import httpx

from chatms.adapters.openai_errors import (
    error_for_status,
    redact,
    retry_after,
)
from chatms.adapters.openai_wire import Ending, parse_chunks, request_body
from chatms.adapters.sse import EventTooLarge, SSEDecoder
from chatms.adapters.upstream_http import (
    UpstreamClient,
    abandon_connection,
    finish_body,
    unlink_body,
)
from chatms.config import UpstreamSettings
from chatms.domain.errors import (
    NotConfigured,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatms.domain.media import ImageInput
from chatms.domain.model import ChatConfig
from chatms.domain.text import storable
from chatms.service.ports import Finished, UpstreamEvent

log = logging.getLogger("chatms.openai")


class _Retry(Exception):
    def __init__(self, error: UpstreamError, delay: float | None, empty: bool = False) -> None:
        self.error = error
        self.delay = delay
        self.empty = empty


class _EmptyStream(UpstreamUnavailable):
    """A 200 whose event stream held no event at all: a broken server more than a blip."""


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
        ending = Ending(deadline)
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
        self, payload: bytes, ending: Ending
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
        self, payload: bytes, ending: Ending, deadline: float
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
        self, chunks: AsyncIterator[bytes], ending: Ending
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
                texts = parse_chunks(fed, ending)
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
                texts = parse_chunks(fed, ending)
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
