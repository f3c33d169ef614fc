"""Issue 6's scenarios 1-4, 6 and 7 (5, the database work, is bench/dbwork.py)."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.harness import Harness, shape
from bench.load import hold_open


@dataclass(frozen=True)
class Plan:
    """Sizes of one run; `quick` shrinks every scenario to fit in under two minutes."""

    ttft_n1: int
    ttft_n50: int
    turn_streams: int
    turn_events: int
    cpu_streams: int
    cpu_events: int
    ramp: tuple[int, ...]
    ramp_events: int
    hold_streams: int
    profile_seconds: int
    cpu_repeats: int
    short_turns: int
    resume_pairs: int

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(15, 50, 50, 100, 20, 150, (25, 50, 100), 70, 200, 6, 1, 200, 2)
        return cls(40, 500, 100, 300, 20, 300, (25, 50, 100, 150, 200), 140, 200, 12, 3, 400, 6)


TTFT_SHAPE = shape(0.1, 0.01, 5)
WARM_SHAPE = shape(0.0, 0.0, 20)
# Longer than the upstream pool keeps an idle connection (httpx.Limits' default, 5 s).
POOL_EXPIRY_WAIT_S = 6.0
TTFT_DOORS = ("direct", "grpc", "grpc-mem", "sse", "sse-mem", "grpc-noflush", "sse-noflush")


async def warm_up(h: Harness) -> None:
    """Connections, caches and code paths warm before anything is timed."""
    for door in ("direct", "grpc", "grpc-mem", "grpc-delta", "sse", "sse-mem", "relay",
                 "relay-raw", "relay-aio", "grpc-httpx", "sse-httpx", "grpc-ctx", "grpc-noflush",
                 "sse-noflush", "grpc-nocoalesce", "sse-nocoalesce", *h.peers):
        # 50 at once: the database pool and the gRPC channels reach their working size.
        await h.measure(door, WARM_SHAPE, 50, 100, 30)


async def ttft(h: Harness, plan: Plan) -> list[dict[str, Any]]:
    """1: added time to first token at 1 and 50 streams, with and without persistence; the
    streams read by bare clients (bench/rawsse.py, bench/rawgrpc.py; rows `direct-httpx` and
    `grpc-grpcio` read by the clients used before, so that the instruments' share shows).

    Each 50-stream load follows 50 zero-delay turns through its door, so that it meets the
    door's upstream pool warm, as after the warm-up (the one-stream loads before it leave
    the pool idle for minutes). Then gRPC and SSE once more after the pool expired: the
    first 50 turns open 50 new upstream connections (`-cold` rows)."""
    rows = []
    for concurrency, total in ((1, plan.ttft_n1), (50, plan.ttft_n50)):
        for door in TTFT_DOORS + h.peers:
            if concurrency > 1 and door.endswith("-noflush"):
                continue  # compared at 50 streams in scenario 14's alternating pairs
            if concurrency > 1:
                await h.measure(door, WARM_SHAPE, 50, 100, 30)
            rows.append(await h.measure(door, TTFT_SHAPE, concurrency, total, 30, raw=True))
        # The instruments' own share: the baseline read by httpx, gRPC by grpcio (as before).
        row = await h.measure("direct", TTFT_SHAPE, concurrency, total, 30)
        rows.append({**row, "door": "direct-httpx"})
        if concurrency > 1:
            await h.measure("grpc", WARM_SHAPE, 50, 100, 30)
        row = await h.measure("grpc", TTFT_SHAPE, concurrency, total, 30)
        rows.append({**row, "door": "grpc-grpcio"})
    for door in ("grpc", "sse"):
        await asyncio.sleep(POOL_EXPIRY_WAIT_S)
        row = await h.measure(door, TTFT_SHAPE, 50, plan.ttft_n50, 30, raw=True)
        rows.append({**row, "door": door + "-cold"})
    return rows


async def turn_time(h: Harness, plan: Plan) -> list[dict[str, Any]]:
    """2: total turn time at many concurrent streams of many events at 14 ms spacing."""
    text = shape(0.1, 0.014, plan.turn_events)
    return [
        await h.measure(door, text, plan.turn_streams, plan.turn_streams, 60)
        for door in ("direct", "grpc", "sse", *h.peers)
    ]


async def cpu_per_event(h: Harness, plan: Plan) -> list[dict[str, Any]]:
    """3 (and delta vs cumulative): CPU per relayed event with each event on its own."""
    text = shape(0.05, 0.014, plan.cpu_events)
    doors = ("relay", "relay-raw", "relay-aio", "grpc", "grpc-delta", "sse", "grpc-httpx",
             "sse-httpx", "grpc-nocoalesce", *h.peers)
    runs: dict[str, list[dict[str, Any]]] = {door: [] for door in doors}
    for _ in range(plan.cpu_repeats):  # interleaved, so drift in the machine hits all alike
        for door in doors:
            runs[door].append(await h.measure(door, text, plan.cpu_streams, plan.cpu_streams, 60))
    rows = []
    for door in doors:
        measured = [r for r in runs[door] if r.get("cpu_us_per_event") is not None]
        if not measured:
            rows.append(runs[door][0])
            continue
        measured.sort(key=lambda r: r["cpu_us_per_event"])
        median = dict(measured[len(measured) // 2])
        median["cpu_us_per_event_runs"] = [r["cpu_us_per_event"] for r in measured]
        rows.append(median)
    return rows


SHORT_SHAPE = shape(0.01, 0.01, 2)  # a short answer: two events, 10 ms apart
SHORT_DOORS = ("grpc", "json", "grpc-mem", "json-mem", "grpc-httpx", "json-httpx", "grpc-ctx")


async def short_turns(h: Harness, plan: Plan) -> list[dict[str, Any]]:
    """8: CPU per short turn, 20 at a time: the fixed cost of a turn, and so how many turns
    per second one core serves. Doors interleaved, median of the repeats."""
    doors = SHORT_DOORS + h.peers
    runs: dict[str, list[dict[str, Any]]] = {door: [] for door in doors}
    for _ in range(plan.cpu_repeats):
        for door in doors:
            row = await h.measure(door, SHORT_SHAPE, 20, plan.short_turns, 30)
            if row.get("cpu_s") and row["n"] > row["errors"]:
                row["cpu_ms_per_turn"] = row["cpu_s"] / (row["n"] - row["errors"]) * 1e3
            runs[door].append(row)
    return [_median(runs[door], "cpu_ms_per_turn") for door in doors]


SPREAD = 0.014  # scenario 14's streams start over one event gap, so they are not in step


async def resumable(h: Harness, plan: Plan) -> list[dict[str, Any]]:
    """14: CPU per relayed event with resumability's writes on (STREAM_FLUSH_MS=300) and off
    (the `-noflush` chatms), in pairs run back to back, in alternating order, so that drift
    and going first hit both alike; 50 streams,
    so that each flush carries many answers as it would in production."""
    text = shape(0.05, 0.014, plan.cpu_events)
    rows: list[dict[str, Any]] = []
    for door in ("grpc", "sse"):
        pairs = []
        for i in range(plan.resume_pairs):
            on, off = await _on_and_off(h, door, i, text, 50, 50, 60, SPREAD)
            pairs.append((on, off))
        measured = [(a, b) for a, b in pairs if a.get("cpu_s") and b.get("cpu_s")]
        if not measured:
            rows.append({"door": door, **pairs[0][0]})
            continue
        cpu_on, cpu_off = (sum(p[i]["cpu_s"] for p in measured) for i in (0, 1))
        events_on, events_off = (sum(p[i]["messages"] for p in measured) for i in (0, 1))
        rows.append({
            "door": door, "pairs": len(measured),
            "errors": sum(a["errors"] + b["errors"] for a, b in measured),
            "cpu_us_per_event_on": cpu_on / events_on * 1e6,
            "cpu_us_per_event_off": cpu_off / events_off * 1e6,
            "pair_ratios": [a["cpu_us_per_event"] / b["cpu_us_per_event"] for a, b in measured],
            **await _ttft_pairs(h, door, plan.resume_pairs),
        })
        # Each run too (for the contention table), the default's named `-on`.
        rows += [{**a, "door": door + "-on"} for a, _ in pairs] + [b for _, b in pairs]
    return rows


async def _on_and_off(h: Harness, door: str, i: int, text: str, concurrency: int, total: int,
                      limit_s: float, spread: float = 0.0, twin: str = "-noflush",
                      raw: bool = False) -> tuple[dict[str, Any], ...]:
    """The same load through `door` and its twin (`-noflush`), (on, off); A B for even `i`,
    B A for odd, so that whichever runs first in a pair does not decide the result."""
    names = (door, door + twin)
    rows = {}
    for name in names if i % 2 == 0 else reversed(names):
        rows[name] = await h.measure(name, text, concurrency, total, limit_s, spread, raw)
    return rows[names[0]], rows[names[1]]


async def _ttft_pairs(h: Harness, door: str, pairs: int) -> dict[str, Any]:
    """TTFT p50 at 50 streams, on and off in alternating order: medians of the p50s."""
    on, off, errors = [], [], 0
    for i in range(pairs):
        rows = await _on_and_off(h, door, i, TTFT_SHAPE, 50, 100, 30, raw=True)
        on.append(rows[0]["ttft_p50_ms"])
        off.append(rows[1]["ttft_p50_ms"])
        errors += rows[0]["errors"] + rows[1]["errors"]
    return {"ttft50_p50_ms_on": statistics.median(on), "ttft50_p50_ms_off": statistics.median(off),
            "ttft50_runs": [on, off], "ttft50_errors": errors}


async def http_writes(h: Harness, plan: Plan) -> list[dict[str, Any]]:
    """3h: SSE time to first token with the HTTP writes coalesced (default) and without
    (the `-nocoalesce` twin), at 1 and 50 streams, in alternating pairs: medians."""
    rows = []
    for concurrency, total in ((1, plan.ttft_n1), (50, plan.ttft_n50)):
        runs: list[tuple[dict[str, Any], ...]] = [
            await _on_and_off(h, "sse", i, TTFT_SHAPE, concurrency, total, 30,
                              twin="-nocoalesce", raw=True)
            for i in range(plan.resume_pairs)
        ]
        row: dict[str, Any] = {"door": "sse", "concurrency": concurrency, "pairs": len(runs),
                               "errors": sum(a["errors"] + b["errors"] for a, b in runs)}
        for key in ("ttft_p50_ms", "ttft_p99_ms", "writes_per_turn"):
            for side, k in (("on", 0), ("off", 1)):
                values = [r[k][key] for r in runs if key in r[k]]
                row[f"{key}_{side}"] = statistics.median(values) if values else None
        rows.append(row)
    return rows


def _median(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    measured = sorted((r for r in rows if r.get(key) is not None), key=lambda r: r[key])
    if not measured:
        return rows[0]
    median = dict(measured[len(measured) // 2])
    median[key + "_runs"] = [r[key] for r in measured]
    return median


async def ramp(h: Harness, plan: Plan) -> list[dict[str, Any]]:
    """4: streams at 70 events/s each; stop a door's ramp at its first level over 5 ms."""
    text = shape(0.1, round(1 / 70, 4), plan.ramp_events)
    rows: list[dict[str, Any]] = []
    doors = ["grpc", "sse"]
    for level in plan.ramp:
        base = await h.measure("direct", text, level, level, 60)
        rows.append(base)
        for door in list(doors):
            row = await h.measure(door, text, level, level, 60)
            if "skipped" in row:
                doors.remove(door)
                rows.append(row)
                continue
            row["added_gap_p99_ms"] = row["gap_p99_ms"] - base["gap_p99_ms"]
            row["added_ttft_p50_ms"] = row["ttft_p50_ms"] - base["ttft_p50_ms"]
            rows.append(row)
            # Past the first miss only the plot gains; keep the first three levels for it.
            if (row["added_gap_p99_ms"] > 5 or row["errors"]) and level >= plan.ramp[2]:
                doors.remove(door)
        if not doors:
            break
    return rows


