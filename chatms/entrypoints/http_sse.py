"""The bodies the HTTP doors write: JSON, and Server-Sent Events with their headers."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Receive

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]


def json_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def sse_event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + json_bytes(data) + b"\n\n"


def delta_event(position: int, data: dict[str, Any]) -> bytes:
    """A delta with its position as the SSE id, which a reconnecting client sends back."""
    return b"id: %d\nevent: delta\ndata: %b\n\n" % (position, json_bytes(data))


async def until_disconnect(receive: Receive) -> None:
    """Return when the client goes away; the request body has already been read."""
    while (await receive())["type"] != "http.disconnect":
        pass
