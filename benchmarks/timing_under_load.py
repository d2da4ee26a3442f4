"""How late ttbench's users see each streamed chunk under load: client receive time minus simulator write time.

For each concurrency level (--users, default 10 50 200) a fresh simulator is started (pinned to CPU 0)
with a config that spaces tokens 50 ms apart (decode 20 tokens/s, no slowdown, no jitter, TTFT 50 ms,
20 output tokens, slots and queue far above the load), and ttbench's users run headless (pinned to CPU 1)
for --duration seconds with a scenario of streamed chat, Messages and Gemini (half SSE, half streamed JSON
array), no think time (--think-max), no retries. Each record is joined by request id to the simulator's truth; the
record's content chunk times (t_start + decoded offset) are zipped with the truth's content-frame write
times (frames with tokens > 0), both epoch seconds on the same clock: error = client - server.

Only chunks the simulator wrote inside a steady window count: from --warmup seconds after the first
request to the end of the run's duration (the drain after it is lighter). Locust's and the simulator's
CPU are sampled at every whole second over the same window.

Usage:
    python benchmarks/timing_under_load.py [--users 10 50 200] [--duration 12] [--warmup 3] [--no-pin]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    LOCUST_CPU,
    ROOT,
    SERVER_CPU,
    busy_seconds,
    check_run_args,
    cpu_seconds,
    non_negative_float,
    non_negative_int,
    positive_int,
    run_sampled,
    start_sim,
)

from locustfiles.records import decode_chunks  # noqa: E402

GATEWAY = ROOT / "locustfiles" / "gateway.py"
SIM_CPU = SERVER_CPU
OUTPUT_TOKENS = 20
DECODE_TOKENS_PER_S = 20
BASE_MS = 50
FORMATS = ("chat sse", "messages sse", "gemini sse", "gemini json_array")


def sim_config_yaml() -> str:
    """A simulator config with tokens 50 ms apart and no capacity limit in reach."""
    return (
        "# written by benchmarks/timing_under_load.py: tokens 50 ms apart, no queueing\n"
        "defaults:\n"
        "  chat:\n"
        f"    base_ms: {BASE_MS}\n"
        "    prefill_ms_per_token: 0\n"
        "    ttft_jitter_ms: 0\n"
        f"    decode_tokens_per_s: {DECODE_TOKENS_PER_S}\n"
        "    slowdown_at_full: 0\n"
        "    slots: 100000\n"
        "    queue: 100000\n"
        f"    output_tokens: {{min: {OUTPUT_TOKENS}, max: {OUTPUT_TOKENS}}}\n"
    )


def scenario_yaml(url: str, users: int, duration: int, think_max_s: float = 0.0) -> str:
    """Streamed chat, Messages and Gemini (SSE and JSON array), closed loop, think time 0..think_max_s."""
    return (
        "# written by benchmarks/timing_under_load.py\n"
        "name: timing-under-load\n"
        f"target: {url}\n"
        "seed: 1\n"
        f"users: {users}\n"
        f"duration: {duration}s\n"
        "stop_timeout: 10s\n"
        f"think_time: {{min_s: 0, max_s: {think_max_s}}}\n"
        "retry: {max_attempts: 1, budget: 0}\n"
        f"defaults: {{output_tokens: {OUTPUT_TOKENS}, prompt_tokens: 24}}\n"
        "mix:\n"
        "  - {endpoint: chat, weight: 1, stream: 1.0, models: [gpt-4o-mini]}\n"
        "  - {endpoint: messages, weight: 1, stream: 1.0, models: [claude-3-5-sonnet]}\n"
        "  - {endpoint: gemini, weight: 1, stream: 1.0, json_array: 0.5, models: [gemini-1.5-pro]}\n"
    )


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of sorted values; NaN when empty."""
    if not values:
        return math.nan
    k = (len(values) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


@dataclass
class Level:
    """The figures of one concurrency level."""

    users: int
    streams: int = 0
    chunks: int = 0
    window_s: float = 0.0
    errors_ms: list[float] = field(default_factory=list)
    by_format: dict[str, list[float]] = field(default_factory=dict)
    locust_pct: float = math.nan
    sim_pct: float = math.nan
    locust_core_pct: float = math.nan  # the Locust core's busy time, all processes
    records: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    unjoined: int = 0
    mismatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def stream_format(rec: dict[str, Any]) -> str:
    """The record's endpoint and stream format, e.g. `gemini json_array`."""
    return f"{rec['endpoint']} {rec.get('stream_format') or 'sse'}"


def join(level: Level, records: list[dict[str, Any]], truth: list[dict[str, Any]], lo: float, hi: float) -> None:
    """Zip each record's content chunk times with the truth's content-frame write times, inside [lo, hi)."""
    by_id = {t["request_id"]: t for t in truth if t.get("request_id")}
    for rec in records:
        level.records += 1
        if not rec.get("ok"):
            kind = str(rec.get("error_kind"))
            level.failed[kind] = level.failed.get(kind, 0) + 1
            continue
        if not rec.get("stream"):
            continue
        entry = by_id.get(rec.get("request_id"))
        if entry is None:
            level.unjoined += 1
            continue
        server = [t for t, n in zip(entry["chunk_times"], entry["chunk_tokens"], strict=True) if n > 0]
        client = [rec["t_start"] + ms / 1000.0 for ms in decode_chunks(rec.get("chunks"))]
        if len(client) != len(server):
            level.mismatched.append(f"{rec['request_id']} ({stream_format(rec)}): client {len(client)} content "
                                    f"chunks, truth {len(server)} content frames")
            continue
        errs = [1000.0 * (c - s) for c, s in zip(client, server, strict=True) if lo <= s < hi]
        if not errs:
            continue
        level.streams += 1
        level.chunks += len(errs)
        level.errors_ms.extend(errs)
        level.by_format.setdefault(stream_format(rec), []).extend(errs)


def run_level(users: int, cfg: Path, workdir: Path, args: argparse.Namespace) -> Level:
    """Start a simulator, run ttbench's users against it, and measure the chunk timing error."""
    level = Level(users=users)
    ldir = workdir / f"u{users}"
    ldir.mkdir()
    sim = start_sim(cfg, None if args.no_pin else SIM_CPU, level.notes)
    try:
        scenario = ldir / "scenario.yaml"
        scenario.write_text(scenario_yaml(sim.url, users, args.duration, args.think_max))
        out = ldir / "out"
        cmd = [sys.executable, "-m", "locust", "-f", str(GATEWAY), "--headless", "-u", str(users), "-r", str(users),
               "--scenario", str(scenario), "--ttbench-out", str(out), "-H", sim.url, "--only-summary",
               "--ttbench-duration", str(args.duration), "--run-id", f"timing-u{users}", "--loglevel", "WARNING"]
        env = dict(os.environ, TT_API_KEY=sim.api_key, TTBENCH_TARGET_IS_SIM="1")
        sp = psutil.Process(sim.proc.pid)

        def sample(second: int, lp: psutil.Process) -> tuple[int, float, float, float]:
            """second, Locust CPU s, simulator CPU s, Locust core busy s."""
            return second, cpu_seconds(lp), cpu_seconds(sp), busy_seconds(LOCUST_CPU)

        samples, log_text, killed = run_sampled(cmd, env, ldir, None if args.no_pin else LOCUST_CPU,
                                                ldir / "locust.log", args.duration + 40, sample)
        if killed:
            level.notes.append("Locust did not stop in time: killed")
        if "Traceback" in log_text:
            level.notes.append("traceback in Locust's output:\n" + log_text[-3000:])
        truth = sim.truth()
        if "Traceback" in sim.stderr:
            level.notes.append("simulator stderr (end):\n" + sim.stderr[-3000:])
    finally:
        sim.stop()
    path = out / "records.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if not records:
        level.notes.append("no records; Locust's output:\n" + log_text[-3000:])
        return level
    t_first = min(r["t_start"] for r in records)
    lo, hi = t_first + args.warmup, t_first + args.duration
    level.window_s = hi - lo
    join(level, records, truth, lo, hi)
    level.errors_ms.sort()
    for v in level.by_format.values():
        v.sort()
    at = {s[0]: s for s in samples}
    a, b = math.ceil(lo), math.floor(hi)
    if a in at and b in at and b > a:
        level.locust_pct = 100 * (at[b][1] - at[a][1]) / (b - a)
        level.sim_pct = 100 * (at[b][2] - at[a][2]) / (b - a)
        level.locust_core_pct = 100 * (at[b][3] - at[a][3]) / (b - a)
    else:
        level.notes.append("no CPU samples over the window")
    return level


def report(levels: list[Level], args: argparse.Namespace) -> str:
    """One row per concurrency level, then the per-format breakdown and any anomalies."""
    head = ("users", "streams", "chunks", "chunks/s", "p50 ms", "p99 ms", "max ms", "min ms", "Locust CPU %",
            "sim CPU %")
    rows = []
    for lv in levels:
        e = lv.errors_ms
        rows.append((str(lv.users), f"{lv.streams:,}", f"{lv.chunks:,}",
                     f"{lv.chunks / lv.window_s:,.0f}" if lv.window_s else "-",
                     f"{percentile(e, 50):.2f}", f"{percentile(e, 99):.2f}", f"{e[-1]:.2f}" if e else "nan",
                     f"{e[0]:.2f}" if e else "nan", f"{lv.locust_pct:.1f}", f"{lv.sim_pct:.1f}"))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))

    out = [
        f"chunk timing error under load (client receive - simulator write, epoch clocks, same host): "
        f"{args.duration} s per level, window from +{args.warmup} s after the first request to the end of the run",
        f"simulator: TTFT {BASE_MS} ms, {DECODE_TOKENS_PER_S} tokens/s (a chunk every "
        f"{1000 // DECODE_TOKENS_PER_S} ms), {OUTPUT_TOKENS} tokens; mix: chat, messages, gemini (sse / json_array) "
        "streams, " + (f"think time 0-{args.think_max:g} s; " if args.think_max else "no think time; ") + (f"simulator pinned to CPU {SIM_CPU}, Locust to CPU {LOCUST_CPU}"
                                     if not args.no_pin else "no CPU pinning"),
        "",
        line(head),
        "  ".join("-" * w for w in widths),
        *(line(r) for r in rows),
        "",
        "by stream format (p50 / p99 / max ms, chunks):",
    ]
    for lv in levels:
        parts = []
        for fmt in FORMATS:
            v = lv.by_format.get(fmt, [])
            parts.append(f"{fmt} {percentile(v, 50):.2f} / {percentile(v, 99):.2f} / "
                         f"{(v[-1] if v else math.nan):.2f} ({len(v):,})")
        out.append(f"  {lv.users:>4} users: " + "; ".join(parts))
    for lv in levels:
        tag = f"[{lv.users} users]"
        failed = f", failed: {lv.failed}" if lv.failed else ""
        out.append(f"{tag} {lv.records:,} records{failed}, {lv.unjoined} streams without a truth entry, "
                   f"{len(lv.mismatched)} with a chunk count unlike the truth's")
        out.extend(f"{tag}   {m}" for m in lv.mismatched[:5])
        other = lv.locust_core_pct - lv.locust_pct
        if not args.no_pin and other > 10:
            out.append(f"{tag} warning: other work used {other:.0f}% of the Locust core during the window: "
                       "its tail figures are disturbed")
        out.extend(f"{tag} {note}" for note in lv.notes)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run every concurrency level and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--users", type=positive_int, nargs="+", default=[10, 50, 200],
                        help="concurrency levels (default 10 50 200)")
    parser.add_argument("--duration", type=positive_int, default=12, help="run time per level, seconds (default 12)")
    parser.add_argument("--warmup", type=non_negative_int, default=3,
                        help="seconds skipped after the first request (default 3)")
    parser.add_argument("--think-max", type=non_negative_float, default=0.0,
                        help="think time drawn from 0..this many seconds between calls (default 0)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the simulator and Locust to CPUs 0 and 1")
    args = parser.parse_args(argv)
    check_run_args(parser, args)
    workdir = Path(tempfile.mkdtemp(prefix="timing_under_load_"))
    try:
        cfg = workdir / "sim.yaml"
        cfg.write_text(sim_config_yaml())
        levels = []
        for users in args.users:
            print(f"running {users} users for {args.duration} s ...", file=sys.stderr, flush=True)
            levels.append(run_level(users, cfg, workdir, args))
        print(report(levels, args), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
