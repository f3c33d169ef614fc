"""The HTTP listener on real sockets with a tiny ASGI app: its idle timeout (one timer per
connection) and its coalesced writes (each test runs with them on and off)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatms.config import EdgeSettings
from chatms.entrypoints.http_edge import HttpListener, hypercorn_config
from tests.garbage import cyclic_garbage, kinds
from tests.support import until

GET = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`ok` at once, or (path /slow) three pieces 0.3 s apart, or (/many) numbered parts."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/many":
        await many(send)
        return
    slow = scope["path"] == "/slow"
    headers = [] if slow else [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if not slow:
        await send({"type": "http.response.body", "body": b"ok"})
        return
    for piece in (b"a", b"b", b"c"):
        await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def many(send: Any) -> None:
    """200 numbered parts: some written in one loop iteration, some with a wait between."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(200):
        await send({"type": "http.response.body", "body": b"%d," % i, "more_body": True})
        if i % 7 == 0:
            await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"end", "more_body": False})


def chunked_body(raw: bytes) -> bytes:
    """The body of one chunked response (the head already read off)."""
    body = b""
    while True:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert raw == b"\r\n", "the body's end is last"
            return body
        body, raw = body + raw[:size], raw[size + 2:]


@pytest.fixture(params=[True, False], ids=["coalesced", "plain"])
async def serve(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    listeners: list[HttpListener] = []

    async def start(idle: float) -> tuple[HttpListener, int]:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        listener = HttpListener(app, hypercorn_config(EdgeSettings(http_idle_timeout=idle)),
                                sock, 16, coalesce=request.param)
        listener.start()
        listeners.append(listener)
        return listener, sock.getsockname()[1]

    yield start
    for listener in listeners:
        await listener.stop()


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes the connection (reading whatever came first)."""
    start = time.monotonic()
    async with asyncio.timeout(limit):
        while await reader.read(65536):
            pass
    return time.monotonic() - start


async def test_a_connection_that_sends_nothing_is_closed_at_the_idle_timeout(serve) -> None:
    _, port = await serve(0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert 0.25 <= await closed_after(reader, 5) < 3
    writer.close()


async def test_a_kept_alive_connection_serves_again_then_closes_when_idle(serve) -> None:
    _, port = await serve(0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(3):  # each request stops the timer; each answer starts it again
        writer.write(GET)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"ok"
        await asyncio.sleep(0.3)  # idle, but less than the timeout
    assert 0.1 <= await closed_after(reader, 5) < 3
    writer.close()


async def test_a_response_longer_than_the_idle_timeout_is_not_cut(serve) -> None:
    _, port = await serve(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
    body = b""
    async with asyncio.timeout(5):
        while not body.endswith(b"0\r\n\r\n"):
            body += await reader.read(65536)
    assert b"a" in body and b"c" in body
    writer.close()


async def test_shutdown_closes_idle_connections_at_once(serve) -> None:
    listener, port = await serve(30)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET)
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(reader.readexactly(2), 5)
    stopping = asyncio.create_task(listener.stop())
    assert await closed_after(reader, 3) < 2  # not the 30 s of the idle timeout
    await stopping
    writer.close()


async def test_parts_written_together_arrive_whole_and_in_order(serve) -> None:
    """The connection then serves the next request."""
    _, port = await serve(5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /many HTTP/1.1\r\nhost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    raw = await asyncio.wait_for(reader.readuntil(b"end\r\n0\r\n\r\n"), 5)
    assert chunked_body(raw) == b"".join(b"%d," % i for i in range(200)) + b"end"
    writer.write(GET)
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"ok"
    writer.close()


async def test_an_answer_that_ends_the_connection_is_sent_whole_before_it_closes(serve) -> None:
    """`connection: close`: the end of the body, then the end of the stream, in that order."""
    _, port = await serve(5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /many HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    async with asyncio.timeout(5):
        raw = await reader.read()  # to the server's end of the stream
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert chunked_body(rest) == b"".join(b"%d," % i for i in range(200)) + b"end"
    writer.close()


async def test_a_finished_connection_leaves_nothing_for_the_cyclic_collector(serve) -> None:
    """Hypercorn's server and its protocol point at each other, as do the server and our
    idle timer: unlinked once the connection is over, whoever ended it (the client, with a
    close or a reset, the idle timeout, shutdown)."""
    listener, port = await serve(0.3)

    async def served_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GET)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"ok"

    async def all_served() -> bool | None:
        return True if listener.listener.open_connections == 0 else None

    with cyclic_garbage() as garbage:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            await served_one(reader, writer)
        writer.close()  # by the client
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await served_one(reader, writer)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # by the client, with a reset
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await served_one(reader, writer)
        await closed_after(reader, 5)  # by the idle timeout
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await served_one(reader, writer)
        await listener.stop()  # by shutdown, idle at the time
        writer.close()
        await until(all_served, "the listener's connections to be over")
    assert not kinds(garbage, "hypercorn.", "chatms.", "h11.")
