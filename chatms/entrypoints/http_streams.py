"""Resume and stop over HTTP: `GET /chats/{chat_id}/stream` and `POST /chats/{chat_id}/stop`.

A resumed stream is Server-Sent Events like `POST /chat`'s: each `delta` event's `id` is
the answer's length after it (Unicode code points), so a client that reconnects sends it
back as `Last-Event-ID` (or `?after=N`) and gets the rest exactly once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from chatms.domain import errors
from chatms.entrypoints.http_errors import error_body, http_error
from chatms.entrypoints.http_requests import RequestReader, map_errors, text_field, unauthorized
from chatms.entrypoints.http_sse import SSE_HEADERS, delta_event, sse_event, until_disconnect
from chatms.service.chats import ChatService
from chatms.service.resume import Resumed

MAX_POSITION_DIGITS = 10
MAX_POSITION = 2**31 - 1  # as ChatResponse.position (int32)


def _position(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_POSITION_DIGITS:
        raise errors.InvalidInput("the position (Last-Event-ID or after) must be a whole number")
    if int(raw) > MAX_POSITION:
        raise errors.InvalidInput(f"the position must be at most {MAX_POSITION}")
    return int(raw)


class ResumeExchange:
    """Sends a resumed answer as SSE until it is final; a client that leaves just stops it."""

    def __init__(self, chat_id: str, resumed: Resumed, after: int) -> None:
        self.chat_id = chat_id
        self.resumed = resumed
        self.after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        work = asyncio.ensure_future(self._send_all(send))
        gone = asyncio.ensure_future(until_disconnect(receive))
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, gone):
                task.cancel()
            await asyncio.gather(work, gone, return_exceptions=True)

    async def _send_all(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        position, first = self.after, True
        try:
            async for piece in self.resumed:
                data: dict[str, Any] = {"delta": piece.text}
                if first:
                    data = {"chat_id": self.chat_id, **data}
                    first = False
                position = piece.position
                await send({"type": "http.response.body", "more_body": True,
                            "body": delta_event(position, data)})
        except errors.ChatError as exc:
            _, code = http_error(exc)
            await send({"type": "http.response.body", "more_body": False,
                        "body": sse_event(b"error", error_body(code, str(exc)))})
            return
        completion = self.resumed.completion
        done = {"chat_id": self.chat_id, "position": position,
                "completion": completion.value if completion else None}
        await send({"type": "http.response.body", "more_body": False,
                    "body": sse_event(b"done", done)})


def stream_routes(chats: ChatService, requests: RequestReader) -> list[BaseRoute]:
    """The resume and stop routes."""

    async def resume(request: Request) -> Response:
        if not requests.authorized(request):
            return unauthorized()
        last = request.headers.get("last-event-id")
        after = _position(last if last is not None else request.query_params.get("after"))
        user_id = request.query_params.get("user_id", "")
        chat_id = request.path_params["chat_id"]
        resumed = await chats.resume(user_id, chat_id, after)  # errors come before the stream
        return ResumeExchange(chat_id, resumed, after)  # type: ignore[return-value]

    async def stop(request: Request) -> Response:
        if not requests.authorized(request):
            return unauthorized()
        data = await requests.json_body(request)
        user_id = text_field(data, "user_id")
        assert user_id is not None
        outcome = await chats.stop(user_id, request.path_params["chat_id"])
        return JSONResponse({"chat_id": outcome.chat_id, "stopped": outcome.stopped,
                             "position": outcome.position})

    return [
        Route("/chats/{chat_id}/stream", map_errors(resume), methods=["GET"]),
        Route("/chats/{chat_id}/stop", map_errors(stop), methods=["POST"]),
    ]
