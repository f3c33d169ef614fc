"""The gRPC listener, hardened: grpclib's server with a guarded HTTP/2 protocol.

What it adds to grpclib (pinned in pyproject; tests/integration/test_grpc_edge.py pins
the behaviour relied on):

- a bounded number of connections (`BoundedListener`), each closed when it has not
  finished the HTTP/2 handshake within `grpc_handshake_timeout` or has had no call for
  `grpc_idle_timeout` (GOAWAY, then close);
- SETTINGS_MAX_CONCURRENT_STREAMS advertised and enforced by h2;
- a budget of client resets and refused calls per connection (a token bucket, refilled
  at a tenth of its size per second); a connection that spends it gets GOAWAY
  ENHANCE_YOUR_CALM (the HTTP/2 "rapid reset" attack);
- calls without the service token, or with metadata that is not ASCII, answered at once
  by a trailers-only response, before any per-call state exists;
- request messages refused by their length prefix (`GuardedStream`).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Collection
from typing import Any, cast

from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.encoding.base import GRPC_CONTENT_TYPE
from grpclib.protocol import AbstractHandler, Connection, EventsProcessor, H2Protocol, Stream
from grpclib.server import Server
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import RemoteSettingsChanged, RequestReceived, StreamReset, TrailersReceived
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings

from chatms.config import EdgeSettings
from chatms.entrypoints.auth import TokenCheck
from chatms.entrypoints.coalesced_writes import CoalescedWrites
from chatms.entrypoints.grpc_stream import GuardedHandler, GuardedStream
from chatms.entrypoints.listener import BoundedListener, Release

# Probes carry no token; reflection tells only what protos/ says.
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Bytes handed to h2 at once: a frame of the default maximum size (16 KiB) in two slices.
FEED_SLICE = 8192


class ResetBudget:
    """A token bucket: `size` resets at once, refilled at `size / 10` per second."""

    __slots__ = ("_left", "_rate", "_size", "_stamp")

    def __init__(self, size: int) -> None:
        self._size = self._left = float(size)
        self._rate = size / 10
        self._stamp = time.monotonic()

    def spend(self) -> bool:
        """Take one; False once the budget is exhausted."""
        now = time.monotonic()
        self._left = min(self._size, self._left + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._left < 1:
            return False
        self._left -= 1
        return True


class GuardedProcessor(EventsProcessor):
    """grpclib's event processor, with the checks that need no per-call state first."""

    def __init__(self, handler: AbstractHandler, connection: Connection,
                 protocol: GuardedProtocol) -> None:
        super().__init__(handler, connection)
        self.protocol = protocol

    def register(self, stream: Stream) -> Callable[[], None]:
        """Like grpclib's, but releasing twice is harmless (see GuardedHandler)."""
        stream_id = cast(int, stream.id)
        self.streams[stream_id] = stream

        def release_stream() -> None:
            if self.streams.pop(stream_id, None) is None:
                return
            self.connection.stream_close_waiter.set()
            if not self.connection.is_closing():
                self.connection.ack(stream_id, stream.buffer.unacked_size())
            self.protocol.last_active = time.monotonic()

        return release_stream

    def process_request_received(self, event: RequestReceived) -> None:
        guard = self.protocol.guard
        stream_id = event.stream_id
        try:  # h2 hands headers over as bytes (see HardenedServer); grpclib wants str
            headers = [(k.decode("ascii"), v.decode("ascii")) for k, v in event.headers]
        except UnicodeDecodeError:
            self.refuse(stream_id, Status.INVALID_ARGUMENT,
                        "metadata keys and values must be ASCII (binary values go in -bin keys)")
            return
        path = next((value for key, value in headers if key == ":path"), "")
        if not path.startswith(OPEN_METHODS):
            token = next((value for key, value in headers if key == "authorization"), None)
            if not guard.tokens.accepts(token):
                self.refuse(stream_id, Status.UNAUTHENTICATED,
                            "missing or invalid authorization token")
                return
        self.protocol.last_active = time.monotonic()
        stream = GuardedStream(self.connection, self.connection._connection,
                               self.connection._transport, stream_id=stream_id)
        stream.guard(guard.max_message_bytes, guard.limits.body_timeout,
                     path not in guard.streaming_requests)
        self.handler.accept(stream, headers, self.register(stream))

    def process_trailers_received(self, event: TrailersReceived) -> None:
        pass  # a client's trailers carry nothing a server reads (and are bytes here)

    def process_stream_reset(self, event: StreamReset) -> None:
        super().process_stream_reset(event)
        if event.remote_reset:
            self.protocol.spend()

    def refuse(self, stream_id: int, status: Status, message: str) -> None:
        """Answer a call trailers-only, then reset its stream if the client still sends."""
        self.protocol.spend()
        h2 = self.connection._connection
        stream = h2.streams.get(stream_id)
        if stream is None or stream.closed:  # already reset by the client, in this same read
            return
        h2.send_headers(stream_id, [
            (":status", "200"), ("content-type", GRPC_CONTENT_TYPE),
            ("grpc-status", str(status.value)), ("grpc-message", message),
        ], end_stream=True)
        if not stream.closed:
            h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)


class EdgeGuard:
    """What every connection of one server checks against (shared, read-only)."""

    def __init__(self, limits: EdgeSettings, tokens: TokenCheck, max_message_bytes: int,
                 streaming_requests: Collection[str]) -> None:
        self.limits = limits
        self.tokens = tokens
        self.max_message_bytes = max_message_bytes
        self.streaming_requests = frozenset(streaming_requests)


