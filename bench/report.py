"""Results to JSON, a Markdown table (each figure against the same-run baseline) and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str, str]  # figure, measured, baseline, goal, verdict


def _find(rows: list[dict[str, Any]], door: str, concurrency: int | None = None) -> dict[str, Any]:
    for row in rows:
        if row.get("door") == door and concurrency in (None, row.get("concurrency")):
            return row
    return {"skipped": "not run"}


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


# Issue 16's goals: added p50 ≤ 2 ms at one stream, p99 ≤ 20 ms at fifty.
TTFT_GOALS: dict[int, tuple[tuple[str, float | None], ...]] = {
    1: (("p50", 2.0), ("p99", 5.0)), 50: (("p50", None), ("p99", 20.0))}


def _ttft_rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for c in (1, 50):
        base = _find(r["ttft"], "direct", c)
        read_by_httpx = _find(r["ttft"], "direct-httpx", c)
        if "ttft_p50_ms" in read_by_httpx and "ttft_p50_ms" in base:
            out.append((f"1. the direct baseline read by httpx, {c} stream(s)",
                        f"p50 {read_by_httpx['ttft_p50_ms'] - base['ttft_p50_ms']:+.2f} ms, "
                        f"p99 {read_by_httpx['ttft_p99_ms'] - base['ttft_p99_ms']:+.2f} ms",
                        f"bare client {base['ttft_p50_ms']:.1f} / {base['ttft_p99_ms']:.1f} ms",
                        "— (the instrument's share)", "n/a"))
        grpcio, bare = _find(r["ttft"], "grpc-grpcio", c), _find(r["ttft"], "grpc", c)
        if "ttft_p50_ms" in grpcio and "ttft_p50_ms" in bare:
            out.append((f"1. gRPC read by grpcio, {c} stream(s)",
                        f"p50 {grpcio['ttft_p50_ms'] - bare['ttft_p50_ms']:+.2f} ms, "
                        f"p99 {grpcio['ttft_p99_ms'] - bare['ttft_p99_ms']:+.2f} ms "
                        f"(added p50 {grpcio['ttft_p50_ms'] - base['ttft_p50_ms']:+.2f} ms)",
                        f"bare client {bare['ttft_p50_ms']:.1f} / {bare['ttft_p99_ms']:.1f} ms",
                        "— (the instrument's share)", "n/a"))
        for door in ("grpc", "sse"):
            row, mem = _find(r["ttft"], door, c), _find(r["ttft"], door + "-mem", c)
            if "skipped" in row:
                out.append((f"1. added TTFT, {door}, {c} stream(s)", "skipped: " + row["skipped"],
                            "", "p50 ≤ 2 ms, p99 ≤ 5 ms", "n/a"))
                continue
            err = f" ({row['errors']} errors)" if row["errors"] else ""
            for q, goal in TTFT_GOALS[c]:
                added = row[f"ttft_{q}_ms"] - base[f"ttft_{q}_ms"]
                out.append((f"1. added TTFT {q}, {door}, {c} stream(s)",
                            f"{added:+.2f} ms (chatms {row[f'ttft_{q}_ms']:.1f} ms){err}",
                            f"direct {base[f'ttft_{q}_ms']:.1f} ms",
                            "—" if goal is None else f"≤ {goal:g} ms",
                            _verdict(None if goal is None else added <= goal
                                     and not row["errors"])))
            ratio = row["ttft_p50_ms"] / mem["ttft_p50_ms"]
            out.append((f"1. TTFT p50 with / without persistence, {door}, {c} stream(s)",
                        f"{ratio:.3f}x ({row['ttft_p50_ms']:.1f} / {mem['ttft_p50_ms']:.1f} ms)",
                        "in-memory repository", "≤ 1.05x", _verdict(ratio <= 1.05)))
    out += _cold_rows(r)
    return out


def _cold_rows(r: dict[str, Any]) -> list[Row]:
    """Scenario 1's 50-stream load once more after the upstream pool expired."""
    out: list[Row] = []
    base = _find(r["ttft"], "direct", 50)
    for door in ("grpc", "sse"):
        row = _find(r["ttft"], door + "-cold", 50)
        if "ttft_p99_ms" not in row or "ttft_p99_ms" not in base:
            continue
        err = f" ({row['errors']} errors)" if row["errors"] else ""
        for q, goal in TTFT_GOALS[50]:
            added = row[f"ttft_{q}_ms"] - base[f"ttft_{q}_ms"]
            out.append((f"1. added TTFT {q}, {door}, 50 streams, upstream pool expired",
                        f"{added:+.2f} ms (chatms {row[f'ttft_{q}_ms']:.1f} ms){err}",
                        f"direct {base[f'ttft_{q}_ms']:.1f} ms",
                        "—" if goal is None else f"≤ {goal:g} ms",
                        _verdict(None if goal is None else added <= goal and not row["errors"])))
    return out


