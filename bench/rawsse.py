"""Streamed turns read by a bare asyncio client: the time-to-first-token instrument.

httpx in the Python load generator costs a few hundred microseconds per response, and on the
SSE door that cost lands where it counts: chatms sends the response head with the first
event (so that errors before the answer keep their status), while the upstream sends its
head at once. At 50 streams the generator's own queue then added +7 ms (p50) to the direct
baseline and +21 ms to the SSE door. These clients write the request in one piece and read
the chunked body with a stream reader, so what they measure is the server, not the client.
Like the httpx clients, they close the connection after the last event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from bench.clients import Clock, Sample, openai_body, openai_event

LIMIT = 1 << 20


async def _body(reader: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    """The body's pieces: chunked, or (no framing) up to the end of the stream."""
    while True:
        if not chunked:
            piece = await reader.read(65536)
            if not piece:
                return
            yield piece
            continue
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        if size == 0:
            return
        yield (await reader.readexactly(size + 2))[:-2]


async def _events(
    reader: asyncio.StreamReader, chunked: bool
) -> AsyncIterator[tuple[bytes, bytes]]:
    """(event name, data) of each Server-Sent Event of the body."""
    buf = b""
    async for piece in _body(reader, chunked):
        buf += piece.replace(b"\r\n", b"\n")
        while b"\n\n" in buf:
            raw, buf = buf.split(b"\n\n", 1)
            name = data = b""
            for line in raw.split(b"\n"):
                if line.startswith(b"event:"):
                    name = line[6:].strip()
                elif line.startswith(b"data:"):
                    data = line[5:].strip()
            yield name, data


async def _stream(url: str, body: bytes, headers: dict[str, str],
                  clock: Clock) -> AsyncIterator[tuple[bytes, bytes]]:
    """POST `body` to `url` (http://host:port/path) on a new connection and hand out the
    response's events; a status other than 200 goes into the sample's error instead."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    reader, writer = await asyncio.open_connection(host, int(port or 80), limit=LIMIT)
    try:
        lines = [f"POST /{path} HTTP/1.1", f"host: {hostport}", "content-type: application/json",
                 f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            clock.sample.error = head.split(b"\r\n")[0].decode(errors="replace")
            return
        async for event in _events(reader, b"transfer-encoding: chunked" in head.lower()):
            yield event
    finally:
        writer.close()


async def direct(url: str, text: str, key: str | None = None) -> Sample:
    """An OpenAI-style stream (the fake upstream, or a gateway) read to its first deltas."""
    clock = Clock(Sample())
    headers = {"authorization": f"Bearer {key}"} if key else {}
    events = _stream(url, openai_body(text), headers, clock)
    async with contextlib.aclosing(events):
        async for _, data in events:
            if openai_event(clock, data, len(data)):
                break
    return clock.done()


async def sse(url: str, token: str, user: str, text: str) -> Sample:
    """chatms's `POST /chat` as Server-Sent Events, to its `done` (or `error`) event."""
    clock = Clock(Sample())
    body = json.dumps({"user_id": user, "user_message": text}).encode()
    events = _stream(url, body, {"authorization": token, "accept": "text/event-stream"}, clock)
    async with contextlib.aclosing(events):
        async for name, data in events:
            if name == b"delta":
                clock.mark(len(data))
            elif name == b"error":
                clock.sample.error = data[:120].decode(errors="replace")
                break
            elif name == b"done":
                break
    return clock.done()
