"""py-spy on the chatms process under gRPC load: the top functions by own and total time."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.procs import AUX_CORE

MAX_LINES = 40


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: int, out: Path) -> subprocess.CompletedProcess[bytes] | None:
    """Sample `pid` for `seconds` without pausing it (--nonblocking), from the aux core."""
    exe = py_spy()
    if exe is None:
        return None
    cmd = ["taskset", "-c", str(AUX_CORE), exe, "record", "--pid", str(pid), "--duration",
           str(seconds), "--rate", "200", "--nonblocking", "--format", "raw", "-o", str(out)]
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, timeout=seconds + 60)


def _short_path(where: str) -> str:
    """py-spy already names files from their sys.path root (`httpcore/_async/http11.py`)."""
    if "site-packages/" in where:
        return where.rsplit("site-packages/", 1)[1]
    return where if not where.startswith("/") else "/".join(where.split("/")[-2:])


def _frame_name(frame: str) -> str:
    # raw frames look like "function (path/to/module.py:line)"; drop the line number
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({_short_path(where)})"


def stacks(raw: Path) -> Iterator[tuple[list[str], int]]:
    """(frames from the root down, samples) for each line of a raw (collapsed) profile."""
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            yield stack.split(";"), int(count_text)


def top(raw: Path) -> dict[str, Any]:
    """Own-time (leaf) and total-time (inclusive) shares per function from collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    samples = 0
    for stack, count in stacks(raw):
        frames = [_frame_name(f) for f in stack if f]
        samples += count
        if frames:
            own[frames[-1]] += count
            by_package[_package(frames[-1])] += count
        for name in set(frames):
            total[name] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / samples) for k, v in counter.most_common(MAX_LINES)]

    return {"samples": samples, "own": shares(own), "total": shares(total),
            "own_by_package": shares(by_package)}


# A short turn's steps, by the first frame (from the leaf up) that names one.
STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("token counting", ("tiktoken", "adapters/tokenizer", "domain/budget")),
    ("log line and metrics", ("logging/", "observability/", "prometheus_client")),
    ("database (asyncpg, two statements)", ("asyncpg", "adapters/postgres", "adapters/pg_")),
    ("upstream request and answer (httpx, aiohttp, SSE parsing)",
     ("adapters/openai", "upstream_http", "adapters/sse", "httpx/", "aiohttp/", "yarl/",
      "multidict/")),
    ("gRPC door (grpclib, h2, protobuf)",
     ("grpclib", "h2/", "hpack", "hyperframe", "betterproto2", "entrypoints/grpc", "protogen")),
    ("HTTP door (Hypercorn, h11, Starlette)",
     ("hypercorn", "h11/", "starlette", "entrypoints/http")),
    ("turn logic (chatms service and domain)", ("chatms/",)),
)
LOOP = "event loop and task switching (uvloop, asyncio)"


def steps(raw: Path) -> list[tuple[str, float]]:
    """Shares of a profile's samples per step of a turn (see STEPS); the rest is the loop."""
    counts: Counter[str] = Counter()
    total = 0
    for frames, count in stacks(raw):
        total += count
        counts[_step(frames)] += count
    return [(name, 100.0 * n / total) for name, n in counts.most_common()] if total else []


# Start-up frames under every stack (the CLI that runs the loop): never a step of a turn.
STARTUP = ("runpy", "chatms/__main__.py", "entrypoints/cli.py", "uvloop/__init__.py",
           "asyncio/runners.py")


def _step(frames: list[str]) -> str:
    for frame in reversed(frames):
        where = frame.partition(" (")[2]
        if any(mark in where for mark in STARTUP):
            return LOOP  # reached the loop itself: the leaf was the loop's own work
        for name, marks in STEPS:
            if any(mark in where for mark in marks):
                return name
    return LOOP


def _package(name: str) -> str:
    """`f (grpclib/protocol.py)` -> `grpclib`; `f (contextlib.py)` -> `contextlib`."""
    where = name.rpartition(" (")[2].rstrip(")")
    return where.split("/")[0].removesuffix(".py")