def _turn_rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    base = _find(r["turn_time"], "direct")
    for door in ("grpc", "sse"):
        row = _find(r["turn_time"], door)
        if "skipped" in row:
            out.append((f"2. turn time ratio, {door}", "skipped: " + row["skipped"], "",
                        "≤ 1.05x", "n/a"))
            continue
        ratio = row["total_mean_s"] / base["total_mean_s"]
        out.append((f"2. turn time ratio, {door}, {row['concurrency']} streams",
                    f"{ratio:.4f}x (mean {row['total_mean_s']:.3f} s, {row['errors']} errors)",
                    f"direct mean {base['total_mean_s']:.3f} s", "≤ 1.05x",
                    _verdict(ratio <= 1.05 and not row["errors"])))
    return out


def _spread(row: dict[str, Any]) -> str:
    runs = row.get("cpu_us_per_event_runs") or []
    if len(runs) < 2:
        return ""
    return f" (median of {len(runs)}: {min(runs):.0f}-{max(runs):.0f})"


def _cpu_rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    relay = _find(r["cpu"], "relay")
    floor = relay.get("cpu_us_per_event")
    for door, goal in (("grpc", 120.0), ("grpc-delta", 120.0), ("sse", 100.0)):
        row = _find(r["cpu"], door)
        if "skipped" in row:
            out.append((f"3. CPU per event, {door}", "skipped: " + row["skipped"], "",
                        f"≤ {goal:g} µs", "n/a"))
            continue
        us = row["cpu_us_per_event"]
        ratio = f", {us / floor:.2f}x relay" if floor and us else ""
        out.append((f"3. CPU per relayed event, {door}",
                     f"{_num(us, '{:.0f}')} µs{ratio}{_spread(row)}",
                    f"bare relay {_num(floor, '{:.0f}')} µs{_spread(relay)}", f"≤ {goal:g} µs",
                    _verdict(us is not None and us <= goal and not row["errors"])))
    raw = _find(r["cpu"], "relay-raw")
    if floor and raw.get("cpu_us_per_event"):
        rus = raw["cpu_us_per_event"]
        out.append(("3c. bare relay: aiter_raw + own SSE split / aiter_lines",
                    f"{rus / floor:.2f}x ({rus:.0f} µs{_spread(raw)})",
                    f"aiter_lines relay {floor:.0f} µs", "< 1x (to adopt)",
                    _verdict(rus < floor)))
    for door in ("grpc", "sse"):
        new, old = _find(r["cpu"], door), _find(r["cpu"], door + "-httpx")
        if new.get("cpu_us_per_event") and old.get("cpu_us_per_event"):
            ratio = new["cpu_us_per_event"] / old["cpu_us_per_event"]
            out.append((f"3t. CPU per event, aiohttp / httpx transport, {door}",
                        f"{ratio:.2f}x ({new['cpu_us_per_event']:.0f} µs)",
                        f"httpx's own transport {old['cpu_us_per_event']:.0f} µs{_spread(old)}",
                        "< 1x (to adopt)", _verdict(ratio < 1 and not new["errors"])))
    new, old = _find(r["cpu"], "grpc"), _find(r["cpu"], "grpc-nocoalesce")
    if new.get("cpu_us_per_event") and old.get("cpu_us_per_event"):
        ratio = new["cpu_us_per_event"] / old["cpu_us_per_event"]
        out.append(("3w. CPU per event, gRPC writes coalesced / one send per message",
                    f"{ratio:.2f}x ({new['cpu_us_per_event']:.0f} µs)",
                    f"GRPC_COALESCE_WRITES=false {old['cpu_us_per_event']:.0f} µs{_spread(old)}",
                    "< 1x (to adopt)", _verdict(ratio < 1 and not new["errors"])))
    for row in r.get("http_writes", []):
        c, pairs = row["concurrency"], row["pairs"]
        q = "p50" if c == 1 else "p99"
        on, off = row[f"ttft_{q}_ms_on"], row[f"ttft_{q}_ms_off"]
        out.append((f"3h. SSE TTFT {q}, HTTP writes coalesced / not, {c} stream{'s' * (c > 1)}",
                    f"{on / off:.3f}x ({on:.1f} ms, {on - off:+.2f} ms; median of {pairs} "
                    "alternating loads)", f"HTTP_COALESCE_WRITES=false {off:.1f} ms", "< 1x",
                    _verdict(on < off and not row["errors"])))
        won, woff = row.get("writes_per_turn_on"), row.get("writes_per_turn_off")
        if won is not None and woff is not None:
            out.append((f"3h. write system calls per SSE turn (5 events), coalesced / not, "
                        f"{c} stream{'s' * (c > 1)}", f"{won:.2f}",
                        f"HTTP_COALESCE_WRITES=false {woff:.2f}", "fewer",
                        _verdict(won < woff)))
    aio = _find(r["cpu"], "relay-aio")
    if floor and aio.get("cpu_us_per_event"):
        aus = aio["cpu_us_per_event"]
        out.append(("3c. bare relay: on the aiohttp transport / httpx's own",
                    f"{aus / floor:.2f}x ({aus:.0f} µs{_spread(aio)})",
                    f"httpx relay {floor:.0f} µs", "< 1x", _verdict(aus < floor)))
    cum, dlt = _find(r["cpu"], "grpc"), _find(r["cpu"], "grpc-delta")
    if "skipped" not in cum and "skipped" not in dlt and cum["n"] and dlt["n"]:
        cb, db = cum["wire_bytes"] / cum["n"], dlt["wire_bytes"] / dlt["n"]
        out.append(("3b. gRPC wire bytes per turn, delta / cumulative",
                    f"{db / cb:.3f}x ({db:,.0f} vs {cb:,.0f} B)", "cumulative (default)",
                    "smaller", _verdict(db < cb)))
        out.append(("3b. gRPC CPU per event, delta / cumulative",
                    f"{dlt['cpu_us_per_event'] / cum['cpu_us_per_event']:.2f}x",
                    "cumulative (default)", "≤ 1x",
                    _verdict(dlt["cpu_us_per_event"] <= cum["cpu_us_per_event"])))
    return out


