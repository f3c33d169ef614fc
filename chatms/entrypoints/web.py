"""The web chat page: `/` and its static files, under a strict Content-Security-Policy.

The page is a client of the public HTTP API only (`POST /chat`, `GET /chats`, ...); this
module serves files and headers, nothing else. The files ship inside the package and are
read once, at start; only the listed kinds are served, so licences and notes stay private.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

STATIC_PACKAGE = "chatms.entrypoints"
STATIC_FOLDER = "web_static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Only this origin, no inline code, no plugins, no framing. Trusted Types: the page itself
# never writes HTML strings into the DOM; DOMPurify's own policy is the one allowed.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",  # forms never submit natively: a token must never reach a URL
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types dompurify",
))

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _walk(folder: Traversable, prefix: str = "") -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            assets.update(_walk(entry, name + "/"))
            continue
        content_type = CONTENT_TYPES.get("." + entry.name.rpartition(".")[2])
        if content_type is None:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[name] = Asset(body, content_type, etag)
    return assets


def load_assets() -> dict[str, Asset]:
    """Every servable file of the page, by its path under /static/."""
    return _walk(resources.files(STATIC_PACKAGE) / STATIC_FOLDER)


def _answer(request: Request, asset: Asset) -> Response:
    headers = {**SECURITY_HEADERS, "cache-control": "no-cache", "etag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def web_routes(assets: dict[str, Asset] | None = None) -> list[BaseRoute]:
    """`GET /` (the page) and `GET /static/{path}` (its scripts, styles and icon)."""
    files = load_assets() if assets is None else assets
    page = files["index.html"]

    async def index(request: Request) -> Response:
        return _answer(request, page)

    async def static(request: Request) -> Response:
        asset = files.get(request.path_params["path"])
        if asset is None:
            raise HTTPException(404, "Not Found")
        return _answer(request, asset)

    return [Route("/", index, methods=["GET"]),
            Route("/static/{path:path}", static, methods=["GET"])]
