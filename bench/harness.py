"""The running pieces of one benchmark run and one `Turn` factory per door."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from bench import clients, rawgrpc, rawsse
from bench.clients import Sample
from bench.load import Summary, Turn, run_load
from bench.procs import AUTH_TOKEN, Chatms, Sampler

CHANNELS = 8  # grpcio multiplexes streams per channel; spread them like many clients would


def shape(ttft: float, gap: float, n: int, burst: int = 1) -> str:
    return f"bench ttft={ttft} gap={gap} n={n} burst={burst}"


def _cpu(ps: psutil.Process) -> float:
    t = ps.cpu_times()
    return float(t.user + t.system)


def _writes(ps: psutil.Process) -> int:
    """How many write system calls `ps` made so far (-1 where the system does not say)."""
    try:
        return int(ps.io_counters().write_count)
    except (AttributeError, psutil.Error):
        return -1


def _spread_out(turn: Turn, seconds: float, concurrency: int) -> Turn:
    async def later(i: int) -> Sample:
        await asyncio.sleep(seconds * (i % concurrency) / concurrency)
        return await turn(i)

    return later


@dataclass
class Harness:
    upstream: str
    relay_port: int
    relay_ps: psutil.Process
    fake_ps: psutil.Process
    relay_raw_port: int
    relay_raw_ps: psutil.Process
    pg: Chatms
    mem: Chatms
    http: httpx.AsyncClient
    old: Chatms | None = None  # the same chatms on httpx's own transport (`-httpx` doors)
    relay_aio_port: int = 0  # the --raw relay on chatms's aiohttp transport
    relay_aio_ps: psutil.Process | None = None
    ctx: Chatms | None = None  # titles and summaries on (`-ctx` doors)
    peer_url: str | None = None  # `--peer`: an OpenAI-compatible gateway (the "peer" door)
    peer_ps: psutil.Process | None = None
    peer_key: str | None = None
    # Resumability's writes off (`-noflush` doors): no flush of a running answer (issue 14)
    noflush: Chatms | None = None
    # writes not coalesced (`-nocoalesce` doors): GRPC_ and HTTP_COALESCE_WRITES=false
    nocoalesce: Chatms | None = None
    sse_available: bool = False
    _stubs: dict[str, list[Any]] = field(default_factory=dict)
    _bare: dict[str, list[rawgrpc.BareChannel]] = field(default_factory=dict)

    def stubs(self, sut: Chatms) -> list[Any]:
        import grpc

        _, pb_grpc = clients.grpc_stubs()
        if sut.grpc_target not in self._stubs:
            self._stubs[sut.grpc_target] = [
                pb_grpc.ChatServiceStub(grpc.aio.insecure_channel(sut.grpc_target))
                for _ in range(CHANNELS)
            ]
        return self._stubs[sut.grpc_target]

    def sut(self, name: str) -> Chatms:
        """The chatms process behind door `name` (gRPC, SSE, JSON and their variants)."""
        sut = self.mem if name.endswith("-mem") else self.pg
        if name.endswith("-httpx") and self.old is not None:
            sut = self.old
        if name.endswith("-ctx") and self.ctx is not None:
            sut = self.ctx
        if name.endswith("-noflush") and self.noflush is not None:
            sut = self.noflush
        if name.endswith("-nocoalesce") and self.nocoalesce is not None:
            sut = self.nocoalesce
        return sut

    async def bare_channels(self, sut: Chatms) -> list[rawgrpc.BareChannel]:
        """As many bare HTTP/2 connections as grpcio's channels, opened before any timing."""
        channels = self._bare.get(sut.grpc_target, [])
        if not channels or any(channel.closed for channel in channels):  # e.g. idle GOAWAY
            for channel in channels:
                await channel.aclose()
            channels = await rawgrpc.open_channels(sut.grpc_target, CHANNELS)
            self._bare[sut.grpc_target] = channels
        return channels

    async def aclose(self) -> None:
        for channels in self._bare.values():
            for channel in channels:
                await channel.aclose()

    def door(self, name: str, text: str, raw: bool = False) -> tuple[Turn, psutil.Process | None]:
        """A turn function for door `name` and the process whose CPU it charges; `raw`: the
        streams (direct, peer, SSE, gRPC) are read by the bare clients of bench/rawsse.py
        and bench/rawgrpc.py (gRPC's connections opened by `bare_channels` beforehand)."""
        user = f"bench-{uuid.uuid4().hex[:8]}"
        if name == "direct":
            url = self.upstream.rstrip("/") + "/chat/completions"
            if raw:
                return (lambda i: rawsse.direct(url, text)), None
            return (lambda i: clients.direct(self.http, url, text)), None
        if name == "peer" and self.peer_url is not None:
            url = self.peer_url + "/chat/completions"
            if raw:
                return (lambda i: rawsse.direct(url, text, self.peer_key)), self.peer_ps
            return (lambda i: clients.direct(self.http, url, text, self.peer_key)), self.peer_ps
        if name == "relay":
            return (lambda i: clients.relay(self.relay_port, text)), self.relay_ps
        if name == "relay-raw":
            return (lambda i: clients.relay(self.relay_raw_port, text)), self.relay_raw_ps
        if name == "relay-aio":
            return (lambda i: clients.relay(self.relay_aio_port, text)), self.relay_aio_ps
        sut = self.sut(name)
        if name.startswith("sse"):
            url = sut.web_url + "/chat"
            if raw:
                return (lambda i: rawsse.sse(url, AUTH_TOKEN, user, text)), sut.child.ps
            return (lambda i: clients.sse(self.http, url, AUTH_TOKEN, user, text)), sut.child.ps
        if name.startswith("json"):
            url = sut.web_url + "/chat"
            return (
                lambda i: clients.json_turn(self.http, url, AUTH_TOKEN, user, text)
            ), sut.child.ps
        if raw and sut.grpc_target in self._bare and not name.startswith("grpc-delta"):
            bare = itertools.cycle(self._bare[sut.grpc_target])
            return (
                lambda i: rawgrpc.grpc_turn(next(bare), AUTH_TOKEN, user, text)
            ), sut.child.ps
        stubs = self.stubs(sut)
        delta = name.startswith("grpc-delta")
        rr = itertools.cycle(stubs)
        return (
            lambda i: clients.grpc_turn(next(rr), AUTH_TOKEN, user, text, delta)
        ), sut.child.ps

    def skipped(self, name: str) -> bool:
        return (name.startswith("sse") and not self.sse_available) or (
            name == "peer" and self.peer_url is None)

    @property
    def peers(self) -> tuple[str, ...]:
        return ("peer",) if self.peer_url is not None else ()

    async def measure(self, name: str, text: str, concurrency: int, total: int,
                      limit_s: float, spread: float = 0.0, raw: bool = False) -> dict[str, Any]:
        """Run one load through one door; summary plus CPU and RSS of the charged process.

        `spread`: the turns start evenly over this many seconds instead of all at once, so
        that their events do not arrive in step (how many arrive together sways the CPU
        each one costs, from one load to the next)."""
        if self.skipped(name):
            return {"door": name, "concurrency": concurrency,
                    "skipped": "POST /chat answers 404 (SSE door not merged)"}
        if raw and name.startswith("grpc"):
            await self.bare_channels(self.sut(name))
        turn, ps = self.door(name, text, raw)
        if spread:
            turn = _spread_out(turn, spread, concurrency)
        charged = ps if ps is not None else self.pg.child.ps
        aux = [psutil.Process(), self.fake_ps]
        aux0 = [_cpu(p) for p in aux]
        writes0 = _writes(charged)
        async with Sampler(charged) as sampler:
            samples = await run_load(turn, concurrency, total, limit_s)
        aux_cpu = [_cpu(p) - c0 for p, c0 in zip(aux, aux0, strict=True)]
        writes = _writes(charged) - writes0
        usage = sampler.usage
        summary = Summary.of(samples)
        out: dict[str, Any] = {"door": name, "concurrency": concurrency, **vars(summary)}
        # How busy each core was, and how much of the SUT core went to anyone but the SUT:
        # the machine is shared, so this says how far to trust the row.
        wall = max(usage.wall, 1e-9)
        out["core_busy_pct"] = [round(100 * b / wall, 1) for b in usage.core_busy]
        out["loadgen_pct"] = round(100 * aux_cpu[0] / wall, 1)
        out["fake_upstream_pct"] = round(100 * aux_cpu[1] / wall, 1)
        relays = (self.relay_ps, self.relay_raw_ps, self.relay_aio_ps)
        on_aux = charged.pid in {p.pid for p in relays if p is not None}
        own = 0.0 if on_aux else usage.cpu_seconds
        out["foreign_core0_pct"] = round(100 * max(0.0, usage.core_busy[0] - own) / wall, 1)
        if ps is not None:
            out["cpu_s"] = usage.cpu_seconds
            out["cpu_us_per_event"] = (
                usage.cpu_seconds / summary.messages * 1e6 if summary.messages else None
            )
            out["rss_peak_mib"] = usage.rss_peak / 2**20
            if writes >= 0:  # write system calls (sockets, logs) per turn, where Linux counts
                out["writes_per_turn"] = writes / max(len(samples), 1)
        return out

    async def probe_sse(self) -> None:
        response = await self.http.post(
            self.pg.web_url + "/chat", json={"user_id": "probe", "user_message": "bench n=1"},
            headers={"authorization": AUTH_TOKEN, "accept": "text/event-stream"},
        )
        self.sse_available = response.status_code != 404
