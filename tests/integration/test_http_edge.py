"""The HTTP listeners: malformed input is 400, /metrics can be protected or moved off the
public port, tokens are trimmed of HTTP whitespace only, and Hypercorn's internals that
chatms/entrypoints/http_edge.py relies on are still there."""

from __future__ import annotations

import asyncio
import base64
import inspect
import uuid
from importlib.metadata import version

import grpc
import httpx
import pytest

from chatms.entrypoints.auth import TokenCheck
from tests.attackers import closed_by_server
from tests.fakes.openai import Script
from tests.integration.http_client import AUTH, client
from tests.integration.test_history import unary
from tests.support import AUTH_TOKEN, free_port, new_user

DEEP = b'{"user_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def _cursor(stamp: str) -> str:
    return base64.urlsafe_b64encode(f"{stamp}|{uuid.uuid4()}".encode()).decode().rstrip("=")


# Valid ISO 8601, but out of PostgreSQL's range once in UTC, or without an offset.
BAD_CURSORS = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2024-05-01T10:00:00"]


async def test_deeply_nested_json_is_400_on_every_json_route(start_app) -> None:
    app = await start_app()
    async with client(app) as http:
        replies = [await http.post("/chat", content=DEEP, headers=AUTH),
                   await http.post(f"/chats/{uuid.uuid4()}/end", content=DEEP, headers=AUTH)]
    for reply in replies:
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["message"] == "request body is nested too deeply"


@pytest.mark.parametrize("stamp", BAD_CURSORS)
async def test_cursor_out_of_postgres_range_is_invalid(start_app, stamp: str) -> None:
    app = await start_app()
    user = new_user()
    async with client(app) as http:
        reply = await http.get("/chats", params={"user_id": user, "cursor": _cursor(stamp)},
                               headers=AUTH)
    assert reply.status_code == 400, reply.text
    error = await unary(app, "ListChats", user_id=user, cursor=_cursor(stamp))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("padding", ["\u00a0", "\u2003", "\u3000", "\u200b"])
def test_token_padded_with_non_http_whitespace_is_refused(padding: str) -> None:
    check = TokenCheck("s3cret")
    assert not check.accepts(f"{padding}s3cret{padding}")
    assert not check.accepts(f"Bearer {padding}s3cret")


def test_token_padded_with_http_whitespace_is_accepted() -> None:
    check = TokenCheck("s3cret")
    assert check.accepts(" \ts3cret\t ") and check.accepts("Bearer \ts3cret ")


async def test_nbsp_padded_token_is_401_over_http(start_app) -> None:
    """A raw 0xA0 byte: NBSP in Latin-1, which is how header bytes are decoded."""
    app = await start_app()
    async with client(app) as http:
        reply = await http.get("/chats", params={"user_id": new_user()},
                               headers={"authorization": b"\xa0" + AUTH_TOKEN.encode()})
    assert reply.status_code == 401


async def test_metrics_token_protects_metrics(start_app) -> None:
    app = await start_app(METRICS_TOKEN="scrape-me")
    async with client(app) as http:
        missing = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"authorization": "Bearer nope"})
        right = await http.get("/metrics", headers={"authorization": "Bearer scrape-me"})
        ready = await http.get("/readyz")
    assert missing.status_code == wrong.status_code == 401
    assert right.status_code == 200 and "chatms_turns_total" in right.text
    assert ready.status_code == 200


async def test_ops_port_takes_metrics_and_readiness_off_the_public_port(start_app) -> None:
    ops_port = free_port()
    app = await start_app(OPS_PORT=str(ops_port))
    async with client(app) as http, httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{ops_port}", timeout=10
    ) as ops:
        public = [await http.get(path) for path in ("/metrics", "/readyz")]
        private = [await ops.get(path) for path in ("/metrics", "/readyz", "/healthz")]
        chats = await ops.get("/chats", params={"user_id": "x"}, headers=AUTH)
    assert [r.status_code for r in public] == [404, 404]
    assert [r.status_code for r in private] == [200, 200, 200]
    assert chats.status_code == 404  # the chat routes stay on the public port only


async def test_trickled_body_gets_408_at_the_body_deadline(start_app) -> None:
    """One byte a second never trips a read timeout; the body deadline still ends it."""
    app = await start_app(BODY_TIMEOUT="1.5")

    def trickle() -> tuple[bytes, bool]:
        import socket
        import time

        sock = socket.create_connection(("127.0.0.1", app.settings.server.web_port), timeout=10)
        sock.sendall(f"POST /chat HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH_TOKEN}\r\n"
                     "Content-Length: 100\r\n\r\n{".encode())
        reply = b""
        for _ in range(6):
            time.sleep(0.5)
            try:
                sock.sendall(b" ")
            except OSError:
                break
        sock.settimeout(5)
        try:
            reply = sock.recv(4096)
        except OSError:
            pass
        closed = closed_by_server(sock, 3)
        sock.close()
        return reply, closed

    reply, closed = await asyncio.to_thread(trickle)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert closed


async def test_a_stream_longer_than_the_body_timeout_is_not_cut(start_app, fake_openai) -> None:
    """The client is silent while an answer streams: no read timeout may end it."""
    app = await start_app(BODY_TIMEOUT="1")
    fake_openai.queue(Script(pieces=["a ", "b ", "c ", "d "], gap=0.8))
    async with client(app) as http, http.stream(
        "POST", "/chat", json={"user_id": new_user(), "user_message": "slowly"},
        headers={**AUTH, "accept": "text/event-stream"},
    ) as reply:
        body = "".join([chunk async for chunk in reply.aiter_text()])
    assert reply.status_code == 200 and "event: done" in body, body


def test_hypercorn_still_has_what_http_edge_relies_on() -> None:
    assert version("hypercorn") == "0.18.0"
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.asyncio.worker_context import WorkerContext

    assert list(inspect.signature(TCPServer.__init__).parameters) == [
        "self", "app", "loop", "config", "context", "state", "reader", "writer"]
    assert "terminated" in vars(WorkerContext(None))
    # The idle timer runs until a request head is complete, and while between requests.
    assert "keep_alive_timeout" in inspect.getsource(TCPServer._idle_timeout)
    # IdleTimer stands in for `idle_task`: TCPServer only restarts and stops it, and closes
    # an idle connection with `_initiate_server_close`.
    source = inspect.getsource(TCPServer)
    assert source.count("self.idle_task.restart(") == 2 and "self.idle_task.stop()" in source
    assert "self._initiate_server_close()" in inspect.getsource(TCPServer._idle_timeout)
