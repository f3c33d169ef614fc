"""Time to first token in chats long enough to summarise: summaries and titles on vs off.

`python -m bench.context [--chats 8] [--turns 14] [--rounds 3]` from the repository root.

Starts PostgreSQL and the fake upstream (core 1), then `chatms serve` (core 0) alternately
with `CONTEXT_STRATEGY=summarize` + titles (the defaults) and `CONTEXT_STRATEGY=truncate` +
no titles, `--rounds` times each, all with a small window (`MODEL_MAX_TOKENS=600`) so that
turns evict from about the fifth on. Each round drives `--chats` chats at once over gRPC
(grpcio), `--turns` turns each, a short pause between a chat's turns (the summary of the
previous eviction, 0.3 s in the fake, runs during the other chats' turns). Reported: the
time to first token of the turns that came after evictions began, per variant, and how
many summaries were made. Loopback only; bounded in turns and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import httpx

from bench.clients import grpc_stubs
from bench.procs import AUTH_TOKEN, AUX_CORE, Child, Postgres, pin_self, start_chatms

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "context.json"
UPSTREAM_TTFT = 0.05
WINDOW = {"MODEL_MAX_TOKENS": "600", "MAX_TOKENS": "60", "LOG_LEVEL": "WARNING"}
VARIANTS = {
    "summarize": {"CONTEXT_STRATEGY": "summarize", "TITLES_ENABLED": "true"},
    "truncate": {"CONTEXT_STRATEGY": "truncate", "TITLES_ENABLED": "false"},
}
LONG_FROM = 6  # turns from here on come after evictions began
PAUSE = 0.1


def turn_text(chat: int, turn: int) -> str:
    return (f"bench ttft={UPSTREAM_TTFT} gap=0.01 n=20 chat {chat} topic-{turn} "
            + "some words to fill the window " * 6)


async def one_turn(stub: Any, user: str, text: str, chat_id: str | None) -> tuple[float, str]:
    pb, _ = grpc_stubs()
    request = pb.ChatRequest(user_id=user, user_message=text, delta=True)
    if chat_id:
        request.chat_id = chat_id
    started = time.perf_counter()
    first: float | None = None
    last_id = chat_id or ""
    async for response in stub.ChatStream(request, metadata=(("authorization", AUTH_TOKEN),),
                                          timeout=30):
        if first is None:
            first = time.perf_counter() - started
        last_id = response.chat_id
    assert first is not None
    return first, last_id


async def drive_chat(stub: Any, index: int, turns: int) -> list[float]:
    """The time to first token of each turn of one chat after evictions began."""
    user = f"bench-context-{index}-{time.monotonic_ns()}"
    chat_id: str | None = None
    long: list[float] = []
    for turn in range(1, turns + 1):
        ttft, chat_id = await one_turn(stub, user, turn_text(index, turn), chat_id)
        if turn >= LONG_FROM:
            long.append(ttft)
        await asyncio.sleep(PAUSE)
    return long


def scrape(url: str, prefix: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(prefix):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


async def run_variant(name: str, upstream: str, database_url: str, work: Path,
                      chats: int, turns: int) -> dict[str, Any]:
    sut = start_chatms("chatms", ["serve"], upstream, database_url, work / f"{name}.log",
                       {**WINDOW, **VARIANTS[name]})
    try:
        _, pb_grpc = grpc_stubs()
        async with grpc.aio.insecure_channel(sut.grpc_target) as channel:
            stub = pb_grpc.ChatServiceStub(channel)
            await one_turn(stub, "bench-warm", "bench ttft=0 n=1 warm up", None)
            per_chat = await asyncio.gather(*(drive_chat(stub, i, turns) for i in range(chats)))
        await asyncio.sleep(1.0)  # let the last summaries land before counting them
        made = scrape(sut.web_url, "chatms_summaries_total")
        titles = scrape(sut.web_url, "chatms_titles_total")
    finally:
        sut.child.stop()
    return {"ttft": [t for chat in per_chat for t in chat], "summaries": made,
            "titles": titles}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_row(name: str, ttfts: list[float]) -> dict[str, float | str | int]:
    return {"variant": name, "turns": len(ttfts),
            "p50_ms": 1000 * statistics.median(ttfts), "p90_ms": 1000 * quantile(ttfts, 0.9),
            "mean_ms": 1000 * statistics.fmean(ttfts),
            "added_p50_ms": 1000 * (statistics.median(ttfts) - UPSTREAM_TTFT)}


async def main(chats: int, turns: int, rounds: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="chatms-bench-context-"))
    pg = await asyncio.to_thread(Postgres, work)
    fake = Child("bench.fake_upstream", [], AUX_CORE, work / "fake.log", announces_port=True)
    try:
        upstream = f"http://127.0.0.1:{fake.read_port()}/v1"
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
        for round_no in range(rounds):
            # Alternate the order, so that drift on a shared machine hits both alike.
            order = list(VARIANTS) if round_no % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                print(f"[bench context] round {round_no + 1}: {name}", flush=True)
                runs[name].append(await run_variant(name, upstream, pg.url, work, chats, turns))
    finally:
        fake.stop()
        await asyncio.to_thread(pg.stop)
    rows = [summary_row(name, [t for run in results for t in run["ttft"]])
            for name, results in runs.items()]
    return {"chats": chats, "turns": turns, "rounds": rounds, "upstream_ttft_ms":
            1000 * UPSTREAM_TTFT, "rows": rows,
            "summaries": [run["summaries"] for run in runs["summarize"]],
            "titles": [run["titles"] for run in runs["summarize"]]}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chats", type=int, default=8)
    parser.add_argument("--turns", type=int, default=14)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pin_self()
    results = asyncio.run(asyncio.wait_for(
        main(min(args.chats, 50), min(args.turns, 40), min(args.rounds, 10)), 540))
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print("| variant | long-chat turns | TTFT p50 | p90 | mean | added over upstream (p50) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in results["rows"]:
        print(f"| {row['variant']} | {row['turns']} | {row['p50_ms']:.1f} ms | "
              f"{row['p90_ms']:.1f} ms | {row['mean_ms']:.1f} ms | +{row['added_p50_ms']:.1f} ms |")
    print("summaries per summarize round:", results["summaries"])


if __name__ == "__main__":
    cli()
