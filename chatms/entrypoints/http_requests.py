"""What every HTTP chat route reads from a request (the token, a JSON body within its
limits, text fields) and how its errors before a response exists become JSON errors."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from chatms.domain import errors
from chatms.entrypoints.auth import TokenCheck
from chatms.entrypoints.http_edge import BodyTimeout, BodyTooLarge, read_body
from chatms.entrypoints.http_errors import chat_error_response, error_response


class RequestReader:
    def __init__(self, tokens: TokenCheck, max_body_bytes: int, body_timeout: float) -> None:
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    def authorized(self, request: Request) -> bool:
        return self.tokens.accepts(request.headers.get("authorization"))

    async def json_body(self, request: Request) -> dict[str, Any]:
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


# Starlette runs whatever ASGI app an endpoint returns: a Response, or a TurnExchange.
Endpoint = Callable[[Request], Awaitable[Response | ASGIApp]]


def map_errors(endpoint: Endpoint) -> Endpoint:
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


def text_field(data: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise errors.InvalidInput(f"{name} must be a string")
    return value


def unauthorized() -> JSONResponse:
    return error_response(401, "unauthenticated", "missing or invalid authorization token")
