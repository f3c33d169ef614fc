"""CoalescedWrites: one send per loop iteration, in order, nothing lost on close or EOF."""

from __future__ import annotations

import asyncio
from typing import Any

from chatms.entrypoints.coalesced_writes import CoalescedWrites, HeadWithBody


class RecordingTransport:
    """Stands in for the operating system's side of a transport: keeps each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_writes_of_one_iteration_leave_together_in_order() -> None:
    raw = RecordingTransport()
    writes = CoalescedWrites(raw)  # type: ignore[arg-type]
    writes.write(b"a")
    writes.write(b"")
    writes.write(bytearray(b"b"))
    writes.write(memoryview(b"c"))
    assert raw.writes == []
    await asyncio.sleep(0)
    assert raw.writes == [b"abc"]
    writes.write(b"d")
    await asyncio.sleep(0)
    assert raw.writes == [b"abc", b"d"]
    assert writes.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is passed on


async def test_close_sends_what_is_pending_and_later_writes_are_dropped() -> None:
    raw = RecordingTransport()
    writes = CoalescedWrites(raw)  # type: ignore[arg-type]
    writes.write(b"goaway")
    writes.close()
    assert raw.writes == [b"goaway"] and raw.closed
    writes.write(b"late")
    await asyncio.sleep(0)
    assert raw.writes == [b"goaway"]


async def test_the_end_of_the_stream_goes_after_what_is_pending() -> None:
    raw = RecordingTransport()
    writes = CoalescedWrites(raw)  # type: ignore[arg-type]
    writes.write(b"last part")
    writes.write_eof()
    assert raw.writes == [b"last part", b"<eof>"]


HEAD = b"HTTP/1.1 200 \r\ncontent-type: text/event-stream\r\n\r\n"


async def test_an_http_head_waits_for_its_body_and_nothing_else_waits() -> None:
    raw = RecordingTransport()
    writes = HeadWithBody(raw)  # type: ignore[arg-type]
    writes.write(HEAD)
    assert raw.writes == []
    writes.write(b"first event")
    assert raw.writes == [HEAD + b"first event"]  # at once, not an iteration later
    writes.write(b"second event")
    assert raw.writes == [HEAD + b"first event", b"second event"]
    await asyncio.sleep(0)
    assert len(raw.writes) == 2


async def test_an_http_head_alone_leaves_at_the_next_iteration() -> None:
    raw = RecordingTransport()
    writes = HeadWithBody(raw)  # type: ignore[arg-type]
    writes.write(HEAD)
    await asyncio.sleep(0)
    assert raw.writes == [HEAD]
    writes.write(b"body")
    writes.write_eof()
    assert raw.writes == [HEAD, b"body", b"<eof>"]


async def test_over_a_real_socket_the_peer_reads_everything_in_order() -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        coalesced = CoalescedWrites(writer.transport)  # type: ignore[arg-type]
        for i in range(100):
            coalesced.write(b"%d," % i)
        coalesced.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received.set_result(await asyncio.wait_for(reader.read(), 5))  # to EOF: closed after
    writer.close()
    server.close()
    await server.wait_closed()
    assert received.result() == b"".join(b"%d," % i for i in range(100))