def _resume_rows(r: dict[str, Any]) -> list[Row]:
    """Issue 14: resumability's writes on (STREAM_FLUSH_MS default) / off (no flush)."""
    out: list[Row] = []
    for door in ("grpc", "sse"):
        row = _find(r.get("resumable", []), door)
        if "cpu_us_per_event_on" in row:
            on, off = row["cpu_us_per_event_on"], row["cpu_us_per_event_off"]
            pairs = row["pair_ratios"]
            out.append((f"14. CPU per relayed event, resumable on / off, {door}, 50 streams",
                        f"{on / off:.3f}x ({on:.1f} µs; {len(pairs)} pairs "
                        f"{min(pairs):.2f}-{max(pairs):.2f})",
                        f"STREAM_FLUSH_MS=60000 {off:.1f} µs", "≤ 1.05x",
                        _verdict(on / off <= 1.05 and not row["errors"])))
            ton, toff = row["ttft50_p50_ms_on"], row["ttft50_p50_ms_off"]
            out.append((f"14. TTFT p50, resumable on / off, {door}, 50 streams",
                        f"{ton / toff:.3f}x ({ton:.1f} ms, {ton - toff:+.2f} ms; median of "
                        f"{len(pairs)} alternating loads)", f"STREAM_FLUSH_MS=60000 {toff:.1f} ms",
                        "≤ 1.05x", _verdict(ton / toff <= 1.05
                                            and not row.get("ttft50_errors"))))
        on, off = _find(r["ttft"], door, 1), _find(r["ttft"], door + "-noflush", 1)
        if "ttft_p50_ms" in on and "ttft_p50_ms" in off:
            ratio = on["ttft_p50_ms"] / off["ttft_p50_ms"]
            out.append((f"14. TTFT p50, resumable on / off, {door}, 1 stream",
                        f"{ratio:.3f}x ({on['ttft_p50_ms']:.1f} ms, "
                        f"{on['ttft_p50_ms'] - off['ttft_p50_ms']:+.2f} ms)",
                        f"STREAM_FLUSH_MS=60000 {off['ttft_p50_ms']:.1f} ms", "≤ 1.05x",
                        _verdict(ratio <= 1.05 and not on["errors"])))
    return out