async def memory_per_stream(h: Harness, plan: Plan) -> list[dict[str, Any]]:
    """6: RSS growth with N streams held open mid-answer, divided by N.

    Runs first, on processes that have served a few single turns only: once a process has
    held more streams than N, freed memory is reused and the growth reads near zero.
    """
    text = shape(0.05, 0.5, 10)
    rows: list[dict[str, Any]] = []
    for door in ("grpc", "sse", "relay"):
        if h.skipped(door):
            rows.append({"door": door, "skipped": "POST /chat answers 404"})
            continue
        turn, ps = h.door(door, text)
        assert ps is not None
        warm, _ = h.door(door, shape(0.0, 0.0, 10))
        for i in range(5):
            await warm(i)
        before = ps.memory_info().rss
        tasks = await hold_open(turn, plan.hold_streams)
        await asyncio.sleep(2.5)  # all opened, each about half way through its answer
        during = ps.memory_info().rss
        samples = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        errors = sum(1 for s in samples if s.error)
        rows.append({
            "door": door, "streams": plan.hold_streams, "errors": errors,
            "rss_before_mib": before / 2**20, "rss_during_mib": during / 2**20,
            "kib_per_stream": (during - before) / plan.hold_streams / 1024,
        })
    return rows


WEBHOOK = "/webhooks/twilio/whatsapp"
ACCOUNT_SID = "AC" + "0" * 32


