"""The gRPC listener against raw HTTP/2 clients: each hostile input gets one call's status.

Also pins the grpclib and h2 behaviour that chatms/entrypoints/grpc_edge.py and
grpc_stream.py rely on: an upgrade that changes it fails here first.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import struct
from importlib.metadata import version

import grpc
import grpclib.protocol
import grpclib.server
import grpclib.stream
import pytest

from chatms.entrypoints.grpc_edge import ResetBudget
from tests.attackers import (
    END_HEADERS,
    HEADERS,
    PREFACE,
    SETTINGS,
    FrameReader,
    closed_by_server,
    frame,
    grpc_call,
    grpc_frame,
    request_block,
)
from tests.fakes.openai import Script
from tests.integration.grpc_client import chat_stream
from tests.integration.test_hostile_input import call_raw
from tests.support import AUTH_TOKEN, new_user
from tests.support import grpc_target as target

CHAT = "/pb.ChatService/ChatStream"
HEALTH = "/grpc.health.v1.Health/Check"
INVALID_ARGUMENT, UNAUTHENTICATED = b"3", b"16"
SETTINGS_MAX_CONCURRENT_STREAMS, PROTOCOL_ERROR = 3, 1


def _field(number: int, value: bytes) -> bytes:
    return bytes([number << 3 | 2, len(value)]) + value


VALID_CHAT = _field(2, b"alice") + _field(3, b"hi")


async def in_thread(*args, **kwargs):  # type: ignore[no-untyped-def]
    """grpc_call (with the service token unless told otherwise) off the event loop."""
    kwargs.setdefault("token", AUTH_TOKEN)
    return await asyncio.to_thread(grpc_call, *args, **kwargs)


def handler_state(app) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Calls with a task, and streams registered, over every open connection."""
    handlers = app.grpc_server._handlers
    tasks = sum(len(h._tasks) for h in handlers)
    return tasks, len(handlers)


async def test_unauthenticated_call_is_answered_before_any_per_call_state(start_app) -> None:
    app = await start_app()
    port = app.settings.server.grpc_port
    sock_conn = None
    for _ in range(20):  # streams left open by the client: nothing may be kept for them
        found, sock_conn = await in_thread(port, CHAT, b"", token="wrong", end=False,
                                           sock_conn=sock_conn)
        assert found is not None and found[b"grpc-status"] == UNAUTHENTICATED
    assert handler_state(app)[0] == 0
    found, _ = await in_thread(port, HEALTH, grpc_frame(b""), sock_conn=sock_conn)  # same one
    assert found is not None and found[b"grpc-status"] == b"0"
    sock_conn[0].close()


async def test_request_over_the_limit_is_refused_from_its_length_prefix(start_app) -> None:
    app = await start_app(GRPC_MAX_MESSAGE_BYTES="4096")
    # 200 MB announced, 1 KB sent, the stream left open: the answer cannot wait for the body.
    body = grpc_frame(b"x" * 1024, declared=200_000_000)
    found, (sock, _) = await in_thread(app.settings.server.grpc_port, CHAT, body, end=False)
    sock.close()
    assert found is not None and found[b"grpc-status"] == INVALID_ARGUMENT
    assert b"200000000 bytes; the limit is 4096" in found[b"grpc-message"]


async def test_non_ascii_metadata_fails_that_call_only(start_app) -> None:
    app = await start_app()
    port = app.settings.server.grpc_port
    found, sock_conn = await in_thread(port, CHAT, grpc_frame(VALID_CHAT),
                                       extra=[(b"x-note", "café".encode())])
    assert found is not None and found[b"grpc-status"] == INVALID_ARGUMENT
    assert b"ASCII" in found[b"grpc-message"]
    found, _ = await in_thread(port, HEALTH, grpc_frame(b""), sock_conn=sock_conn)
    assert found is not None and found[b"grpc-status"] == b"0", "the connection was dropped"
    sock_conn[0].close()


