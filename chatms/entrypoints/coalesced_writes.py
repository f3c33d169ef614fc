"""A connection's writes of one loop iteration leave in one system call.

grpclib writes each message's frames to the transport as soon as they are built: with many
streams on one connection (a backend multiplexing its users' calls), the answers' deltas
that arrive together would each cost a `send`. Hypercorn writes a response's head, each
body part and the body's end separately: a streamed answer's head goes with its first
event, and its last event with the body's end. This transport wrapper gathers what is
written during one iteration of the event loop and writes it once, at the start of the next.
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