def _short_rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for door in ("grpc", "json"):
        row, old = _find(r.get("short", []), door), _find(r.get("short", []), door + "-httpx")
        mem = _find(r.get("short", []), door + "-mem")
        ms = row.get("cpu_ms_per_turn")
        if ms is None:
            out.append((f"8. CPU per short turn, {door}", "not measured", "", "≤ 1.5 ms", "n/a"))
            continue
        runs = row.get("cpu_ms_per_turn_runs") or []
        spread = f", runs {min(runs):.2f}-{max(runs):.2f}" if len(runs) > 1 else ""
        err = f", {row['errors']} errors" if row["errors"] else ""
        base = [f"httpx transport {old['cpu_ms_per_turn']:.2f} ms"] if "cpu_ms_per_turn" in old \
            else []
        if "cpu_ms_per_turn" in mem:
            base.append(f"in-memory repository {mem['cpu_ms_per_turn']:.2f} ms")
        ctx = _find(r.get("short", []), door + "-ctx")
        if "cpu_ms_per_turn" in ctx:
            base.append(f"titles and summaries on {ctx['cpu_ms_per_turn']:.2f} ms")
        out.append((f"8. CPU per short turn (2 events), {door}, 20 at a time",
                    f"{ms:.2f} ms = {1e3 / ms:,.0f} turns/s per core{spread}{err}",
                    "; ".join(base), "≤ 1.5 ms (≥ 500 turns/s)",
                    _verdict(ms <= 1.5 and not row["errors"])))
    return out


def _peer_rows(r: dict[str, Any]) -> list[Row]:
    """chatms's doors beside the peer gateway, figure by figure (lower is better on each)."""
    name = r["meta"].get("peer")
    if not name:
        return []
    out: list[Row] = []

    def row(figure: str, ours: dict[str, float | None], theirs: float | None, unit: str) -> None:
        if theirs is None or any(v is None for v in ours.values()):
            out.append((f"P. {figure}", "not measured", name, "chatms lower", "n/a"))
            return
        shown = ", ".join(f"{door} {v:{unit}}" for door, v in ours.items())
        ahead = all(v is not None and v < theirs for v in ours.values())
        out.append((f"P. {figure}", shown, f"{name} {theirs:{unit}}", "chatms lower",
                    _verdict(ahead)))

    for c in (1, 50):
        base = _find(r["ttft"], "direct", c).get("ttft_p50_ms")

        def added(door: str, q: str, c: int = c) -> float | None:
            x, b = _find(r["ttft"], door, c), _find(r["ttft"], "direct", c)
            return x[f"ttft_{q}_ms"] - b[f"ttft_{q}_ms"] if f"ttft_{q}_ms" in x else None

        if base is not None:
            for q in ("p50", "p99"):
                row(f"added TTFT {q}, {c} stream(s), ms", {d: added(d, q) for d in ("grpc", "sse")},
                    added("peer", q), "+.2f")
    direct = _find(r["turn_time"], "direct").get("total_mean_s")

    def ratio(door: str) -> float | None:
        x = _find(r["turn_time"], door)
        return x["total_mean_s"] / direct if direct and "total_mean_s" in x else None

    streams = _find(r["turn_time"], "direct").get("concurrency")
    row(f"turn time / direct, {streams} streams", {d: ratio(d) for d in ("grpc", "sse")},
        ratio("peer"), ".3f")
    row("CPU per relayed event, µs", {d: _find(r["cpu"], d).get("cpu_us_per_event")
                                       for d in ("grpc", "sse")},
        _find(r["cpu"], "peer").get("cpu_us_per_event"), ".0f")
    short = r.get("short", [])
    row("CPU per short turn, ms", {d: _find(short, d).get("cpu_ms_per_turn")
                                   for d in ("grpc", "json")},
        _find(short, "peer").get("cpu_ms_per_turn"), ".2f")
    errors = sum(x.get("errors", 0) for k in ("ttft", "turn_time", "cpu", "short")
                 for x in r.get(k, []) if x.get("door") == "peer")
    out.append(("P. peer errors (all loads)", str(errors), name, "", "n/a"))
    return out


