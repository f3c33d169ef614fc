"""One gRPC call's HTTP/2 stream and its handler task, hardened against hostile clients.

grpclib (pinned in pyproject; tests/integration/test_grpc_edge.py fails if an upgrade
changes what is relied on here) reads a request message whole before anyone can look at
its size, lets a reset stream's handler task be cancelled before it runs (so the stream
is never released), and answers framing errors with UNKNOWN. These subclasses close those
gaps without touching the path of a streamed answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import Stream
from grpclib.server import Handler, request_handler

PREFIX_BYTES = 5  # gRPC's message prefix: a compressed flag and a 4-byte length


class GuardedStream(Stream):
    """Refuses a request by its length prefix, before its body is read.

    grpclib's `recv_message` reads the 5-byte prefix, then the body, through
    `recv_data`; each read is checked here. The first message must arrive within
    `body_timeout` of the call's start, and every later message's body within
    `body_timeout` of its prefix (a client-streaming call may pause between messages).
    """

    max_message_bytes: int = 0
    body_timeout: float = 0.0
    unary_request: bool = True
    _prefix_next = True
    _messages = 0
    _deadline: float | None = None

    def guard(self, max_message_bytes: int, body_timeout: float, unary_request: bool) -> None:
        self.max_message_bytes = max_message_bytes
        self.body_timeout = body_timeout
        self.unary_request = unary_request
        self._deadline = asyncio.get_running_loop().time() + body_timeout

    async def recv_data(self, size: int) -> bytes:
        if self._prefix_next:
            data = await self._read(size, self._deadline if self._messages == 0 else None)
            self._prefix_next = False
            if not data:
                if self._messages == 0 and self.unary_request:
                    raise GRPCError(Status.INVALID_ARGUMENT, "the request carries no message")
            elif data[0] != 0:
                raise GRPCError(Status.INVALID_ARGUMENT,
                                "compressed requests are not supported (no grpc-encoding)")
            return data
        self._prefix_next = True
        self._messages += 1
        if size > self.max_message_bytes:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"request is {size} bytes; the limit is {self.max_message_bytes}",
            )
        return await self._read(size, asyncio.get_running_loop().time() + self.body_timeout)

    async def _read(self, size: int, deadline: float | None) -> bytes:
        try:
            async with asyncio.timeout_at(deadline):
                return await super().recv_data(size)
        except TimeoutError:
            raise GRPCError(
                Status.DEADLINE_EXCEEDED,
                f"the request message did not arrive within {self.body_timeout:g}s",
            ) from None
        except AssertionError:  # grpclib's Buffer: the stream ended inside a message
            raise GRPCError(
                Status.INVALID_ARGUMENT, "the request ended inside a message"
            ) from None


class GuardedHandler(Handler):
    """Lets go of a call's task and stream as soon as the task is done.

    grpclib releases the stream in `request_handler`'s `finally`; a client that sends
    HEADERS and RST_STREAM back to back gets the task cancelled before that code runs,
    so the stream stayed in the connection's table for good (~9 KB each). And grpclib
    forgets finished tasks only every tenth call, and a closed connection's handler
    only every tenth connection: a flood kept thousands of finished calls alive.
    """

    def accept(
        self, stream: Any, headers: list[tuple[str, str]], release_stream: Callable[[], Any]
    ) -> None:
        self.__gc_step__()
        task = self.loop.create_task(request_handler(
            self.mapping, stream, headers, self.codec, self.status_details_codec,
            self.dispatch, release_stream,
        ))
        self._tasks[stream] = task

        def forget(task: asyncio.Task[None]) -> None:
            release_stream()
            if self._tasks.get(stream) is task:
                del self._tasks[stream]
            self._cancelled.discard(task)

        task.add_done_callback(forget)
