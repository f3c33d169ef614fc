"""gRPC streams read by a bare asyncio HTTP/2 client: the time-to-first-token instrument.

grpcio's asyncio client hands every message from its C core's threads to the event loop;
at one stream that cost about a millisecond more than bench/rawsse.py's bare client costs
the direct baseline, and it landed in gRPC's "added" figure. This client speaks just enough
HTTP/2 for a server-streaming call on a connection kept open (as a gRPC channel is): it
writes a call's HEADERS and DATA frames in one write, reads frames with a stream reader and
keeps HPACK's state with `hpack` (h2's own codec). Windows are opened wide at the start, so
the server never waits for this client. grpcio stays the client of every other scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncGenerator
from typing import Any

from hpack import Decoder, Encoder

from bench.clients import Clock, Sample, grpc_stubs

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 3, 4, 6, 7, 8, 9)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20
HEADER_TABLE_SIZE, ENABLE_PUSH, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x1, 0x2, 0x4, 0x5
WIDE = 2**31 - 1  # the largest window HTTP/2 allows
DEFAULT_WINDOW = 65535
CHAT_STREAM = "/pb.ChatService/ChatStream"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(
        ">I", stream) + payload


def _unpad(flags: int, payload: bytes, headers: bool) -> bytes:
    """A DATA or HEADERS frame's payload without its padding (and priority fields)."""
    start, end = 0, len(payload)
    if flags & PADDED:
        start, end = 1, end - payload[0]
    if headers and flags & PRIORITY:
        start += 5
    return payload[start:end]