def _ramp_rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for door in ("grpc", "sse"):
        rows = [x for x in r["ramp"] if x.get("door") == door]
        if not rows or "skipped" in rows[0]:
            out.append((f"4. streams held at 70 ev/s, {door}", "skipped (door absent)", "",
                        "≥ 100", "n/a"))
            continue
        held = [x["concurrency"] for x in rows if x["added_gap_p99_ms"] <= 5 and not x["errors"]]
        steps = ", ".join(f"{x['concurrency']}: {x['added_gap_p99_ms']:+.1f} ms" for x in rows)
        best = max(held) if held else 0
        capped = " (ramp top; may hold more)" if held and best == max(
            x["concurrency"] for x in rows) and len(held) == len(rows) else ""
        out.append((f"4. streams held at 70 ev/s, {door}", f"{best}{capped}",
                    f"added p99 gap vs direct: {steps}", "≥ 100", _verdict(best >= 100)))
    return out


def _db_rows(r: dict[str, Any]) -> list[Row]:
    rows = r["db"]
    if not rows:
        return []
    first = rows[0]
    counts = "/".join(str(x["statements_per_turn"]) for x in rows)
    same = len({x["statements_per_turn"] for x in rows}) == 1
    resets = sum("RESET ALL" in q for q in first["statements"])
    out: list[Row] = [("5. round trips on a turn's path, 1/1k/10k prior",
                       f"{counts} (of which {resets} pool-release RESET)",
                       "same at 1 prior message", "equal, ≤ 2",
                       _verdict(same and first["statements_per_turn"] <= 2))]
    if "writes_beside_stream" in first:
        flushes = first["flushes"]
        out.append(("5. writes beside the stream per turn (resumable answers)",
                    f"{first['writes_beside_stream']} ({first['beside_ms_p50']:.2f} ms)",
                    "none before resumable answers",
                    f"1 + 1 per STREAM_FLUSH_MS (here {flushes}), none per token",
                    _verdict(first["writes_beside_stream"] == 1 + flushes)))
    for cost in r.get("flush_cost", []):
        out.append((f"14. CPU of one flush tick, {cost['answers']} answer(s) running",
                    f"{cost['cpu_us_per_flush']:.0f} µs = {cost['cpu_us_per_event']:.2f} µs "
                    f"per relayed event", "21 events per answer per 300 ms",
                    "small beside CPU per event", "n/a"))
    for x in rows[1:]:
        ratio = x["turn_db_ms_p50"] / first["turn_db_ms_p50"]
        out.append((f"5. DB time per turn, {x['prior_messages']:,} / 1 prior",
                    f"{ratio:.2f}x ({x['turn_db_ms_p50']:.2f} ms)",
                    f"{first['turn_db_ms_p50']:.2f} ms", "≤ 1.2x", _verdict(ratio <= 1.2)))
    return out


