"""No secret ever reaches the logs, even at DEBUG level and on every error path."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest

from tests.e2e.grpc_sync import chat
from tests.fakes.openai import API_KEY, FakeOpenAI, Script
from tests.fakes.twilio import ACCOUNT_SID, inbound_form, new_sender, sign
from tests.fakes.twilio import AUTH_TOKEN as TWILIO_TOKEN
from tests.support import AUTH_TOKEN, grpcio_stubs, new_user


def test_logs_hold_no_secret(serve, fake_openai: FakeOpenAI, fake_twilio) -> None:
    """After ok, failed, refused and unauthenticated calls on every door, no secret is logged."""
    proc = serve(LOG_LEVEL="DEBUG", TWILIO_ACCOUNT_SID=ACCOUNT_SID,
                 TWILIO_AUTH_TOKEN=TWILIO_TOKEN, TWILIO_API_BASE_URL=fake_twilio.base_url)
    url = proc.http_url + "/webhooks/twilio/whatsapp"
    form = inbound_form(new_sender(), "hello from whatsapp")
    fake_twilio.fail_next(500)  # one failed send on the way: its error path is logged too
    for signature in (sign(url, form), "forged"):
        assert httpx.post(url, data=form, headers={"x-twilio-signature": signature}).is_success \
            == (signature != "forged")
    asyncio.run(fake_twilio.wait_for(form["From"], 1))
    for token in (AUTH_TOKEN, "nope"):
        httpx.post(proc.http_url + "/chat", json={"user_id": "u", "user_message": "hi"},
                   headers={"authorization": token}, timeout=20)
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
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.ChatStream(pb2.ChatRequest(user_id=user, user_message="hi"),
                                     metadata=(("authorization", token),), timeout=10))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert proc.terminate() == 0
    log = proc.log()
    assert "DEBUG chatms settings" in log  # the log really was written at DEBUG
    for secret in (API_KEY, AUTH_TOKEN, TWILIO_TOKEN):
        assert secret not in log and secret[-8:] not in log
