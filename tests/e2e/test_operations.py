"""A real `chatms serve`: one structured log line per turn, and SIGTERM during a stream."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import httpx

from tests.fakes.openai import API_KEY, FakeOpenAI, Script
from tests.support import AUTH_TOKEN, ServeProcess, grpcio_stubs, new_user


def fetch(url: str, sql: str, *args: Any) -> list[Any]:
    """Rows of one query, run on a loop of its own in a worker thread."""

    async def go() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result(30)


@dataclass
class Streamed:
    contents: list[str] = field(default_factory=list)
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    first: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


def stream(proc: ServeProcess, user: str, text: str, request_id: str | None = None) -> Streamed:
    """Start a ChatStream on a thread; `first` is set when the first message arrives."""
    pb2, pb2_grpc = grpcio_stubs()
    out = Streamed()
    metadata = [("authorization", AUTH_TOKEN)]
    if request_id:
        metadata.append(("x-request-id", request_id))

    def run() -> None:
        with grpc.insecure_channel(proc.grpc_target) as channel:
            call = pb2_grpc.ChatServiceStub(channel).ChatStream(
                pb2.ChatRequest(user_id=user, user_message=text), metadata=metadata, timeout=30
            )
            try:
                for message in call:
                    out.contents.append(message.content)
                    out.first.set()
            except grpc.RpcError as exc:
                out.code, out.details = exc.code(), exc.details() or ""
            out.first.set()

    out.thread = threading.Thread(target=run, daemon=True)
    out.thread.start()
    return out


def finish(s: Streamed) -> Streamed:
    assert s.thread is not None
    s.thread.join(30)
    assert not s.thread.is_alive()
    return s


def stored(database_url: str, user: str) -> list[Any]:
    return fetch(
        database_url,
        "SELECT m.role, m.content, m.completion FROM messages m JOIN chats c ON c.id = m.chat_id"
        " WHERE c.owner_id = $1 AND m.role <> 'system' ORDER BY m.seq",
        user,
    )


def test_one_json_log_line_per_turn_without_secrets(serve) -> None:
    """LOG_FORMAT=json logs each turn once as JSON with ids, timings and tokens; no secrets."""
    proc = serve(LOG_FORMAT="json")
    user = new_user()
    tagged = finish(stream(proc, user, "my secret word is zebra", request_id="req-e2e-42"))
    plain = finish(stream(proc, user, "second turn"))
    assert tagged.code == plain.code == grpc.StatusCode.OK
    assert proc.terminate() == 0

    lines = [json.loads(line) for line in proc.log().splitlines() if line.strip()]
    turns = [line for line in lines if line.get("event") == "turn"]
    assert len(turns) == 2
    first, second = turns
    assert first["request_id"] == "req-e2e-42"
    assert re.fullmatch(r"[0-9a-f]{32}", second["request_id"])
    assert first["transport"] == "grpc" and first["user_id"] == user
    assert first["outcome"] == "ok" and first["level"] == "INFO"
    assert first["new_chat"] is True and first["error"] is None
    assert first["chat_id"] != second["chat_id"]
    assert 0 <= first["ttft_ms"] <= first["duration_ms"]
    assert first["prompt_tokens"] == 11 and first["completion_tokens"] == 6
    log = proc.log()
    assert AUTH_TOKEN not in log and API_KEY not in log and "zebra" not in log


def test_sigterm_lets_a_stream_within_grace_finish(serve, fake_openai: FakeOpenAI,
                                                   database_url: str) -> None:
    """On SIGTERM readiness goes 503 and new turns are refused; the stream in flight ends whole."""
    proc = serve(SHUTDOWN_GRACE_SECONDS="20")
    fake_openai.queue(Script(gap=0.3))
    user = new_user()
    running = stream(proc, user, "one two three four five six seven")
    assert running.first.wait(20) and running.contents
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)

    deadline = time.monotonic() + 10
    ready = httpx.get(proc.http_url + "/readyz", timeout=5)
    while ready.status_code == 200 and time.monotonic() < deadline:
        ready = httpx.get(proc.http_url + "/readyz", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["checks"]["accepting"] == "shutting down"
    refused = finish(stream(proc, new_user(), "too late?"))
    assert refused.code == grpc.StatusCode.UNAVAILABLE

    done = finish(running)
    assert done.code == grpc.StatusCode.OK, done.details
    answer = "You said: one two three four five six seven"
    assert done.contents[-1] == answer
    assert proc.proc.wait(30) == 0
    rows = stored(database_url, user)
    assert [(r["role"], r["content"], r["completion"]) for r in rows] == [
        ("user", "one two three four five six seven", "complete"),
        ("assistant", answer, "complete"),
    ]


def test_sigterm_past_grace_ends_the_stream_and_stores_the_partial(
    serve, fake_openai: FakeOpenAI, database_url: str
) -> None:
    """Past a tiny grace the stream ends UNAVAILABLE; its partial answer is stored as shutdown."""
    proc = serve(SHUTDOWN_GRACE_SECONDS="0.3")
    fake_openai.queue(Script(gap=0.5))
    user = new_user()
    text = " ".join("abcdefghijklmnopqrst")
    running = stream(proc, user, text)
    assert running.first.wait(20) and running.contents
    assert proc.proc is not None
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    done = finish(running)
    assert done.code == grpc.StatusCode.UNAVAILABLE, (done.code, done.details)
    assert "shutting down" in done.details
    assert proc.proc.wait(30) == 0
    assert time.monotonic() - started < 8  # the whole answer would take ten seconds
    upstream = fake_openai.requests[-1]
    for _ in range(100):  # the fake notices the closed connection at its next write
        if upstream.closed_early_at is not None:
            break
        time.sleep(0.1)
    assert upstream.closed_early_at is not None and not upstream.finished

    rows = stored(database_url, user)
    assert [(r["role"], r["completion"]) for r in rows] == [
        ("user", "complete"), ("assistant", "shutdown")
    ]
    partial = rows[1]["content"]
    assert partial and f"You said: {text}".startswith(partial)
    assert partial.startswith(done.contents[-1])
