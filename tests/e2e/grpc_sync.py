"""A blocking grpcio client, for driving a `chatms serve` process from plain test code."""

from __future__ import annotations

import grpc

from tests.support import AUTH_TOKEN, grpcio_stubs


def chat(
    target: str, user: str, text: str, chat_id: str | None = None, model: str | None = None
) -> list[object]:
    pb2, pb2_grpc = grpcio_stubs()
    request = pb2.ChatRequest(user_id=user, user_message=text)
    if chat_id:
        request.chat_id = chat_id
    if model is not None:
        request.model = model
    with grpc.insecure_channel(target) as channel:
        stub = pb2_grpc.ChatServiceStub(channel)
        return list(stub.ChatStream(request, metadata=(("authorization", AUTH_TOKEN),),
                                    timeout=30))
