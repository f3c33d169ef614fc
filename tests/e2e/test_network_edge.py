"""Floods and slow clients against a real `chatms serve`, scaled down to seconds.

The full-size attacks (2 connections x 20 000 streams x 4 rounds; 1 100 slow webhook
POSTs) are in `python -m bench.edge_attacks`; their figures are in bench/BENCHMARKS.md.
"""

from __future__ import annotations

import multiprocessing
import resource
import socket
import statistics
import struct
import time
from pathlib import Path

import httpx
import psutil
import pytest

from chatms.entrypoints.grpc_edge import FEED_SLICE
from tests.attackers import (
    CANCEL,
    END_HEADERS,
    ENHANCE_YOUR_CALM,
    HEADERS,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    FrameReader,
    closed_by_server,
    frame,
    rapid_reset,
    rapid_reset_reconnecting,
    request_block,
    slow_post,
)
from tests.e2e.grpc_sync import chat
from tests.fakes.openai import FakeOpenAI
from tests.fakes.twilio import ACCOUNT_SID
from tests.fakes.twilio import AUTH_TOKEN as TWILIO_TOKEN
from tests.support import AUTH_TOKEN, ServeProcess, base_env, free_port, new_user

WEBHOOK = "/webhooks/twilio/whatsapp"
MB = 1_000_000


def settled_rss(proc: psutil.Process, limit: float = 20) -> int:
    """RSS once the process has stopped working through what it was sent."""
    end = time.monotonic() + limit
    while proc.cpu_percent(0.3) > 5 and time.monotonic() < end:
        pass
    return int(proc.memory_info().rss)


def flood(port: int, rounds: int, streams: int, tokens: tuple[str | None, ...],
          linger: float = 5) -> list:
    return [rapid_reset("127.0.0.1", port, streams, token=token, linger=linger)
            for _ in range(rounds) for token in tokens]


def reset_rounds(port: int, rounds: int, streams: int) -> None:
    """The issue's attack: `streams` resets a round, reconnecting after each GOAWAY."""
    for _ in range(rounds):
        rapid_reset_reconnecting("127.0.0.1", port, streams)


def test_rapid_reset_gets_goaway_and_memory_stays_flat(serve) -> None:
    """HEADERS + RST_STREAM floods, with and without a token: cut short, nothing kept."""
    proc = serve()
    port = int(proc.env["GRPC_SERVER_PORT"])
    ps = psutil.Process(proc.proc.pid)
    flood(port, 1, 2000, (None, AUTH_TOKEN))  # warm-up: allocator pools, imports
    before = settled_rss(ps)
    results = flood(port, 3, 10_000, (None, AUTH_TOKEN))
    growth = settled_rss(ps) - before
    # Every connection is cut by the server. Its GOAWAY can be lost to the client when the
    # server closes with the flood still unread (the kernel then resets the connection).
    assert all(r.closed for r in results), results
    assert all(r.goaway in (ENHANCE_YOUR_CALM, None) for r in results), results
    assert sum(r.goaway == ENHANCE_YOUR_CALM for r in results) >= len(results) // 2, results
    assert all(r.max_concurrent_streams == 100 for r in results)
    assert growth < 10 * MB, f"memory grew by {growth / MB:.1f} MB"


def test_a_flood_sent_in_one_piece_is_cut_at_its_budget(serve) -> None:
    """Thousands of HEADERS + RST_STREAM in one write: the server stops taking streams in
    near its reset budget (the GOAWAY's last stream id), not at the end of whatever one read
    of the socket held."""
    proc = serve(GRPC_MAX_RESETS="50")
    port = int(proc.env["GRPC_SERVER_PORT"])
    sock = socket.create_connection(("127.0.0.1", port))
    block, rst = request_block(), struct.pack(">I", CANCEL)
    pair = len(frame(HEADERS, END_HEADERS, 1, block) + frame(RST_STREAM, 0, 1, rst))
    flood = b"".join(frame(HEADERS, END_HEADERS, 2 * i + 1, block)
                     + frame(RST_STREAM, 0, 2 * i + 1, rst) for i in range(4000))
    reader = FrameReader(sock)
    try:
        try:
            sock.sendall(PREFACE + frame(SETTINGS, 0, 0) + flood)
        except OSError:
            pass  # the server may close before it has read it all; its GOAWAY is still there
        reader.wait_closed(10)
    finally:
        sock.close()
    assert reader.goaway == ENHANCE_YOUR_CALM and reader.last_stream is not None
    # No token: each call is refused, which spends the budget of 50 (the client's resets
    # of streams already closed are ignored by h2). Beyond those, at most the rest of the
    # slice h2 was decoding then, and 2 for the budget's refill meanwhile. Fed to h2 whole,
    # a read of the socket held 712 to 1 391 of these streams.
    taken_in = (reader.last_stream + 1) // 2
    assert taken_in <= 50 + FEED_SLICE // pair + 1 + 2, (taken_in, pair)


