"""The network-edge attacks at full size, against a real `chatms serve`.

    python -m bench.edge_attacks            # 2 x 20 000 resets x 4 rounds; 1 100 slow POSTs
    python -m bench.edge_attacks --small    # a tenth of that

1. HTTP/2 rapid reset on the gRPC port, no token: per round, memory growth, the server's
   CPU, how each connection ended, and normal turns' latency during the flood. An
   attacker cut off by GOAWAY opens a new connection until its 20 000 resets are sent.
2. The same with GRPC_MAX_RESETS switched off and the service token: what the release of
   finished calls alone does on a connection that is never cut.
3. Slow webhook POSTs (chunked bodies that never end) with the open file limit at 1024,
   soft and hard: readiness, HTTP and gRPC while they hold, descriptors, when they are cut.
4. The same with only the soft limit at 1024 (raised to the hard one at start).
5. A sustained flood: two attackers reconnecting after every GOAWAY for 20 s, and the
   latency of normal turns meanwhile.

The tests in tests/e2e/test_network_edge.py run the same attacks scaled down.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil

from bench.procs import AUX_CORE, Child, Postgres
from tests.attackers import closed_by_server, rapid_reset, rapid_reset_reconnecting, slow_post
from tests.e2e.grpc_sync import chat
from tests.fakes.twilio import ACCOUNT_SID
from tests.fakes.twilio import AUTH_TOKEN as TWILIO_TOKEN
from tests.support import AUTH_TOKEN, ServeProcess, base_env, free_port, new_user

MB = 1e6
QUICK_TURN = "bench ttft=0.005 gap=0.001 n=5"  # the fake upstream answers 5 deltas at once


def settled(ps: psutil.Process, limit: float = 60) -> tuple[float, float]:
    """(RSS in MB, CPU seconds) once the server has worked through what it was sent."""
    end = time.monotonic() + limit
    while ps.cpu_percent(0.5) > 5 and time.monotonic() < end:
        pass
    cpu = ps.cpu_times()
    return ps.memory_info().rss / MB, cpu.user + cpu.system


def turn_seconds(target: str) -> float:
    """How long one normal turn took; infinity if it failed."""
    start = time.monotonic()
    try:
        chat(target, new_user(), QUICK_TURN)
    except grpc.RpcError:
        return float("inf")
    return time.monotonic() - start


def while_running(attack: Callable[[], Any], probe: Callable[[], float]) -> tuple[Any, list[float]]:
    """Run `attack` in a thread; probe (a turn) back to back until it ends."""
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", attack()))
    thread.start()
    samples = []
    while thread.is_alive():
        samples.append(probe())
    thread.join()
    return box.get("result"), samples


def p99(samples: list[float]) -> float:
    return sorted(samples)[max(0, int(len(samples) * 0.99) - 1)] if samples else float("nan")


def rapid_reset_rounds(proc: ServeProcess, streams: int, rounds: int, token: str | None) -> None:
    ps = psutil.Process(proc.proc.pid)
    port = int(proc.env["GRPC_SERVER_PORT"])
    normal = [turn_seconds(proc.grpc_target) for _ in range(10)]
    rss0, cpu0 = settled(ps)
    print(f"  normal turn: median {statistics.median(normal) * 1000:.0f} ms,"
          f" max {max(normal) * 1000:.0f} ms; RSS {rss0:.0f} MB")
    for n in range(1, rounds + 1):
        def attack() -> list[Any]:
            # Attackers in processes of their own: in threads they would hold the GIL that
            # this process's turn probes need.
            with multiprocessing.get_context("fork").Pool(2) as pool:
                return pool.starmap(rapid_reset_reconnecting,
                                    [("127.0.0.1", port, streams, token)] * 2)

        start = time.monotonic()
        results, during = while_running(attack, lambda: turn_seconds(proc.grpc_target))
        wall = time.monotonic() - start
        rss, cpu = settled(ps)
        ends = ", ".join(f"{r.sent} resets over {r.connections} connections (last: GOAWAY"
                         f" {r.goaway})" for r in results)
        print(f"  round {n}: {wall:.1f} s, server CPU {cpu - cpu0:.1f} s, RSS {rss:.0f} MB"
              f" (+{rss - rss0:.1f}); turns during: {len(during)}"
              f" ({sum(t == float('inf') for t in during)} failed), p99"
              f" {p99(during) * 1000:.0f} ms; {ends}")
        cpu0 = cpu


def _flood_for(port: int, seconds: float) -> int:
    """Rapid-reset connections back to back for `seconds`; how many resets were sent."""
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        sent += rapid_reset("127.0.0.1", port, 20_000, deadline=max(end - time.monotonic(), 1)).sent
    return sent


def sustained_flood(proc: ServeProcess, seconds: float) -> None:
    """Two attackers reconnecting for `seconds`: normal turns' latency meanwhile."""
    port = int(proc.env["GRPC_SERVER_PORT"])
    normal = [turn_seconds(proc.grpc_target) for _ in range(20)]

    def attack() -> list[int]:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            return pool.starmap(_flood_for, [(port, seconds)] * 2)

    sent, during = while_running(attack, lambda: turn_seconds(proc.grpc_target))
    failed = sum(t == float("inf") for t in during)
    print(f"  normal turns: p50 {statistics.median(normal) * 1000:.0f} ms, p99"
          f" {p99(normal) * 1000:.0f} ms; during {seconds:g} s of flood ({sum(sent)} resets"
          f" sent): {len(during)} turns, {failed} failed, p50"
          f" {statistics.median(during) * 1000:.0f} ms, p99 {p99(during) * 1000:.0f} ms")