class GuardedProtocol(H2Protocol):
    processor: GuardedProcessor

    def __init__(self, handler: AbstractHandler, config: Configuration,
                 h2_config: H2Configuration, guard: EdgeGuard, release: Release) -> None:
        super().__init__(handler, config, h2_config)
        self.guard = guard
        self._release = release
        self._budget = ResetBudget(guard.limits.grpc_max_resets)
        self._timers: list[asyncio.TimerHandle] = []
        self._shaken = False
        self.last_active = time.monotonic()

    def connection_made(self, transport: Any) -> None:
        """grpclib's, with our SETTINGS and processor (h2 sends SETTINGS on initiate)."""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        h2 = H2Connection(config=self.h2_config)
        h2.local_settings = _h2_settings(self.guard.limits.grpc_max_concurrent_streams)
        h2.initiate_connection()
        initial = h2.local_settings.initial_window_size
        if self.config.http2_connection_window_size != initial:
            h2.increment_flow_control_window(self.config.http2_connection_window_size - initial)
        if self.config.http2_stream_window_size != initial:
            h2.update_settings({
                SettingCodes.INITIAL_WINDOW_SIZE: self.config.http2_stream_window_size})
        if self.guard.limits.grpc_coalesce_writes:
            transport = CoalescedWrites(transport)
        self.connection = Connection(h2, transport, config=self.config)
        self.connection.flush()
        self.connection.initialize()
        self.processor = GuardedProcessor(self.handler, self.connection, self)
        loop = asyncio.get_running_loop()
        limits = self.guard.limits
        self._timers = [
            loop.call_later(limits.grpc_handshake_timeout, self._handshake_over),
            loop.call_later(limits.grpc_idle_timeout, self._check_idle),
        ]

    def data_received(self, data: bytes) -> None:
        # A big read goes to h2 a slice at a time, so that a flood of resets is cut off by
        # its GOAWAY before h2 decodes the thousands of frames a read can hold behind it.
        if len(data) <= FEED_SLICE:
            if self._feed(data):
                self.connection.flush()
            return
        for start in range(0, len(data), FEED_SLICE):
            if not self._feed(data[start:start + FEED_SLICE]):
                return
        self.connection.flush()

    def _feed(self, data: bytes) -> bool:
        """Process h2's events for `data`; False once the connection is closing."""
        try:
            events = self.connection.feed(data)
        except ProtocolError:  # h2 has queued a GOAWAY with the reason: send it, then close
            self._close()
            return False
        for event in events:
            if not self._shaken and isinstance(event, RemoteSettingsChanged):
                self._shaken = True
            self.processor.process(event)
            if self.connection.is_closing():
                return False
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in self._timers:
            timer.cancel()
        super().connection_lost(exc)
        # The processor points back at this protocol: unlinked, a closed connection goes
        # when dropped, not at the cyclic collector's next full pass.
        del self.processor
        self._release()

    def spend(self) -> None:
        """A reset or refused call; too many in too short a time closes the connection."""
        if not self._budget.spend():
            self.goaway(ErrorCodes.ENHANCE_YOUR_CALM)

    def goaway(self, code: ErrorCodes) -> None:
        if self.connection.is_closing():
            return
        self.connection._connection.close_connection(error_code=code)
        self._close()

    def _close(self) -> None:
        if not self.connection.is_closing():
            self.connection.flush()
        self.processor.close("connection closed by the server")

    def _handshake_over(self) -> None:
        if not self._shaken:
            self._close()  # not even a SETTINGS frame: nothing to say GOAWAY to

    def _check_idle(self) -> None:
        idle_for = time.monotonic() - self.last_active
        timeout = self.guard.limits.grpc_idle_timeout
        if not self.processor.streams and idle_for >= timeout:
            self.goaway(ErrorCodes.NO_ERROR)
            return
        wait = timeout - idle_for if not self.processor.streams else timeout
        self._timers[1] = asyncio.get_running_loop().call_later(max(wait, 0.05), self._check_idle)


def _h2_settings(max_streams: int) -> Settings:
    return Settings(client=False, initial_values={
        SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
        SettingCodes.MAX_HEADER_LIST_SIZE: H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
    })


class HardenedServer(Server):
    """grpclib's Server on a BoundedListener, serving GuardedProtocol connections."""

    def __init__(self, handlers: Collection[Any], *, guard_limits: EdgeSettings,
                 tokens: TokenCheck, max_message_bytes: int, **kwargs: Any) -> None:
        super().__init__(handlers, **kwargs)
        streaming = [path for path, h in self._mapping.items() if h.cardinality.client_streaming]
        self.guard = EdgeGuard(guard_limits, tokens, max_message_bytes, streaming)
        # Headers as bytes: a non-ASCII byte then fails one call, not the connection.
        self._h2_config = H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False,
            validate_outbound_headers=False, normalize_inbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.listener: BoundedListener | None = None

    def _guarded_protocol(self, release: Release) -> GuardedProtocol:
        self.__gc_step__()
        handler = GuardedHandler(self._mapping, self._codec, self._status_details_codec,
                                 self.__dispatch__)
        self._handlers.add(handler)
        protocol = GuardedProtocol(handler, self._config, self._h2_config, self.guard, release)
        return protocol

    async def start_on(self, sock: socket.socket, cap: int) -> None:
        """Serve on a bound, listening socket, holding at most `cap` connections."""
        loop = asyncio.get_running_loop()

        async def serve(conn: socket.socket, release: Release) -> None:
            try:
                await loop.connect_accepted_socket(
                    lambda: self._guarded_protocol(release), sock=conn)
            except OSError:
                conn.close()
                release()

        self.listener = BoundedListener(sock, cap, serve)
        self.listener.start()
        self._server = self.listener  # type: ignore[assignment]  # close()/wait_closed()
        self._server_closed_fut = loop.create_future()
