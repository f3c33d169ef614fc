"""The HTTP door (Starlette): health, readiness, metrics, and the routes each door adds."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatms.entrypoints.auth import TokenCheck
from chatms.entrypoints.health import Readiness
from chatms.observability.logs import request_id_from
from chatms.observability.metrics import CONTENT_TYPE, Metrics
from chatms.service.reports import REQUEST_ID


class RequestIdMiddleware:
    """Tags the turns a request runs with its `x-request-id` header, when it has a usable one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"x-request-id")
        token = REQUEST_ID.set(request_id_from(header.decode("latin-1") if header else None))
        try:
            await self.app(scope, receive, send)
        finally:
            REQUEST_ID.reset(token)


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the event loop answers."""
    return JSONResponse({"status": "ok"})


def ops_routes(
    readiness: Readiness, metrics: Metrics, metrics_token: TokenCheck | None = None
) -> list[BaseRoute]:
    """`/readyz` (every dependency answers) and `/metrics` (Prometheus text).

    With a metrics token, `/metrics` answers 401 to a scrape that does not present it.
    """

    async def readyz(request: Request) -> JSONResponse:
        ready, checks = await readiness.check()
        body = {"status": "ok" if ready else "unavailable", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503,
                            headers={"cache-control": "no-store"})

    async def metrics_text(request: Request) -> Response:
        if metrics_token is not None and not metrics_token.accepts(
            request.headers.get("authorization")
        ):
            return JSONResponse(
                {"error": {"code": "unauthenticated", "message": "metrics token required"}},
                status_code=401, headers={"www-authenticate": "Bearer"},
            )
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return [Route("/readyz", readyz), Route("/metrics", metrics_text)]


def cors(origins: tuple[str, ...]) -> list[Middleware]:
    """CORS for exactly these origins; none (the default) keeps it closed.

    The API authenticates with the Authorization header, never cookies, so credentials
    stay off and no origin is ever echoed that was not listed.
    """
    if not origins:
        return []
    return [Middleware(
        CORSMiddleware, allow_origins=list(origins), allow_methods=["GET", "POST"],
        allow_headers=["authorization", "content-type", "accept", "x-request-id"],
        allow_credentials=False, max_age=600,
    )]


def build_http_app(routes: list[BaseRoute], cors_origins: tuple[str, ...] = ()) -> Starlette:
    """The Starlette app: health routes plus the routes each door contributes."""
    app = Starlette(
        routes=[Route("/healthz", healthz), *routes],
        middleware=[*cors(cors_origins), Middleware(RequestIdMiddleware)],
    )
    # A path that does not match is a 404, not a redirect to a guessed one ("/chats/%2F"
    # would be sent to "/chats/" and on).
    app.router.redirect_slashes = False
    return app
