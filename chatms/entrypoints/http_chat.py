"""The HTTP chat door: `POST /chat` (JSON or Server-Sent Events) and the history routes.

Thin like the gRPC door: every turn runs through `ChatService.turn`, and domain errors map
to HTTP statuses in the one table in `http_errors.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from chatms.domain import errors
from chatms.entrypoints.auth import TokenCheck
from chatms.entrypoints.http_requests import RequestReader, map_errors, text_field, unauthorized
from chatms.entrypoints.http_streams import stream_routes
from chatms.entrypoints.http_turn import TurnExchange
from chatms.service.chats import ChatService, parse_chat_id
from chatms.service.ports import StoredMessage

DEFAULT_PAGE = 20


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
    def __init__(self, chats: ChatService, requests: RequestReader, carry_on: bool = True) -> None:
        self.chats = chats
        self.requests = requests
        self.carry_on = carry_on  # DISCONNECTED_TURNS=continue

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/chat", map_errors(self.chat), methods=["POST"]),
            Route("/chats", map_errors(self.list_chats), methods=["GET"]),
            Route("/chats/{chat_id}", map_errors(self.get_chat), methods=["GET"]),
            Route("/chats/{chat_id}/end", map_errors(self.end_chat), methods=["POST"]),
        ]

    async def chat(self, request: Request) -> Response | ASGIApp:
        if not self.requests.authorized(request):
            return unauthorized()
        data = await self.requests.json_body(request)
        user_id = text_field(data, "user_id")
        text = text_field(data, "user_message")
        chat_id = text_field(data, "chat_id", required=False)
        model = text_field(data, "model", required=False)
        assert user_id is not None and text is not None
        # Checked here too, so bad input is refused before the exchange starts.
        self.chats.validate(user_id, chat_id, text, model)
        sse = "text/event-stream" in request.headers.get("accept", "")
        return TurnExchange(self.chats, user_id, chat_id, text, sse, model or None, self.carry_on)

    async def list_chats(self, request: Request) -> Response:
        if not self.requests.authorized(request):
            return unauthorized()
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
        if not self.requests.authorized(request):
            return unauthorized()
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
        if not self.requests.authorized(request):
            return unauthorized()
        data = await self.requests.json_body(request)
        user_id = text_field(data, "user_id")
        assert user_id is not None
        chat_id = request.path_params["chat_id"]
        await self.chats.end(user_id, chat_id)
        return JSONResponse({"chat_id": parse_chat_id(chat_id), "status": "ended"})


def chat_routes(
    chats: ChatService, tokens: TokenCheck, max_body_bytes: int, body_timeout: float,
    carry_on: bool = True,
) -> list[BaseRoute]:
    """The chat, history, resume and stop routes, for the HTTP app's `routes` list."""
    requests = RequestReader(tokens, max_body_bytes, body_timeout)
    return [*HttpChat(chats, requests, carry_on).routes(), *stream_routes(chats, requests)]
