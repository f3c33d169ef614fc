"""A connection's writes of one loop iteration leave in one system call.

grpclib writes each message's frames to the transport as soon as they are built: with many
streams on one connection (a backend multiplexing its users' calls), the answers' deltas
that arrive together would each cost a `send`. `CoalescedWrites` gathers what is written
during one iteration of the event loop and writes it once, at the start of the next.

An HTTP/1.1 connection carries one response at a time, so holding its writes would only
delay a streamed answer's events. Hypercorn writes a response's head on its own, though:
`HeadWithBody` holds just the head, until the first part of the body (a streamed answer's
first event, a JSON answer's body) joins it, or the loop's next iteration.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescedWrites:
    """Wraps a transport: `write` is deferred to the loop's next iteration, in order; every
    other call goes to the wrapped transport (`close` and `write_eof` first write what is
    pending)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


HTTP_HEAD = b"HTTP/1.1 "


class HeadWithBody(CoalescedWrites):
    """Wraps an HTTP/1.1 connection's transport: a response head waits for the first part
    of its body (or the loop's next iteration); every other write goes out at once."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._pending:  # the head, waiting for this
            self._pending.append(bytes(data))
            self._flush()
        elif isinstance(data, bytes) and data.startswith(HTTP_HEAD) and data.endswith(b"\r\n\r\n"):
            super().write(data)  # h11 writes a head as bytes; no slice copied per event
        elif not self._transport.is_closing():
            self._transport.write(data)
