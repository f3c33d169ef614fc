"""Readiness, gRPC health and reflection, and metrics of a running app, over the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import asyncpg
import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai import FakeOpenAI, Script
from tests.grpc_probe import probe
from tests.integration.grpc_client import chat_stream
from tests.support import AUTH_TOKEN, OwnPostgres, grpcio_stubs, new_user
from tests.support import grpc_target as target


def web(app: object) -> str:
    return f"http://127.0.0.1:{app.settings.server.web_port}"  # type: ignore[attr-defined]


async def get(app: object, path: str) -> httpx.Response:
    """GET from the app's HTTP door, waiting (bounded) for Hypercorn to be listening."""
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(50):
            try:
                return await client.get(web(app) + path)
            except httpx.ConnectError:
                await asyncio.sleep(0.1)
        return await client.get(web(app) + path)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def health(app: object, *services: str) -> list[str]:
    """grpcio's health stub's answer (status or error code name) for each service."""
    out = await asyncio.to_thread(probe, "health", target(app), *services)
    return out.split()


@pytest.fixture
def own_postgres() -> Iterator[object]:
    """A throwaway PostgreSQL this test may stop and start (never the shared one)."""
    server = OwnPostgres()
    try:
        yield server
    finally:
        server.close()


async def test_readiness_follows_the_database(start_app, own_postgres) -> None:
    """/readyz says 503 naming the database while it is down and 200 again once it is back."""
    server = own_postgres
    app = await start_app(DATABASE_URL=server.url)
    ready = await get(app, "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ok", "checks": {"database": "ok", "migrations": "ok", "accepting": "ok"}
    }
    assert await health(app, "", "pb.ChatService") == ["SERVING", "SERVING"]

    await asyncio.to_thread(server.stop)
    down = await get(app, "/readyz")
    assert down.status_code == 503
    assert down.json()["status"] == "unavailable"
    assert down.json()["checks"]["database"] != "ok"
    assert down.json()["checks"]["accepting"] == "ok"

    await asyncio.to_thread(server.start)
    for _ in range(50):  # the pool replaces its broken connections on demand
        back = await get(app, "/readyz")
        if back.status_code == 200:
            break
        await asyncio.sleep(0.2)
    assert back.status_code == 200, back.text


async def test_readiness_names_pending_migrations(start_app, own_postgres) -> None:
    """A database missing a migration makes /readyz answer 503 naming that migration."""
    app = await start_app(DATABASE_URL=own_postgres.url)
    conn = await asyncpg.connect(own_postgres.url)
    try:
        await conn.execute("DELETE FROM schema_migrations WHERE version = 1")
    finally:
        await conn.close()
    answer = await get(app, "/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["migrations"] == "pending: 001_chats.sql"
    assert answer.json()["checks"]["database"] == "ok"


async def test_not_accepting_turns_is_not_ready(start_app) -> None:
    """Once the app stops accepting turns, /readyz is 503 and gRPC health NOT_SERVING."""
    app = await start_app()
    assert await health(app, "pb.ChatService") == ["SERVING"]
    await asyncio.sleep(1.1)  # past the gRPC health check's one-second reuse
    app.chats.stop_accepting()
    answer = await get(app, "/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["accepting"] == "shutting down"
    assert await health(app, "", "pb.ChatService") == ["NOT_SERVING", "NOT_SERVING"]
    refused = await chat_stream(target(app), new_user(), "anyone there?")
    assert refused.code == grpc.StatusCode.UNAVAILABLE


async def test_grpc_health_unknown_service_is_not_found(start_app) -> None:
    """Health for a service we do not serve answers NOT_FOUND, without a token."""
    app = await start_app()
    assert await health(app, "no.SuchService") == ["NOT_FOUND"]


async def test_reflection_lists_and_describes_the_service(start_app) -> None:
    """grpcio's reflection client lists pb.ChatService and reads its methods without the proto."""
    app = await start_app()
    seen = json.loads(await asyncio.to_thread(probe, "reflect", target(app), "pb.ChatService"))
    assert "pb.ChatService" in seen["services"] and "grpc.health.v1.Health" in seen["services"]
    pb2, _ = grpcio_stubs()
    expected = {
        m.name: [m.input_type.full_name, m.output_type.full_name]
        for m in pb2.DESCRIPTOR.services_by_name["ChatService"].methods
    }
    assert seen["methods"] == expected


async def test_metrics_move_after_turns(start_app, fake_openai: FakeOpenAI) -> None:
    """A good turn and a rate-limited one move the turn, latency, token and query metrics."""
    app = await start_app()
    before = samples((await get(app, "/metrics")).text)
    ok = await chat_stream(target(app), new_user(), "count these words")
    assert ok.code == grpc.StatusCode.OK
    fake_openai.queue(Script(status=429, error_code="rate_limit_exceeded"))
    limited = await chat_stream(target(app), new_user(), "again")
    assert limited.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    page = await get(app, "/metrics")
    assert page.headers["content-type"].startswith("text/plain")
    after = samples(page.text)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("chatms_turns_total", transport="grpc", outcome="ok") == 1
    assert moved("chatms_turns_total", transport="grpc", outcome="upstream_error") == 1
    assert moved("chatms_upstream_errors_total", kind="rate_limited") == 1
    assert moved("chatms_time_to_first_token_seconds_count", transport="grpc") == 1
    assert moved("chatms_turn_duration_seconds_count", transport="grpc") == 2
    assert moved("chatms_prompt_tokens_total", transport="grpc") == 11
    assert moved("chatms_completion_tokens_total", transport="grpc") == 4
    assert moved("chatms_db_query_duration_seconds_count", statement="with") >= 2
    assert after[("chatms_streams_in_flight", (("transport", "grpc"),))] == 0


async def test_streams_in_flight_counts_a_running_stream(start_app, fake_openai) -> None:
    """While an answer streams, the in-flight gauge for its transport reads one."""
    app = await start_app()
    fake_openai.queue(Script(gap=0.4))
    pb2, pb2_grpc = grpcio_stubs()
    async with grpc.aio.insecure_channel(target(app)) as channel:
        call = pb2_grpc.ChatServiceStub(channel).ChatStream(
            pb2.ChatRequest(user_id=new_user(), user_message="one two three"),
            metadata=(("authorization", AUTH_TOKEN),), timeout=20,
        )
        stream = call.__aiter__()
        await stream.__anext__()
        during = samples((await get(app, "/metrics")).text)
        async for _ in stream:
            pass
    assert during[("chatms_streams_in_flight", (("transport", "grpc"),))] == 1
    after = samples((await get(app, "/metrics")).text)
    assert after[("chatms_streams_in_flight", (("transport", "grpc"),))] == 0


async def test_http_requests_tag_turns_with_their_request_id() -> None:
    """The HTTP door hands a usable x-request-id to the turns a request runs, and only to it."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from chatms.entrypoints.http import build_http_app
    from chatms.service.reports import REQUEST_ID

    async def seen(request: Request) -> PlainTextResponse:
        return PlainTextResponse(REQUEST_ID.get() or "<none>")

    app = build_http_app([Route("/seen", seen)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://chatms") as client:
        tagged = await client.get("/seen", headers={"x-request-id": "req-7"})
        bad = await client.get("/seen", headers={"x-request-id": "has space"})
        bare = await client.get("/seen")
    assert (tagged.text, bad.text, bare.text) == ("req-7", "<none>", "<none>")
    assert REQUEST_ID.get() is None
