"""The HTTP door (Starlette): health for now."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the event loop answers."""
    return JSONResponse({"status": "ok"})


def build_http_app(routes: list[BaseRoute]) -> Starlette:
    """The Starlette app: health routes plus the routes each door contributes."""
    return Starlette(routes=[Route("/healthz", healthz), *routes])
