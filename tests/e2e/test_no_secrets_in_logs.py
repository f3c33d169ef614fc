"""No secret ever reaches the logs, even at DEBUG level and on every error path."""

from __future__ import annotations

import grpc

from tests.e2e.grpc_sync import chat
from tests.fakes.openai import API_KEY, FakeOpenAI, Script
from tests.support import AUTH_TOKEN, grpcio_stubs, new_user


def test_logs_hold_no_secret(serve, fake_openai: FakeOpenAI) -> None:
    """After ok, failed, refused and unauthenticated calls, the log has neither key nor token."""
    proc = serve(LOG_LEVEL="DEBUG")
    user = new_user()
    chat(proc.grpc_target, user, "a normal turn")
    fake_openai.queue(Script(status=401), Script(status=500), Script(pieces=["a"], cut_after=0))
    for _ in range(3):
        try:
            chat(proc.grpc_target, user, "failing turn")
        except grpc.RpcError:
            pass
    pb2, pb2_grpc = grpcio_stubs()
    with grpc.insecure_channel(proc.grpc_target) as channel:
        stub = pb2_grpc.ChatServiceStub(channel)
        for token in (AUTH_TOKEN[:-1], AUTH_TOKEN + "x", "Bearer " + API_KEY):
            try:
                list(stub.ChatStream(pb2.ChatRequest(user_id=user, user_message="hi"),
                                     metadata=(("authorization", token),), timeout=10))
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    assert proc.terminate() == 0
    log = proc.log()
    assert "DEBUG chatms settings" in log  # the log really was written at DEBUG
    for secret in (API_KEY, AUTH_TOKEN, API_KEY[-8:], AUTH_TOKEN[-8:]):
        assert secret not in log
