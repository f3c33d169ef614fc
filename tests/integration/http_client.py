"""httpx helpers for the HTTP door: JSON calls and a Server-Sent Events reader."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.fakes.openai import FakeOpenAI
from tests.support import AUTH_TOKEN, until

AUTH = {"authorization": AUTH_TOKEN}


def base_url(app: object) -> str:
    return f"http://127.0.0.1:{app.settings.server.web_port}"  # type: ignore[attr-defined]


@asynccontextmanager
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for the app, once its HTTP listener (started in a task) answers."""
    async with httpx.AsyncClient(base_url=base_url(app), timeout=20) as http:

        async def answering() -> bool | None:
            try:
                await http.get("/healthz")
            except httpx.ConnectError:
                return None
            return True

        # A listener not up in time fails here, saying so (not later, as a refused request).
        await until(answering, "the app's HTTP listener to answer", 20)
        yield http


async def fake_settled(fake: FakeOpenAI, seconds: float = 5) -> None:
    """Wait until the fake's last answer has finished or noticed its client left; fail the
    test if it has not within `seconds`."""
    seen = fake.requests[-1]

    async def settled() -> bool | None:
        return True if seen.finished or seen.closed_early_at is not None else None

    await until(settled, "the fake upstream's last answer to end", seconds)


@dataclass
class SseResult:
    status: int
    headers: httpx.Headers
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    body: Any = None  # the JSON body when the answer was not a stream

    def named(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data in self.events if event == name]


def parse_events(text: str, after: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """Split an SSE body into (event, data) pairs; every event must end with a blank line.

    Each delta's `id` must be the answer's length after it (code points), counting from
    `after`, the position the stream was resumed from.
    """
    assert text.endswith("\n\n"), text[-50:]
    events = []
    position = after
    for block in text.split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(fields["data"])
        if fields["event"] == "delta":
            assert set(fields) == {"id", "event", "data"}, block
            position += len(data["delta"])
            assert int(fields["id"]) == position, block
        else:
            assert set(fields) == {"event", "data"}, block
        events.append((fields["event"], data))
    return events


async def chat_sse(http: httpx.AsyncClient, payload: dict[str, Any]) -> SseResult:
    headers = {**AUTH, "accept": "text/event-stream"}
    async with http.stream("POST", "/chat", json=payload, headers=headers) as response:
        raw = (await response.aread()).decode()
    result = SseResult(response.status_code, response.headers)
    if response.headers["content-type"].startswith("text/event-stream"):
        result.events = parse_events(raw)
    else:
        result.body = json.loads(raw)
    return result