class BareCall:
    """One call's messages, as the connection's reader hands them over."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.buffer = b""
        self.status: str | None = None  # grpc-status, from the trailers
        self.error: str | None = None
        self.ended = False

    def data(self, payload: bytes) -> None:
        self.buffer += payload
        while len(self.buffer) >= 5:
            size = int.from_bytes(self.buffer[1:5], "big")
            if len(self.buffer) < 5 + size:
                return
            self.queue.put_nowait(self.buffer[5:5 + size])
            self.buffer = self.buffer[5 + size:]

    def headers(self, fields: list[tuple[str, str]], ended: bool) -> None:
        named = dict(fields)
        if ":status" in named and named[":status"] != "200":
            self.error = f"HTTP {named[':status']}"
        if "grpc-status" in named:
            self.status = named["grpc-status"]
            if self.status != "0":
                self.error = f"grpc-status {self.status}: {named.get('grpc-message', '')}"[:160]
        if ended:
            self.end(None)

    def end(self, error: str | None) -> None:
        if self.ended:  # a reset or a lost connection after the trailers changes nothing
            return
        self.ended = True
        if error is not None and self.error is None:
            self.error = error
        elif self.status is None and self.error is None:
            self.error = "stream ended without grpc-status"
        self.queue.put_nowait(None)


class BareChannel:
    """One HTTP/2 connection to a gRPC server; calls run on it side by side."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.encoder, self.decoder = Encoder(), Decoder()
        self.calls: dict[int, BareCall] = {}
        self.next_id = 1
        self.send_window = DEFAULT_WINDOW  # the connection's, for our request bodies
        self.stream_window = DEFAULT_WINDOW  # each new stream's, as the server set it
        self.max_frame = 16384  # the largest frame the server takes, as it set it
        self.window_opened = asyncio.Event()
        self.received = 0
        self.closed: str | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        settings = struct.pack(">HIHI", ENABLE_PUSH, 0, INITIAL_WINDOW_SIZE, WIDE)
        self.writer.write(PREFACE + frame(SETTINGS, 0, 0, settings)
                          + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WIDE - DEFAULT_WINDOW)))
        self.task = asyncio.create_task(self._read())

    async def aclose(self) -> None:
        self.writer.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def call(self, path: str, message: bytes,
                   metadata: tuple[tuple[str, str], ...]) -> AsyncGenerator[bytes, None]:
        """Send one request message; hand out the response messages until the trailers."""
        body = b"\x00" + struct.pack(">I", len(message)) + message
        for _ in range(100):
            if self.closed or (len(body) <= self.send_window and len(body) <= self.stream_window):
                break
            self.window_opened.clear()
            await asyncio.wait_for(self.window_opened.wait(), 10)
        if self.closed:
            raise ConnectionError(self.closed)
        stream, call = self.next_id, BareCall()
        self.next_id += 2
        self.calls[stream] = call
        self.send_window -= len(body)
        block = self.encoder.encode([
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", f"{self.host}:{self.port}"), ("content-type", "application/grpc"),
            ("te", "trailers"), *metadata])
        pieces = [body[at:at + self.max_frame] for at in range(0, len(body), self.max_frame)]
        self.writer.write(frame(HEADERS, END_HEADERS, stream, block) + b"".join(
            frame(DATA, END_STREAM if at == len(pieces) - 1 else 0, stream, piece)
            for at, piece in enumerate(pieces)))
        try:
            while (message_out := await call.queue.get()) is not None:
                yield message_out
            if call.error is not None:
                raise ConnectionError(call.error)
        finally:
            if self.calls.pop(stream, None) is not None and not call.ended:
                self.writer.write(frame(RST_STREAM, 0, stream, struct.pack(">I", 8)))  # CANCEL

    async def _read(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(9)
                size = int.from_bytes(head[:3], "big")
                kind, flags = head[3], head[4]
                stream = int.from_bytes(head[5:9], "big") & WIDE
                payload = await self.reader.readexactly(size) if size else b""
                if kind == HEADERS:
                    payload = _unpad(flags, payload, True)
                    flags &= ~(PADDED | PRIORITY)
                    while not flags & END_HEADERS:  # CONTINUATION frames follow at once
                        more = await self.reader.readexactly(9)
                        payload += await self.reader.readexactly(int.from_bytes(more[:3], "big"))
                        flags |= more[4] & END_HEADERS
                self._frame(kind, flags, stream, payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a lost connection, or a frame this client cannot read
            self._close(f"connection lost: {type(exc).__name__}")

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        call = self.calls.get(stream)
        if kind == DATA:
            self._consumed(len(payload))
            if call is not None:
                call.data(_unpad(flags, payload, False))
                if flags & END_STREAM:
                    call.end(None)
        elif kind == HEADERS:
            fields = self.decoder.decode(payload)  # every block, in order: HPACK's state
            if call is not None:
                call.headers([(str(k), str(v)) for k, v in fields], bool(flags & END_STREAM))
        elif kind == RST_STREAM and call is not None:
            call.end(f"RST_STREAM {int.from_bytes(payload[:4], 'big')}")
        elif kind == SETTINGS and not flags & ACK:
            self._settings(payload)
        elif kind == PING and not flags & ACK:
            self.writer.write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE and stream == 0:
            self.send_window += int.from_bytes(payload[:4], "big") & WIDE
            self.window_opened.set()
        elif kind == GOAWAY:
            self._close("GOAWAY")

    def _settings(self, payload: bytes) -> None:
        for at in range(0, len(payload) - 5, 6):
            key, value = struct.unpack(">HI", payload[at:at + 6])
            if key == INITIAL_WINDOW_SIZE:
                self.stream_window = value
            elif key == MAX_FRAME_SIZE:
                self.max_frame = value
            elif key == HEADER_TABLE_SIZE:
                self.encoder.header_table_size = value
        self.writer.write(frame(SETTINGS, ACK, 0))
        self.window_opened.set()

    def _consumed(self, size: int) -> None:
        """Give the connection's receive window back once half of it is used."""
        self.received += size
        if self.received > WIDE // 2:
            self.writer.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.received)))
            self.received = 0

    def _close(self, why: str) -> None:
        self.closed = why
        self.window_opened.set()
        for call in list(self.calls.values()):
            call.end(why)


async def open_channels(target: str, count: int) -> list[BareChannel]:
    host, _, port = target.rpartition(":")
    channels = [BareChannel(host, int(port)) for _ in range(count)]
    for channel in channels:
        await channel.connect()
    return channels


async def grpc_turn(channel: BareChannel, token: str, user: str, text: str) -> Sample:
    """ChatStream read by the bare client; wire bytes as grpcio's (payload + 5-byte prefix)."""
    pb: Any = grpc_stubs()[0]
    clock = Clock(Sample())
    request = pb.ChatRequest(user_id=user, user_message=text).SerializeToString()
    messages = channel.call(CHAT_STREAM, request, (("authorization", token),))
    try:
        async with contextlib.aclosing(messages):
            async for message in messages:
                pb.ChatResponse.FromString(message)
                clock.mark(len(message) + 5)
    except (ConnectionError, TimeoutError) as exc:
        clock.sample.error = str(exc)[:160]
    return clock.done()
