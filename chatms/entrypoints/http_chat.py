"""The HTTP chat door: `POST /chat` (JSON or Server-Sent Events) and the history routes.

Thin like the gRPC door: every turn runs through `ChatService.turn`, and domain errors map
to HTTP statuses in the one table in `http_errors.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatms.domain import errors
from chatms.entrypoints.auth import TokenCheck
from chatms.entrypoints.http_edge import BodyTimeout, BodyTooLarge, read_body
from chatms.entrypoints.http_errors import (
    chat_error_response,
    error_body,
    error_response,
    http_error,
    retry_after,
)
from chatms.service.chats import ChatService, parse_chat_id
from chatms.service.ports import StoredMessage

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]
DEFAULT_PAGE = 20


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + _json(data) + b"\n\n"


def delta_event(position: int, data: dict[str, Any]) -> bytes:
    """A delta with its position as the SSE id, which a reconnecting client sends back."""
    return b"id: %d\nevent: delta\ndata: %b\n\n" % (position, _json(data))


async def _until_disconnect(receive: Receive) -> None:
    """Return when the client goes away; the request body has already been read."""
    while (await receive())["type"] != "http.disconnect":
        pass


class TurnExchange:
    """An ASGI response that runs one turn and answers it as JSON or as Server-Sent Events.

    The turn runs beside a watcher of the client's connection. When the client goes away
    the turn goes on to the end and is stored whole (`DISCONNECTED_TURNS=continue`, within
    the service's bounds on detached turns), or is cancelled at once (`cancel`, or over
    the bounds) and stores the partial answer flagged cancelled. Errors before the first
    byte is sent are JSON with a status.
    """

    def __init__(
        self, chats: ChatService, user_id: str, chat_id: str | None, text: str, sse: bool,
        model: str | None = None, carry_on: bool = True,
    ) -> None:
        self.chats = chats
        self.model = model
        self.user_id = user_id
        self.chat_id = chat_id
        self.text = text
        self.sse = sse
        self.carry_on = carry_on
        self.started = False
        self.gone = False  # the client left: what is left of the turn is not sent
        self._send: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._send = send
        work = asyncio.ensure_future(self._run(self._send_while_there))
        gone = asyncio.ensure_future(_until_disconnect(receive))
        detached = False
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
            detached = not work.done() and self._detach(work)
        finally:
            gone.cancel()
            if not detached:
                work.cancel()  # no-op when the turn is done; else the client left
            await asyncio.gather(gone, *(() if detached else (work,)), return_exceptions=True)
        if not detached and not work.cancelled() and (failure := work.exception()) is not None:
            raise failure

    def _detach(self, work: asyncio.Future[None]) -> bool:
        """The client left: let the turn run on, if allowed."""
        self.gone = True
        if not self.carry_on or not self.chats.detached.detach(self.user_id):
            return False
        work.add_done_callback(lambda _: self.chats.detached.attach(self.user_id))
        return True

    async def _send_while_there(self, message: Any) -> None:
        if self.gone or self._send is None:
            return
        try:
            await self._send(message)
        except OSError:  # the connection broke under the write: the client left
            self.gone = True

    async def _run(self, send: Send) -> None:
        try:
            await self._turn(send)
        except errors.ChatError as exc:
            status, code = http_error(exc)
            if self.started:
                await send({"type": "http.response.body", "more_body": False,
                            "body": _event(b"error", error_body(code, str(exc)))})
            else:
                await self._send_json(send, status, error_body(code, str(exc)), retry_after(exc))

    async def _turn(self, send: Send) -> None:
        async with self.chats.turn(self.user_id, self.chat_id, self.text, "http",
                                   self.model) as turn:
            deltas = aiter(turn)
            if self.sse:
                # Wait for the first delta before the headers, so that upstream failures
                # before the answer starts still get a fitting status code.
                first = await anext(deltas, None)
                await send({"type": "http.response.start", "status": 200,
                            "headers": SSE_HEADERS})
                self.started = True
                if first is not None:
                    position = len(first)
                    await self._send_more(send, delta_event(
                        position, {"chat_id": turn.chat_id, "delta": first}))
                    async for delta in deltas:
                        position += len(delta)
                        await self._send_more(send, delta_event(position, {"delta": delta}))
            else:
                async for _ in deltas:
                    pass
        # Leaving the turn stored it: only now is the answer reported as done.
        result = turn.result
        if not self.sse:
            await self._send_json(send, 200, {
                "chat_id": result.chat_id, "user_id": self.user_id, "content": result.content})
            return
        usage = result.usage
        done = {
            "chat_id": result.chat_id,
            "content": result.content,
            "position": len(result.content),
            "completion": result.completion.value,
            "finish_reason": result.finish_reason,
            "usage": {"prompt_tokens": usage.prompt_tokens,
                      "completion_tokens": usage.completion_tokens},
        }
        await send({"type": "http.response.body", "body": _event(b"done", done),
                    "more_body": False})

    @staticmethod
    async def _send_more(send: Send, body: bytes) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _send_json(self, send: Send, status: int, obj: dict[str, Any],
                         extra: list[tuple[bytes, bytes]] | None = None) -> None:
        self.started = True
        await send({"type": "http.response.start", "status": status,
                    "headers": JSON_HEADERS + (extra or [])})
        await send({"type": "http.response.body", "body": _json(obj), "more_body": False})


# Starlette runs whatever ASGI app an endpoint returns: a Response, or a TurnExchange.
Endpoint = Callable[[Request], Awaitable[Response | ASGIApp]]


def _guarded(endpoint: Endpoint) -> Endpoint:
    """Turn domain errors raised before a response exists into JSON errors."""

    async def guarded(request: Request) -> Response | ASGIApp:
        try:
            return await endpoint(request)
        except errors.ChatError as exc:
            return chat_error_response(exc)
        except BodyTimeout as exc:  # the client is too slow to be worth keeping
            response = error_response(408, "request_timeout", str(exc))
            response.headers["connection"] = "close"
            return response

    return guarded


def _text_field(data: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise errors.InvalidInput(f"{name} must be a string")
    return value


def _stamp(value: datetime) -> str:
    return value.isoformat()


def _stored(m: StoredMessage) -> dict[str, Any]:
    """One message of a chat's history; `delivery` only for WhatsApp answers, `attachments`
    only where media came with the message."""
    shown: dict[str, Any] = {
        "seq": m.seq, "role": m.role, "content": m.content, "tokens": m.tokens,
        "erased": m.erased, "completion": m.completion, "finish_reason": m.finish_reason,
        "created_at": _stamp(m.created_at),
    }
    if m.delivery:
        shown["delivery"] = m.delivery
    if m.attachments:
        shown["attachments"] = [a.as_json() for a in m.attachments]
    return shown


class HttpChat:
    def __init__(
        self, chats: ChatService, tokens: TokenCheck, max_body_bytes: int,
        body_timeout: float, carry_on: bool = True,
    ) -> None:
        self.chats = chats
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.carry_on = carry_on  # DISCONNECTED_TURNS=continue

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/chat", _guarded(self.chat), methods=["POST"]),
            Route("/chats", _guarded(self.list_chats), methods=["GET"]),
            Route("/chats/{chat_id}", _guarded(self.get_chat), methods=["GET"]),
            Route("/chats/{chat_id}/end", _guarded(self.end_chat), methods=["POST"]),
            *_stream_routes(self),
        ]

    def _authorized(self, request: Request) -> bool:
        return self.tokens.accepts(request.headers.get("authorization"))

    async def _body(self, request: Request) -> dict[str, Any]:
        """The JSON object in the body, refused once it passes the byte limit."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                raise errors.InvalidInput("Content-Length is not a number")
            if int(declared) > limit:
                raise errors.PayloadTooLarge(f"request body is larger than {limit} bytes")
        try:
            body = await read_body(request, limit, self.body_timeout)
        except BodyTooLarge as exc:
            raise errors.PayloadTooLarge(str(exc)) from None
        try:
            data = json.loads(body)
        except ValueError:
            raise errors.InvalidInput("request body is not valid JSON") from None
        except RecursionError:  # json's parser recurses once per nesting level
            raise errors.InvalidInput("request body is nested too deeply") from None
        if not isinstance(data, dict):
            raise errors.InvalidInput("request body must be a JSON object")
        return data

    async def chat(self, request: Request) -> Response | ASGIApp:
        if not self._authorized(request):
            return _unauthorized()
        data = await self._body(request)
        user_id = _text_field(data, "user_id")
        text = _text_field(data, "user_message")
        chat_id = _text_field(data, "chat_id", required=False)
        model = _text_field(data, "model", required=False)
        assert user_id is not None and text is not None
        # Checked here too, so bad input is refused before the exchange starts.
        self.chats.validate(user_id, chat_id, text, model)
        sse = "text/event-stream" in request.headers.get("accept", "")
        return TurnExchange(self.chats, user_id, chat_id, text, sse, model or None, self.carry_on)

    async def list_chats(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        raw_limit = request.query_params.get("limit")
        if raw_limit is not None and not (raw_limit.isascii() and raw_limit.isdigit()):
            raise errors.InvalidInput("limit must be a whole number")
        page = await self.chats.chats(
            request.query_params.get("user_id", ""),
            int(raw_limit) if raw_limit is not None else DEFAULT_PAGE,
            request.query_params.get("cursor") or None,
        )
        return JSONResponse({
            "chats": [
                {"chat_id": c.id, "status": c.status, "title": c.title,
                 "message_count": c.message_count, "created_at": _stamp(c.created_at),
                 "updated_at": _stamp(c.updated_at)}
                for c in page.chats
            ],
            "next_cursor": page.next_cursor,
        })

    async def get_chat(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        chat = await self.chats.chat(
            request.query_params.get("user_id", ""), request.path_params["chat_id"]
        )
        summary = chat.summary
        return JSONResponse({
            "chat_id": chat.id,
            "status": chat.status,
            "title": chat.title,
            "model": chat.model,
            "summary": None if summary is None else {
                "version": summary.version, "through_seq": summary.through_seq,
                "content": summary.content, "tokens": summary.tokens, "model": summary.model,
                "created_at": _stamp(summary.created_at)},
            "system_message": _stored(chat.system_message) if chat.system_message else None,
            "messages": [_stored(m) for m in chat.messages],
        })

    async def end_chat(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        data = await self._body(request)
        user_id = _text_field(data, "user_id")
        assert user_id is not None
        chat_id = request.path_params["chat_id"]
        await self.chats.end(user_id, chat_id)
        return JSONResponse({"chat_id": parse_chat_id(chat_id), "status": "ended"})


def _unauthorized() -> JSONResponse:
    return error_response(401, "unauthenticated", "missing or invalid authorization token")


def chat_routes(
    chats: ChatService, tokens: TokenCheck, max_body_bytes: int, body_timeout: float,
    carry_on: bool = True,
) -> list[BaseRoute]:
    """The chat, history, resume and stop routes, for the HTTP app's `routes` list."""
    return HttpChat(chats, tokens, max_body_bytes, body_timeout, carry_on).routes()


def _stream_routes(chat: HttpChat) -> list[BaseRoute]:
    from chatms.entrypoints.http_streams import stream_routes  # it builds on this module

    return stream_routes(chat)
