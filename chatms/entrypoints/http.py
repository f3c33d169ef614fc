"""The HTTP door (Starlette): health for now."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the event loop answers."""
    return JSONResponse({"status": "ok"})


def build_http_app() -> Starlette:
    return Starlette(routes=[Route("/healthz", healthz)])