@pytest.mark.parametrize("body, message", [
    (b"\x01" + struct.pack(">I", 2) + b"xx", b"compressed"),     # flag set, no grpc-encoding
    (struct.pack(">BI", 0, 10) + b"abc", b"ended inside a message"),  # truncated frame
    (b"", b"carries no message"),                                  # no message at all
])
async def test_broken_framing_is_invalid_argument(start_app, body: bytes, message: bytes) -> None:
    app = await start_app()
    found, (sock, _) = await in_thread(app.settings.server.grpc_port, CHAT, body)
    sock.close()
    assert found is not None and found[b"grpc-status"] == INVALID_ARGUMENT
    assert message in found[b"grpc-message"]


def _tag(number: int, wire: int) -> bytes:
    return bytes([number << 3 | wire])


def malformed(string_field: int, int_field: int | None) -> dict[str, bytes]:
    """Bytes betterproto2 used to decode leniently, often as the wrong Python type."""
    s = string_field
    cases = {
        "varint for a string": _tag(s, 0) + b"\x05",
        "fixed64 for a string": _tag(s, 1) + b"\x00" * 8,
        "fixed32 for a string": _tag(s, 5) + b"\x00" * 4,
        "truncated varint": _tag(s, 0) + b"\xff",
        "oversized length": _tag(s, 2) + b"\xff\xff\xff\xff\x0f",
        "length past the end": _tag(s, 2) + b"\x05ab",
        "group wire type": _tag(s, 3),
        "wire type 7": _tag(s, 7),
        "field number 0": b"\x02\x01x",
        "invalid UTF-8": _tag(s, 2) + b"\x02\xff\xfe",
    }
    if int_field is not None:
        cases["bytes for an int or bool"] = _tag(int_field, 2) + b"\x01x"
    return cases


CHAT_ID = b"6f1c1b2a-0000-4000-8000-000000000000"
# path -> (kind, a valid request, its string field, its int/bool field)
RPCS = {
    "/pb.ChatService/ChatStream": ("unary_stream", VALID_CHAT, 3, 4),
    "/pb.ChatService/ListChats": ("unary_unary", _field(1, b"alice"), 3, 2),
    "/pb.ChatService/GetChat": ("unary_unary", _field(1, b"alice") + _field(2, CHAT_ID), 2, None),
    "/pb.ChatService/EndChat": ("unary_unary", _field(1, b"alice") + _field(2, CHAT_ID), 2, None),
    "/grpc.health.v1.Health/Check": ("unary_unary", b"", 1, None),
}


async def test_malformed_protobuf_is_invalid_argument_on_every_rpc(start_app) -> None:
    app = await start_app()
    failures = []
    async with grpc.aio.insecure_channel(target(app)) as channel:
        for path, (kind, valid, string_field, int_field) in RPCS.items():
            method = getattr(channel, kind)(path)
            for name, bad in malformed(string_field, int_field).items():
                code = await _code(method, kind, valid + bad)
                # protobuf's own parser (health) keeps a mismatched wire type as an unknown
                # field, as the spec says; ours refuse it. Neither may answer UNKNOWN.
                allowed = {grpc.StatusCode.INVALID_ARGUMENT}
                if path.startswith("/grpc.") and "wire type" not in name:
                    allowed.add(grpc.StatusCode.OK)
                if code not in allowed:
                    failures.append((path, name, code))
    assert failures == []


async def _code(method, kind: str, payload: bytes) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        reply = method(payload, metadata=(("authorization", AUTH_TOKEN),), timeout=10)
        if kind == "unary_stream":
            async for _ in reply:
                pass
        else:
            await reply
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_well_formed_request_with_unknown_fields_still_works(start_app) -> None:
    app = await start_app()
    extra = bytes([15 << 3 | 0, 1]) + b"\x85\x01" + b"\x00" * 4  # field 15 varint, 16 fixed32
    error = await call_raw(target(app), _field(2, new_user().encode()) + _field(3, b"hi") + extra)
    assert error is None


