"""No bytes sent to any RPC produce UNKNOWN or INTERNAL, nor a traceback in the log."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.attackers import grpc_call
from tests.support import AUTH_TOKEN, ServeProcess

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
# Every RPC the server has, with how grpcio calls it.
RPCS = {
    "/pb.ChatService/ChatStream": "unary_stream",
    "/pb.ChatService/ListChats": "unary_unary",
    "/pb.ChatService/GetChat": "unary_unary",
    "/pb.ChatService/EndChat": "unary_unary",
    "/pb.ChatService/ResumeStream": "unary_stream",
    "/pb.ChatService/StopTurn": "unary_unary",
    "/grpc.health.v1.Health/Check": "unary_unary",
    "/grpc.health.v1.Health/Watch": "unary_stream",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "stream_stream",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "stream_stream",
}
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
PROTOBUF_ISH = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 7), st.binary(max_size=12)), max_size=6
).map(lambda fields: b"".join(bytes([(n << 3 | w) & 0x7F | (0x80 if n > 15 else 0)])
                              + (bytes([n >> 4]) if n > 15 else b"") + body
                              for n, w, body in fields))


@pytest.fixture
def proc(serve) -> Iterator[ServeProcess]:
    yield serve(MAX_MESSAGE_CHARS="200")


def _status(channel: grpc.Channel, path: str, kind: str, payload: bytes) -> grpc.StatusCode:
    method = getattr(channel, kind)(path)
    metadata = (("authorization", AUTH_TOKEN),)
    try:
        if kind == "unary_unary":
            method(payload, metadata=metadata, timeout=5)
        elif kind == "unary_stream":
            for _ in method(payload, metadata=metadata, timeout=2):
                pass
        else:
            for _ in method(iter([payload]), metadata=metadata, timeout=5):
                pass
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@SETTINGS
@given(payload=st.binary(max_size=200) | PROTOBUF_ISH)
def test_any_message_bytes_to_every_rpc(proc: ServeProcess, payload: bytes) -> None:
    """Arbitrary message bytes, properly framed, on every RPC: never UNKNOWN or INTERNAL."""
    with grpc.insecure_channel(proc.grpc_target) as channel:
        for path, kind in RPCS.items():
            code = _status(channel, path, kind, payload)
            assert code not in NEVER, (path, payload, code)
    assert "Traceback" not in proc.log()


@SETTINGS
@given(body=st.binary(max_size=64), path=st.sampled_from(sorted(RPCS)))
def test_any_body_bytes_unframed_to_every_rpc(proc: ServeProcess, body: bytes, path: str) -> None:
    """Arbitrary DATA, gRPC framing or not: the call gets a status that is not UNKNOWN."""
    port = int(proc.env["GRPC_SERVER_PORT"])
    found, (sock, _) = grpc_call(port, path, body, token=AUTH_TOKEN)
    sock.close()
    assert found is not None, "the connection was dropped"
    assert found.get(b"grpc-status") not in (b"2", b"13"), (path, body, found)
    assert "Traceback" not in proc.log()
