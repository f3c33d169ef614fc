"""Drive C concurrent turns over N requests, bounded in count and time, and summarise."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bench.clients import Sample

Turn = Callable[[int], Coroutine[Any, Any, Sample]]


async def run_load(turn: Turn, concurrency: int, total: int, limit_s: float) -> list[Sample]:
    """`total` turns, at most `concurrency` at once; each turn and the whole run time-boxed."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Sample:
        async with gate:
            try:
                return await asyncio.wait_for(turn(i), limit_s)
            except TimeoutError:
                return Sample(error="timeout")
            except Exception as exc:
                return Sample(error=f"{type(exc).__name__}: {exc}"[:160])

    rounds = -(-total // concurrency)
    return await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(total))), limit_s * rounds + 30
    )


async def hold_open(turn: Turn, count: int) -> list[asyncio.Task[Sample]]:
    """Start `count` turns at once and hand back their tasks (for memory per open stream)."""
    return [asyncio.create_task(turn(i)) for i in range(count)]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Summary:
    n: int
    errors: int
    first_error: str | None
    ttft_p50_ms: float
    ttft_p99_ms: float
    gap_p50_ms: float
    gap_p99_ms: float
    total_p50_s: float
    total_mean_s: float
    messages: int
    wire_bytes: int

    @classmethod
    def of(cls, samples: list[Sample]) -> Summary:
        ok = [s for s in samples if s.error is None]
        bad = [s for s in samples if s.error is not None]
        ttfts = [s.ttft for s in ok if s.ttft is not None]
        gaps = [g for s in ok for g in s.gaps]
        totals = [s.total for s in ok]
        return cls(
            n=len(samples), errors=len(bad), first_error=bad[0].error if bad else None,
            ttft_p50_ms=pct(ttfts, 50) * 1e3, ttft_p99_ms=pct(ttfts, 99) * 1e3,
            gap_p50_ms=pct(gaps, 50) * 1e3, gap_p99_ms=pct(gaps, 99) * 1e3,
            total_p50_s=pct(totals, 50),
            total_mean_s=statistics.fmean(totals) if totals else float("nan"),
            messages=sum(s.messages for s in ok), wire_bytes=sum(s.wire_bytes for s in ok),
        )
