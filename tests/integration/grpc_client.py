"""A grpcio (grpc.aio) client for ChatStream: a different gRPC implementation than the server's."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from tests.support import AUTH_TOKEN, grpcio_stubs


@dataclass
class StreamResult:
    messages: list[object] = field(default_factory=list)
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def contents(self) -> list[str]:
        return [m.content for m in self.messages]  # type: ignore[attr-defined]

    @property
    def answer(self) -> str:
        return self.contents[-1] if self.messages else ""

    @property
    def chat_id(self) -> str:
        return self.messages[-1].chat_id  # type: ignore[attr-defined]


async def chat_stream(
    target: str,
    user_id: str,
    message: str,
    chat_id: str | None = None,
    token: str | None = AUTH_TOKEN,
    deadline: float = 20,
    detach: bool = False,
) -> StreamResult:
    pb2, pb2_grpc = grpcio_stubs()
    request = pb2.ChatRequest(user_id=user_id, user_message=message, detach=detach)
    if chat_id is not None:
        request.chat_id = chat_id
    metadata = (("authorization", token),) if token is not None else ()
    result = StreamResult()
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb2_grpc.ChatServiceStub(channel).ChatStream(
            request, metadata=metadata, timeout=deadline
        )
        try:
            async for response in call:
                result.messages.append(response)
            result.trailers = dict(await call.trailing_metadata() or ())
        except grpc.aio.AioRpcError as exc:
            result.code, result.details = exc.code(), exc.details() or ""
            result.trailers = dict(exc.trailing_metadata() or ())
    return result