def slow_posts(proc: ServeProcess, count: int, ops_url: str | None) -> None:
    ps = psutil.Process(proc.proc.pid)
    port = int(proc.env["WEB_SERVER_PORT"])
    fds0 = ps.num_fds()
    start = time.monotonic()
    clients = []
    for _ in range(count):
        try:
            clients.append(slow_post("127.0.0.1", port, "/webhooks/twilio/whatsapp"))
        except OSError as exc:
            print(f"  could not open slow client {len(clients) + 1}: {exc}")
            break
    opened = time.monotonic() - start
    # With an ops port, /readyz is there and no longer on the HTTP port.
    probes: dict[str, list[bool]] = {
        "readyz (ops port)" if ops_url else "readyz (HTTP port)": [], "grpc turn": []}
    peak_fds = 0
    with httpx.Client(timeout=1) as http:
        while time.monotonic() - start < 15:
            peak_fds = max(peak_fds, ps.num_fds())
            urls = {"readyz (HTTP port)": proc.http_url, "readyz (ops port)": ops_url}
            for name, url in urls.items():
                if name in probes:
                    try:
                        probes[name].append(http.get(f"{url}/readyz").status_code == 200)
                    except httpx.HTTPError:
                        probes[name].append(False)
            probes["grpc turn"].append(turn_seconds(proc.grpc_target) < float("inf"))
            time.sleep(0.5)
    cut = [closed_by_server(c, max(0.05, start + 30 - time.monotonic())) for c in clients]
    print(f"  {len(clients)} slow POSTs opened in {opened:.1f} s; server descriptors"
          f" {fds0} -> peak {peak_fds}; cut by the server within 30 s: {sum(cut)}")
    for name, ok in probes.items():
        print(f"  {name} during the first 15 s: {sum(ok)}/{len(ok)} ok")
    for c in clients:
        c.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="a tenth of the full size")
    parser.add_argument("--only", type=int, action="append", help="run only attack N (1-5)")
    args = parser.parse_args()
    streams, posts = (2000, 110) if args.small else (20_000, 1100)
    work = Path(tempfile.mkdtemp(prefix="chatms-edge-"))
    pg = Postgres(work)
    fake = Child("bench.fake_upstream", [], AUX_CORE, work / "fake.log", announces_port=True)
    upstream = f"http://127.0.0.1:{fake.read_port()}/v1"
    twilio = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
              "TWILIO_API_BASE_URL": "http://127.0.0.1:9", "LOG_LEVEL": "WARNING"}
    runs: list[tuple[str, dict[str, str], tuple[int, int] | None, Callable[..., None]]] = [
        (f"rapid reset, no token, 2 x {streams} x 4", {}, None,
         lambda p: rapid_reset_rounds(p, streams, 4, None)),
        (f"rapid reset, token, GRPC_MAX_RESETS off, 2 x {streams} x 4",
         {"GRPC_MAX_RESETS": "1000000"}, None,
         lambda p: rapid_reset_rounds(p, streams, 4, AUTH_TOKEN)),
        (f"{posts} slow webhook POSTs, open files 1024/1024, ops on its own port",
         {**twilio, "OPS_PORT": str(free_port())}, (1024, 1024),
         lambda p: slow_posts(p, posts, f"http://127.0.0.1:{p.env['OPS_PORT']}")),
        (f"{posts} slow webhook POSTs, soft open files 1024, defaults", twilio,
         (1024, psutil.Process().rlimit(psutil.RLIMIT_NOFILE)[1]),
         lambda p: slow_posts(p, posts, None)),
        ("sustained rapid reset: 2 attackers reconnecting, no token", {}, None,
         lambda p: sustained_flood(p, 4 if args.small else 20)),
    ]
    try:
        for number, (title, env, limit, run) in enumerate(runs, 1):
            if args.only and number not in args.only:
                continue
            print(f"{number}. {title}")
            proc = ServeProcess(base_env(pg.url, upstream, **env), work / "serve.log",
                                file_limit=limit).start()
            try:
                run(proc)
            finally:
                proc.kill()
    finally:
        fake.stop()
        pg.stop()


if __name__ == "__main__":
    main()