async def whatsapp_ack(h: Harness, twilio_token: str) -> dict[str, Any]:
    """7: webhook acknowledgement while the upstream takes 30 s to answer."""
    url = h.pg.web_url + WEBHOOK
    probe = await h.http.post(url, data={"Body": "probe"})
    if probe.status_code == 404:
        return {"skipped": f"POST {WEBHOOK} answers 404 (WhatsApp door not merged)"}
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(twilio_token)
    times: list[float] = []
    statuses: list[int | str] = []
    for i in range(30):
        params = {
            "From": f"whatsapp:+1555000{i:04d}", "To": "whatsapp:+15550009999",
            "Body": shape(30.0, 0.0, 1), "MessageSid": f"SMbench{i:026d}",
            "AccountSid": ACCOUNT_SID, "NumMedia": "0", "WaId": f"1555000{i:04d}",
        }
        headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
        start = time.perf_counter()
        try:
            reply = await h.http.post(url, data=params, headers=headers, timeout=20)
            statuses.append(reply.status_code)
        except httpx.HTTPError as exc:
            statuses.append(type(exc).__name__)
        times.append(time.perf_counter() - start)
    ordered = sorted(times)
    return {
        "requests": len(times), "statuses": sorted({str(s) for s in statuses}),
        "ack_p50_ms": ordered[len(ordered) // 2] * 1e3,
        "ack_p99_ms": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1e3,
    }
