"""HTTP error answers: domain errors to statuses in one table, and one JSON error shape."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatms.domain import errors

# Most specific first: the first matching class decides (status, code).
# UpstreamUnavailable is 502: the upstream failed us; 503 is kept for our own unavailability.
HTTP_STATUS_FOR: tuple[tuple[type[errors.ChatError], int, str], ...] = (
    (errors.MessageTooLarge, 413, "message_too_large"),
    (errors.PayloadTooLarge, 413, "payload_too_large"),
    (errors.InvalidInput, 400, "invalid_argument"),
    (errors.ChatNotFound, 404, "not_found"),
    (errors.ChatEnded, 409, "chat_ended"),
    (errors.ChatBusy, 409, "chat_busy"),
    (errors.NotConfigured, 503, "not_configured"),
    (errors.Unavailable, 503, "unavailable"),
    (errors.UpstreamRateLimited, 429, "upstream_rate_limited"),
    (errors.UserRateLimited, 429, "rate_limited"),
    (errors.DailyQuotaExceeded, 429, "quota_exceeded"),
    (errors.UpstreamTimeout, 504, "upstream_timeout"),
    (errors.UpstreamRejected, 502, "upstream_rejected"),
    (errors.UpstreamUnavailable, 502, "upstream_unavailable"),
)

def http_error(exc: errors.ChatError) -> tuple[int, str]:
    for kind, status, code in HTTP_STATUS_FOR:
        if isinstance(exc, kind):
            return status, code
    return 500, "internal"


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def retry_after(exc: errors.ChatError) -> list[tuple[bytes, bytes]]:
    """The Retry-After header a refusal by a per-user limit carries (none for others)."""
    if isinstance(exc, errors.LimitExceeded):
        return [(b"retry-after", str(exc.retry_after).encode())]
    return []


def chat_error_response(exc: errors.ChatError) -> JSONResponse:
    status, code = http_error(exc)
    response = error_response(status, code, str(exc))
    for name, value in retry_after(exc):
        response.headers[name.decode()] = value.decode()
    return response


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _internal(request: Request, exc: Exception) -> Response:
    # Starlette logs the exception; the client gets no trace and no detail.
    return error_response(500, "internal", "internal error")


def json_errors(app: Starlette) -> Starlette:
    """Unknown paths, wrong methods and crashes answer the same JSON error shape."""
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(Exception, _internal)
    return app