def _mem_rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    relay = _find(r["memory"], "relay")
    for door in ("grpc", "sse"):
        row = _find(r["memory"], door)
        if "skipped" in row:
            out.append((f"6. memory per open stream, {door}", "skipped: " + row["skipped"], "",
                        "≤ 50 KiB", "n/a"))
            continue
        out.append((f"6. memory per open stream, {door} ({row['streams']} open)",
                    f"{row['kib_per_stream']:.1f} KiB",
                    f"bare relay {_num(relay.get('kib_per_stream'), '{:.1f}')} KiB", "≤ 50 KiB",
                    _verdict(row["kib_per_stream"] <= 50 and not row["errors"])))
    return out


def _wa_rows(r: dict[str, Any]) -> list[Row]:
    wa = r["whatsapp"]
    if "skipped" in wa:
        return [("7. WhatsApp webhook ack p99, upstream 30 s", "skipped: " + wa["skipped"], "",
                 "≤ 50 ms", "n/a")]
    return [("7. WhatsApp webhook ack p99, upstream 30 s", f"{wa['ack_p99_ms']:.1f} ms",
             f"statuses {wa['statuses']}", "≤ 50 ms", _verdict(wa["ack_p99_ms"] <= 50))]


def table(r: dict[str, Any]) -> str:
    rows = [*_ttft_rows(r), *_turn_rows(r), *_cpu_rows(r), *_resume_rows(r), *_short_rows(r),
            *_ramp_rows(r),
            *_db_rows(r), *_peer_rows(r),
            *_mem_rows(r), *_wa_rows(r)]
    lines = ["| figure | chatms (vs baseline) | same-run baseline | goal | result |",
             "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


SCENARIOS = ("ttft", "turn_time", "cpu", "resumable", "short", "ramp")


def contention(r: dict[str, Any]) -> tuple[float, str]:
    """The worst load seen on core 0 from processes other than chatms, per scenario."""
    lines = ["| scenario | max foreign load on core 0 | max core 1 busy | max load generator "
             "| max fake upstream |", "|---|---|---|---|---|"]
    worst = 0.0
    for name in SCENARIOS:
        rows = [x for x in r.get(name, []) if "foreign_core0_pct" in x]
        if not rows:
            continue
        sut_rows = [x for x in rows if x["door"] not in ("direct", "relay")] or rows
        foreign = max(x["foreign_core0_pct"] for x in sut_rows)
        worst = max(worst, foreign)
        core1 = max(x["core_busy_pct"][1] for x in rows)
        loadgen = max(x.get("loadgen_pct", 0.0) for x in rows)
        fake = max(x.get("fake_upstream_pct", 0.0) for x in rows)
        lines.append(
            f"| {name} | {foreign:.0f} % | {core1:.0f} % | {loadgen:.0f} % | {fake:.0f} % |")
    return worst, "\n".join(lines)


def markdown(r: dict[str, Any]) -> str:
    m = r["meta"]
    head = (f"# chatms benchmark — {m['started']} ({'quick' if m['quick'] else 'full'} run, "
            f"{m['duration_s']:.0f} s, commit {m['commit']})\n\n"
            f"chatms on core 0; fake upstream, relay, PostgreSQL and load generator on core 1. "
            f"Python {m['python']}, uvloop in chatms: {m['uvloop']}."
            + (f" Load average (1, 5, 15 min) at the start: "
               f"{', '.join(f'{x:.1f}' for x in m['load_before'])}." if m.get("load_before")
               else "")
            + (f" Peer: {m['peer']}, on core 0 like chatms." if m.get("peer") else "")
            + "\n\n")
    worst, noise = contention(r)
    warning = (
        f"**Warning: up to {worst:.0f} % of core 0 went to other processes while chatms was "
        "measured (a shared machine); latency figures are inflated by it. Re-run on a quiet "
        "machine before trusting a MISS.**\n\n" if worst > 10 else ""
    )
    return (head + warning + table(r) + "\n\nMachine contention during the run (foreign = "
            "busy time on core 0 not spent by chatms, while chatms was under load):\n\n"
            + noise + "\n")


# Process and loop start-up frames: every complete stack has them; they say nothing.
ROOT_FRAMES = ("runpy>", "chatms/__main__.py", "entrypoints/cli.py", "uvloop/__init__.py",
               "asyncio/runners.py")


def profile_md(r: dict[str, Any]) -> str:
    p = r.get("profile", {})
    if "own" not in p:
        return f"(no profile this run: {p.get('skipped') or p.get('error')})\n"
    lines = [f"py-spy, {p['samples']} samples of chatms at 200 Hz over {p['seconds']} s "
             f"({p['load']}); shares of samples where chatms ran Python code.\n",
             "| own time | function (file) |", "|---|---|"]
    lines += [f"| {share:.1f} % | `{name}` |" for name, share in p["own"][:20]]
    lines += ["", "| own time | package |", "|---|---|"]
    lines += [f"| {share:.1f} % | {name} |" for name, share in p["own_by_package"][:12]]
    lines += ["", "| total (inclusive) | function (file) |", "|---|---|"]
    lines += [f"| {share:.1f} % | `{name}` |" for name, share in p["total"]
              if not any(root in name for root in ROOT_FRAMES)][:16]
    return "\n".join(lines) + "\n"


def short_profile_md(r: dict[str, Any]) -> str:
    """Where a short turn's CPU goes: shares per step, and the top functions, per door."""
    parts = []
    for door in ("grpc", "json"):
        p = r.get(f"profile_short_{door}", {})
        if "steps" not in p:
            continue
        parts.append(f"py-spy, {p['samples']} samples of chatms over {p['seconds']} s "
                     f"({p['load']}).\n")
        parts.append("| share of samples | step of a turn |\n|---|---|")
        parts += [f"| {share:.1f} % | {name} |" for name, share in p["steps"]]
        parts.append("\n| own time | function (file) |\n|---|---|")
        parts += [f"| {share:.1f} % | `{name}` |" for name, share in p["own"][:12]]
        parts.append("")
    return "\n".join(parts) + "\n" if parts else "(no short-turn profile this run)\n"


def _splice(doc: Path, tag: str, body: str) -> None:
    """Replace what lies between `<!-- tag:start -->` and `<!-- tag:end -->` in `doc`."""
    if not doc.exists():
        return
    text = doc.read_text()
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        doc.write_text(head + start + "\n" + body + rest[rest.index(end):])


def write(r: dict[str, Any], out: Path, doc: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    (out / "latest.md").write_text(markdown(r))
    plot(r, out)
    if doc is not None:
        _splice(doc, "results", markdown(r).split("\n", 1)[1].lstrip("\n").replace(
            "chatms on core 0", f"Run of {r['meta']['started']}: chatms on core 0", 1))
        _splice(doc, "profile", profile_md(r))
        _splice(doc, "short-profile", short_profile_md(r))


def plot(r: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [x for x in r["ramp"] if "skipped" not in x]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for door, style in (("direct", "k--"), ("grpc", "b-o"), ("sse", "g-s")):
        pts = sorted((x["concurrency"], x) for x in rows if x["door"] == door)
        if not pts:
            continue
        xs = [c for c, _ in pts]
        left.plot(xs, [x["ttft_p50_ms"] for _, x in pts], style, label=f"{door} p50")
        left.plot(xs, [x["ttft_p99_ms"] for _, x in pts], style, alpha=0.4, label=f"{door} p99")
        right.plot(xs, [x["gap_p99_ms"] for _, x in pts], style, label=f"{door} p99 gap")
    left.set(xlabel="concurrent streams (70 events/s each)", ylabel="time to first message, ms",
             title="TTFT vs concurrency (upstream TTFT 100 ms)")
    right.set(xlabel="concurrent streams (70 events/s each)", ylabel="ms",
              title="p99 gap between messages (upstream gap 14.3 ms)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency_vs_concurrency.png", dpi=100)
    plt.close(fig)
