"""The upstream's HTTP client: httpx's API, on aiohttp's transport or on httpx's own.

httpx's own transport (httpcore, h11, anyio) costs about twice as much CPU per streamed
event as aiohttp (bench/BENCHMARKS.md). `httpx-aiohttp` offers the same idea, but maps a
refused connection and a server hang-up before the headers to `ConnectTimeout`, which
would turn an unreachable upstream into a timeout; this module maps each aiohttp error to
the httpx error of the same kind, and closes an unfinished answer's socket at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

from chatms.config import UpstreamSettings


def httpx_error(exc: BaseException) -> httpx.TransportError:
    """The httpx error of the same kind as an aiohttp (or socket) error."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # connecting, or waiting for the pool
        return httpx.ConnectTimeout(message)
    if isinstance(exc, TimeoutError):  # aiohttp's sock_read: the server went silent
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unresolvable, unreachable
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message)  # a malformed or cut-short response
    return httpx.ReadError(message)  # the server hung up, a reset, any other socket error


class _Body(httpx.AsyncByteStream):
    """A response body as aiohttp's reader hands it over: whatever each network read brought."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = self._response.content.readany
        try:
            while chunk := await read():
                yield chunk
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx_error(exc) from None

    async def aclose(self) -> None:
        # No await in here: a second cancel of a closing task cannot leave the socket open.
        response = self._response
        if response.content.at_eof():
            response.release()  # read to the end: the connection may serve the next request
        else:
            response.close()  # an unfinished answer: the upstream sees the socket close now


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (made on first use, inside the running loop) behind httpx.

    The pool holds at most `limits.max_connections` connections, idle ones for
    `limits.keepalive_expiry` seconds. httpx's connect and pool timeouts bound the wait for
    a connection together, its read timeout every silence; nothing bounds a whole answer.
    """

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        # Every request of a client carries the same timeouts: built once, not per request.
        self._waits: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 5.0,
            ssl=httpx.create_ssl_context(),  # httpx's verification (certifi), not aiohttp's
        )
        return aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=None),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._open_session()
        body = await request.aread()
        try:
            response = await self._session.request(
                request.method, str(request.url), headers=request.headers.multi_items(),
                data=body or None, allow_redirects=False, compress=None,
                timeout=self._waits_for(request.extensions.get("timeout", {})),
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx_error(exc) from None
        return httpx.Response(
            response.status, headers=response.raw_headers, stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": (response.reason or "").encode()},
        )

    def _waits_for(self, timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
        connect, pool, read = timeout.get("connect"), timeout.get("pool"), timeout.get("read")
        key = (connect, pool, read)
        waits = self._waits.get(key)
        if waits is None:
            if len(self._waits) > 16:  # per-request timeouts: keep a handful, not all
                self._waits.clear()
            waits = self._waits[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect, sock_read=read,
                connect=None if connect is None or pool is None else connect + pool,
            )
        return waits

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class UpstreamClient(httpx.AsyncClient):
    """httpx's client, with a shorter way to open a turn's stream (`open_stream`)."""

    def __init__(self, transport: httpx.AsyncBaseTransport, timeout: httpx.Timeout) -> None:
        super().__init__(timeout=timeout, transport=transport, trust_env=False)
        self._streams = transport

    async def open_stream(self, request: httpx.Request) -> httpx.Response:
        """`send(request, stream=True)` straight to the transport.

        A turn's request needs none of the client's layers (auth, redirects, cookies, event
        hooks, its log line): skipping them is about a third of the CPU of opening the stream,
        which every turn of a burst spends before the next one's request can leave
        (bench/BENCHMARKS.md). Timeouts still come with the request's extensions.
        """
        if self.is_closed:
            raise RuntimeError("the upstream client is closed")
        response = await self._streams.handle_async_request(request)
        response.request = request
        return response


def build_http_client(settings: UpstreamSettings) -> UpstreamClient:
    """The one pooled client every turn shares, on aiohttp's transport or httpx's own."""
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.idle_timeout,
        write=settings.connect_timeout,
        pool=settings.connect_timeout,
    )
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_connections,
    )
    transport: httpx.AsyncBaseTransport
    if settings.transport == "httpx":
        transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    else:
        transport = AiohttpTransport(limits)
    return UpstreamClient(transport, timeout)


AFTER_DONE_SECONDS = 0.1  # how long the end of a body is waited for after `[DONE]`


async def finish_body(chunks: AsyncIterator[bytes]) -> None:
    """Read a streamed body's end once the answer's last event (`[DONE]`) is in.

    The end nearly always comes with `[DONE]` or right after it, so this rarely waits. Read,
    it lets the connection serve the next request instead of being closed, and lets the
    stream's async generators (httpx's two and ours) finish here: left unfinished, each
    would be closed later by the event loop's finalizer, a thread-safe wake-up and a task
    apiece on every turn. Bytes after `[DONE]`, or an end that has not come within
    `AFTER_DONE_SECONDS`, are not waited for: the response is closed, its connection too.
    """
    try:
        async with asyncio.timeout(AFTER_DONE_SECONDS):
            async for chunk in chunks:
                if chunk:
                    return
    except (TimeoutError, httpx.HTTPError, httpx.StreamError):
        pass


def _httpcore_connection(response: httpx.Response) -> Any:
    """The HTTP/1.1 connection under a streamed response, or None if httpx's layout differs."""
    stream: Any = response.stream
    stream = getattr(stream, "_stream", stream)  # httpx's BoundAsyncStream, if a client sent it
    stream = getattr(stream, "_httpcore_stream", None)  # httpx's AsyncResponseStream
    stream = getattr(stream, "_stream", None)  # httpcore's PoolByteStream
    return getattr(stream, "_connection", None)  # httpcore's HTTP11ConnectionByteStream


_NO_BODY = httpx.ByteStream(b"")


def unlink_body(response: httpx.Response) -> None:
    """Let a closed response go as soon as it is dropped.

    httpx's client wraps a streamed body in an object that points back at its response: a
    cycle, with the request, headers and aiohttp's response behind it, that only the cyclic
    collector's full passes free (tens of milliseconds each on a busy heap; bench/BENCHMARKS.md).
    """
    response.stream = _NO_BODY


async def abandon_connection(response: httpx.Response) -> None:
    """Make sure an answer we stopped reading no longer holds its connection open.

    Only httpx's own transport needs this: the aiohttp one closes without awaiting. httpcore
    closes an unfinished response's connection after taking an anyio lock; a second asyncio
    cancel of the reading task interrupts that, marks the stream closed and
    leaves the socket open: the upstream keeps generating and the pool keeps a dead slot.
    Closing the connection again is idempotent, and the pool then drops it.
    """
    connection = _httpcore_connection(response)
    if connection is not None and not connection.is_closed():
        await connection.aclose()