def test_reset_budget_refills() -> None:
    budget = ResetBudget(10)
    assert all(budget.spend() for _ in range(10))
    assert not budget.spend()
    budget._stamp -= 1.0  # a second later: a tenth of the size is back
    assert budget.spend()


def test_grpclib_and_h2_still_behave_as_relied_on() -> None:
    """What grpc_edge.py and grpc_stream.py assume of the pinned versions."""
    assert version("grpclib") == "0.4.9"
    # recv_message reads the prefix, then exactly the declared length, through recv_data.
    source = inspect.getsource(grpclib.stream.recv_message)
    assert "stream.recv_data(5)" in source and "stream.recv_data(message_len)" in source
    # A short body surfaces as AssertionError from Buffer.read (mapped to INVALID_ARGUMENT).
    assert "Received less data than expected" in inspect.getsource(grpclib.protocol.Buffer.read)
    # The stream is released only in request_handler's finally (hence GuardedHandler).
    handler_source = inspect.getsource(grpclib.server.request_handler)
    assert handler_source.rstrip().endswith("release_stream()")
    # Handler keeps tasks in _tasks / _cancelled; Server builds protocols in one method.
    assert {"_tasks", "_cancelled"} <= set(vars(grpclib.server.Handler(
        {}, None, None, None)))  # type: ignore[arg-type]
    assert "H2Protocol(handler, self._config, self._h2_config)" in inspect.getsource(
        grpclib.server.Server._protocol_factory)
    # EventsProcessor dispatches through a table built from bound methods at init.
    assert "RequestReceived: self.process_request_received" in inspect.getsource(
        grpclib.protocol.EventsProcessor.__init__)


async def test_max_concurrent_streams_is_advertised_and_enforced(start_app) -> None:
    app = await start_app(GRPC_MAX_CONCURRENT_STREAMS="5")

    def open_six() -> FrameReader:
        sock = socket.create_connection(("127.0.0.1", app.settings.server.grpc_port), timeout=10)
        reader = FrameReader(sock)
        block = request_block(token=AUTH_TOKEN)
        out = PREFACE + frame(SETTINGS, 0, 0)
        out += b"".join(frame(HEADERS, END_HEADERS, 1 + 2 * i, block) for i in range(6))
        sock.sendall(out)
        reader.wait_closed(3)
        sock.close()
        return reader

    reader = await asyncio.to_thread(open_six)
    assert reader.settings.get(SETTINGS_MAX_CONCURRENT_STREAMS) == 5
    assert reader.goaway == PROTOCOL_ERROR and reader.closed


async def test_silent_and_handshake_only_connections_are_closed(start_app) -> None:
    app = await start_app(GRPC_HANDSHAKE_TIMEOUT="0.5", GRPC_IDLE_TIMEOUT="1")
    port = app.settings.server.grpc_port

    def watch() -> tuple[bool, bool, int | None]:
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        shaken = socket.create_connection(("127.0.0.1", port), timeout=10)
        shaken.sendall(PREFACE + frame(SETTINGS, 0, 0))
        reader = FrameReader(shaken)
        silent_closed = closed_by_server(silent, 3)
        reader.wait_closed(3)
        silent.close()
        shaken.close()
        return silent_closed, reader.closed, reader.goaway

    silent_closed, shaken_closed, goaway = await asyncio.to_thread(watch)
    assert silent_closed, "a connection that never started HTTP/2 was kept"
    assert shaken_closed and goaway == 0, "an idle HTTP/2 connection was kept"


async def test_idle_timer_spares_a_connection_with_a_call_in_flight(start_app, fake_openai) -> None:
    app = await start_app(GRPC_IDLE_TIMEOUT="0.5")
    fake_openai.queue(Script(pieces=["a ", "b ", "c "], gap=0.6))  # a turn longer than idle
    result = await chat_stream(target(app), new_user(), "hello")
    assert result.code == grpc.StatusCode.OK and result.answer == "a b c "
