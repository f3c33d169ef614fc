"""A minimal HTTP/1.1 server on 127.0.0.1, run on its own thread and event loop.

The fakes are written at this level, not on a framework, so that they can misbehave
exactly like the real services do on a bad day: stall, drop the connection mid-stream,
or send malformed bytes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import urlsplit


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


@dataclass
class Reply:
    """What a handler does with the connection; `stream` writes the body itself."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: Callable[[asyncio.StreamWriter], Awaitable[None]] | None = None


REASONS = {200: "OK", 201: "Created", 307: "Temporary Redirect", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


async def write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


class LoopbackServer:
    def __init__(self, handler: Callable[[Request], Awaitable[Reply]]) -> None:
        self.handler = handler
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.connections = 0
        self.disconnects: list[float] = []

    def start(self) -> None:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        fut.result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def call(self, coro: Awaitable[object], timeout: float = 10) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            # Connections still streaming (a test that gave up on them) end here, not
            # when the loop is already gone.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self.call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await self._read(reader)
                if request is None:
                    return
                reply = await self.handler(request)
                head = [f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}"]
                headers = dict(reply.headers)
                if reply.stream is not None:
                    headers["transfer-encoding"] = "chunked"
                    # Watching for a hang-up reads from the connection, so a streamed reply
                    # is its connection's last: nothing of a next request can be eaten.
                    headers["connection"] = "close"
                else:
                    headers["content-length"] = str(len(reply.body))
                head += [f"{k}: {v}" for k, v in headers.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
                if reply.stream is not None:
                    await self._stream_until_closed(reply.stream, reader, writer)
                    return
                else:
                    writer.write(reply.body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnects.append(self.loop.time())
        except _Drop:
            pass
        finally:
            writer.close()

    @staticmethod
    async def _stream_until_closed(
        stream: Callable[[asyncio.StreamWriter], Awaitable[None]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Write the streamed body, stopping it the moment the client hangs up.

        Writes alone notice a closed connection late (or never, while the kernel buffers),
        so the client's end of file is watched beside them.
        """
        body = asyncio.ensure_future(stream(writer))
        hangup = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait({body, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not body.done():
                body.cancel()  # the client hung up: the stream records it and drops
            hangup.cancel()
            await asyncio.gather(hangup, return_exceptions=True)
        await body

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Request | None:
        line = await reader.readline()
        if not line:
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Request(method, target, headers, body)


class _Drop(Exception):
    """Raised by a stream writer to cut the connection without finishing the response."""


def drop() -> _Drop:
    return _Drop()


class LoopbackFake:
    """Base of the fakes: a LoopbackServer that answers every request with `_handle`."""

    def __init__(self) -> None:
        self.server = LoopbackServer(self._handle)

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def _handle(self, request: Request) -> Reply:
        raise NotImplementedError