def test_finished_calls_are_forgotten_without_the_reset_budget(serve) -> None:
    """The budget switched off: a long-lived connection's reset calls are still released."""
    proc = serve(GRPC_MAX_RESETS="1000000")
    port = int(proc.env["GRPC_SERVER_PORT"])
    ps = psutil.Process(proc.proc.pid)
    flood(port, 1, 5000, (AUTH_TOKEN,), linger=0.5)  # the first sets the high-water mark
    before = settled_rss(ps)
    results = []
    for _ in range(3):  # one at a time, each worked through, like the first
        results += flood(port, 1, 5000, (AUTH_TOKEN,), linger=0.5)
        after = settled_rss(ps)
    growth = after - before
    assert all(r.goaway is None and r.sent == 5000 for r in results)
    # Unfixed, the same 15 000 calls kept 115 MB; what remains here is allocator noise.
    assert growth < 20 * MB, f"memory grew by {growth / MB:.1f} MB over 15 000 reset calls"


def test_other_clients_turns_go_on_during_a_flood(serve) -> None:
    """2 attackers x 20 000 resets x 4 rounds (as in the issue): turns meanwhile stay within
    1 s of normal. (Attackers that reconnect without pause for longer are measured by
    bench.edge_attacks, scenario 5.)"""
    proc = serve()
    port = int(proc.env["GRPC_SERVER_PORT"])
    normal = []
    for _ in range(3):
        start = time.monotonic()
        chat(proc.grpc_target, new_user(), "hello")
        normal.append(time.monotonic() - start)
    # Attackers in processes of their own: as threads they would hold the GIL this
    # process's client and fake upstream need, and time the harness instead of chatms.
    spawn = multiprocessing.get_context("spawn")
    attackers = [spawn.Process(target=reset_rounds, args=(port, 4, 20_000)) for _ in range(2)]
    for p in attackers:
        p.start()
    during = []
    try:
        while any(p.is_alive() for p in attackers):
            start = time.monotonic()
            chat(proc.grpc_target, new_user(), "hello")
            during.append(time.monotonic() - start)
    finally:
        for p in attackers:
            p.join(60)
    assert during, "no turn overlapped the flood"
    # Unprotected, turns took 9-16 s here, or failed. The median, not the p99: on this
    # shared machine one slow turn in fifty is noise; the p99 is bench.edge_attacks' figure.
    assert statistics.median(during) < max(normal) + 1.0, (normal, during)


def test_process_raises_its_file_limit_to_the_hard_one(
    database_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    proc = ServeProcess(base_env(database_url, fake_openai.base_url), tmp_path / "serve.log",
                        file_limit=(256, hard)).start()
    try:
        assert psutil.Process(proc.proc.pid).rlimit(psutil.RLIMIT_NOFILE) == (hard, hard)
    finally:
        proc.kill()


@pytest.fixture
def slow_clients() -> list:
    sockets: list = []
    yield sockets
    for sock in sockets:
        sock.close()


def test_slow_webhook_posts_are_cut_and_the_service_stays_ready(
    serve, fake_twilio, slow_clients: list
) -> None:
    """Chunked bodies that never end: 408 after BODY_TIMEOUT; ready and answering meanwhile."""
    proc = serve(BODY_TIMEOUT="2", TWILIO_ACCOUNT_SID=ACCOUNT_SID,
                 TWILIO_AUTH_TOKEN=TWILIO_TOKEN, TWILIO_API_BASE_URL=fake_twilio.base_url)
    port = int(proc.env["WEB_SERVER_PORT"])
    start = time.monotonic()
    slow_clients += [slow_post("127.0.0.1", port, WEBHOOK) for _ in range(200)]
    assert httpx.get(proc.http_url + "/readyz", timeout=1).status_code == 200
    assert chat(proc.grpc_target, new_user(), "hello")
    closed = [closed_by_server(sock, max(0.1, start + 6 - time.monotonic()))
              for sock in slow_clients]
    assert all(closed), f"{closed.count(False)} slow bodies still held after 6 s"


def test_connections_are_capped_below_the_file_limit(
    database_url: str, fake_openai: FakeOpenAI, fake_twilio, tmp_path: Path, slow_clients: list
) -> None:
    """More slow clients than file descriptors: the caps hold, probes and gRPC still answer."""
    env = base_env(database_url, fake_openai.base_url, BODY_TIMEOUT="5", OPS_PORT=str(free_port()),
                   TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
                   TWILIO_API_BASE_URL=fake_twilio.base_url)
    proc = ServeProcess(env, tmp_path / "serve.log", file_limit=(512, 512)).start()
    try:
        ps = psutil.Process(proc.proc.pid)
        fds_before = ps.num_fds()
        port = int(env["WEB_SERVER_PORT"])
        slow_clients += [slow_post("127.0.0.1", port, WEBHOOK) for _ in range(600)]
        time.sleep(0.5)
        held = ps.num_fds() - fds_before
        assert held < 200, f"{held} descriptors taken by 600 slow clients"
        ops = f"http://127.0.0.1:{env['OPS_PORT']}"
        assert httpx.get(ops + "/readyz", timeout=2).status_code == 200
        assert chat(proc.grpc_target, new_user(), "hello")
        assert "does not fit the open file limit" in proc.log()
    finally:
        proc.kill()
