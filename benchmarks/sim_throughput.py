"""How many plain and streamed chat requests/s gatewaysim serves per core, loaded by Locust's FastHttpUser.

The simulator runs with every latency and capacity limit of the model removed (no TTFT, no jitter, an
almost infinite decode rate, huge slot and queue counts, a fixed answer length), so only CPU limits
throughput. The simulator is pinned to CPU 0 and Locust to CPU 1 (os.sched_setaffinity).
For each mode a fresh simulator is started, Locust runs headless for --duration seconds, and the CPU
time of both processes and of both cores is sampled at every whole wall-clock second. Requests/s and CPU
are taken over a steady window that skips the first --warmup seconds after the first request and the
last second. A side "ran out of CPU" when its core was at least 90% busy; the core's busy time counts
other processes too, since a core shared with other work starves the side pinned to it.

Usage:
    python benchmarks/sim_throughput.py [--duration 12] [--users 20] [--warmup 3] [--max-tokens 32]
                                        [--quiet-wait 10] [--per-second] [--no-pin]
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

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    LOCUST_CPU,
    SERVER_CPU,
    busy_seconds,
    check_run_args,
    cpu_seconds,
    non_negative_float,
    non_negative_int,
    positive_int,
    run_sampled,
    settle,
    start_sim,
)

from ttbench.simproc import SimProcess  # noqa: E402

LOCUSTFILE = Path(__file__).resolve().parent / "_sim_load_locustfile.py"
MODEL = "gpt-4o-mini"
SIM_CPU = SERVER_CPU
FULL_PCT = 90.0  # a core this busy is out of CPU
OTHER_LOAD_WARN_PCT = 10.0  # other work on a pinned core above this disturbs the figures
MODES = {"plain": "PlainChat", "stream": "StreamChat"}
SIDES = ("simulator", "Locust")


def sim_config_yaml(output_tokens: int) -> str:
    """A simulator config with the model's latency and capacity limits removed."""
    return (
        "# written by benchmarks/sim_throughput.py: only the simulator's CPU may limit throughput\n"
        "defaults:\n"
        "  chat:\n"
        "    base_ms: 0\n"
        "    prefill_ms_per_token: 0\n"
        "    ttft_jitter_ms: 0\n"
        "    decode_tokens_per_s: 1000000000\n"
        "    slowdown_at_full: 0\n"
        "    slots: 1000000\n"
        "    queue: 1000000\n"
        f"    output_tokens: {{min: {output_tokens}, max: {output_tokens}}}\n"
    )


@dataclass
class Sample:
    """Cumulative CPU seconds read at one whole wall-clock second."""

    second: int
    own: dict[str, float]  # side -> CPU seconds of its process
    core: dict[str, float]  # side -> busy seconds of the core it is pinned to
    sim_rss: int = 0  # bytes


@dataclass
class Second:
    """One second of a run: requests finished and CPU % of each side and of its core."""

    t: int  # seconds after the second of the first request
    requests: int
    own: dict[str, float]
    core: dict[str, float]


@dataclass
class RunResult:
    """The figures of one Locust run against one simulator."""

    mode: str
    pinned: bool
    warmup: int = 0  # the window starts this many seconds after the first request's second
    window_s: int = 0
    requests: int = 0
    own_s: dict[str, float] = field(default_factory=dict)  # CPU seconds in the window
    core_s: dict[str, float] = field(default_factory=dict)  # core busy seconds in the window
    seconds: list[Second] = field(default_factory=list)
    failures: int = 0
    p50_ms: float = math.nan
    locust_total: int = 0
    sim_served: int | None = None
    sim_rss_mb: tuple[float, float] = (math.nan, math.nan)  # at the first and the last sample
    notes: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Requests/s in the steady window."""
        return self.requests / self.window_s if self.window_s else math.nan

    def pct(self, side: str) -> float:
        """A side's own CPU in % of one core over the window."""
        return 100 * self.own_s.get(side, math.nan) / self.window_s if self.window_s else math.nan

    def core_pct(self, side: str) -> float:
        """How busy the side's core was over the window, in %, all work counted (own CPU when unpinned)."""
        if not self.pinned:
            return self.pct(side)
        return 100 * self.core_s.get(side, math.nan) / self.window_s if self.window_s else math.nan

    def other_pct(self, side: str) -> float:
        """Work other than the side's own process on its core, in %."""
        return max(0.0, self.core_pct(side) - self.pct(side)) if self.pinned else math.nan

    def us_per_request(self, side: str) -> float:
        """A side's CPU µs per request over the window."""
        return 1e6 * self.own_s.get(side, math.nan) / self.requests if self.requests else math.nan

    def peak(self, side: str) -> float:
        """A side's highest own CPU % in one second of the steady window."""
        window = range(self.warmup, self.warmup + self.window_s)
        return max((s.own[side] for s in self.seconds if s.t in window), default=math.nan)

    def first_full(self, side: str) -> int | None:
        """The first second (after the first request) in which the side's core was at least FULL_PCT busy."""
        for s in self.seconds:
            if (s.core[side] if self.pinned else s.own[side]) >= FULL_PCT:
                return s.t
        return None

    def bottleneck(self) -> str:
        """Which side ran out of CPU first, in words."""
        full = [side for side in SIDES if self.core_pct(side) >= FULL_PCT]
        if not full:
            return "neither core full"
        if len(full) == 2:
            firsts = {side: self.first_full(side) for side in SIDES}
            full.sort(key=lambda side: (firsts[side] if firsts[side] is not None else 10**9, -self.pct(side)))
        side = full[0]
        if self.pinned and self.other_pct(side) > OTHER_LOAD_WARN_PCT:
            return f"{side} (core shared)"
        return side

    def explain(self) -> str:
        """The verdict with the CPU figures behind it."""
        parts = []
        for side in SIDES:
            if self.pinned:
                parts.append(f"{side} core {self.core_pct(side):.0f}% busy ({side} {self.pct(side):.0f}% + "
                             f"other {self.other_pct(side):.0f}%)")
            else:
                parts.append(f"{side} {self.pct(side):.0f}% of a core")
        verdict = self.bottleneck()
        text = f"{self.mode}: bottleneck = {verdict}: " + "; ".join(parts)
        if verdict == "neither core full":
            text += ". Neither side is CPU-bound: add --users, or look for other work on the cores."
        firsts = [f"{side} at +{t} s" for side in SIDES if (t := self.first_full(side)) is not None]
        if firsts:
            text += f". First second >= {FULL_PCT:.0f}% busy: " + ", ".join(firsts)
        return text


def sanity_check(sim: SimProcess, max_tokens: int) -> str:
    """One plain and one streamed call: check the fixed answer length before loading."""
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    with httpx.Client(base_url=sim.url, headers=headers, timeout=10) as client:
        plain = client.post("/v1/chat/completions", json=body)
        plain.raise_for_status()
        tokens = plain.json()["usage"]["completion_tokens"]
        streamed = client.post("/v1/chat/completions",
                               json={**body, "stream": True, "stream_options": {"include_usage": True}})
        streamed.raise_for_status()
        events = [ln for ln in streamed.text.split("\n") if ln.startswith("data:")]
    if tokens != max_tokens or len(events) != max_tokens + 4 or events[-1] != "data: [DONE]":
        raise RuntimeError(f"unexpected answer: {tokens} tokens, {len(events)} SSE events")
    return f"{tokens} completion tokens plain, {len(events)} SSE events streamed"


def percentile(hist: dict[int, int], q: float) -> float:
    """A percentile of Locust's rounded response-time histogram (ms)."""
    total = sum(hist.values())
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= q * total:
            return float(value)
    return math.nan


def run_locust(mode: str, sim: SimProcess, workdir: Path, args: argparse.Namespace,
               result: RunResult) -> tuple[list[Sample], dict]:
    """Run Locust against the simulator, sampling CPU every second; returns the samples and its stats entry."""
    json_base = workdir / f"locust_{mode}"
    log_path = workdir / f"locust_{mode}.log"
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(args.users),
           "-r", str(args.users), "-t", f"{args.duration}s", "-H", sim.url, "--json-file", str(json_base),
           "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "0", MODES[mode]]
    env = dict(os.environ, SIM_API_KEY=sim.api_key, SIM_MODEL=MODEL, SIM_MAX_TOKENS=str(args.max_tokens))
    procs_sim = psutil.Process(sim.proc.pid)
    cores = {"simulator": SIM_CPU, "Locust": LOCUST_CPU}

    def sample(second: int, locust: psutil.Process) -> Sample:
        procs = {"simulator": procs_sim, "Locust": locust}
        return Sample(second, {k: cpu_seconds(p) for k, p in procs.items()},
                      {k: busy_seconds(c) for k, c in cores.items()}, procs_sim.memory_info().rss)

    samples, log_text, killed = run_sampled(cmd, env, workdir, None if args.no_pin else LOCUST_CPU, log_path,
                                            args.duration + 30, sample)
    if killed:
        result.notes.append("Locust did not stop in time: killed")
    try:
        stats = json.loads(Path(f"{json_base}.json").read_text())
    except (OSError, ValueError):
        stats = []
    entry = next((e for e in stats if e["name"].startswith("chat")), None)
    if entry is None:
        raise RuntimeError(f"Locust ({mode}) recorded no requests; its output:\n{log_text[-4000:]}")
    if entry["num_failures"]:
        result.notes.append("Locust failures; end of its summary:\n" + log_text[-3000:])
    return samples, entry


def analyse(result: RunResult, samples: list[Sample], entry: dict, warmup: int) -> None:
    """Fill the window figures and the per-second series from the samples and Locust's stats entry."""
    per_sec = {int(k): v for k, v in entry["num_reqs_per_sec"].items()}
    result.locust_total = entry["num_requests"]
    result.failures = entry["num_failures"]
    result.sim_rss_mb = (samples[0].sim_rss / 2**20, samples[-1].sim_rss / 2**20)
    result.p50_ms = percentile({int(k): v for k, v in entry["response_times"].items()}, 0.5)
    first, last = min(per_sec), max(per_sec)
    at = {s.second: s for s in samples}
    for a, b in zip(samples, samples[1:], strict=False):
        sec = a.second  # the second [a, b) that just ended
        if first <= sec <= last and b.second == sec + 1:
            result.seconds.append(Second(sec - first, per_sec.get(sec, 0),
                                         {k: 100 * (b.own[k] - a.own[k]) for k in SIDES},
                                         {k: 100 * (b.core[k] - a.core[k]) for k in SIDES}))
    start, end = first + warmup, last - 1  # steady window: seconds [start, end)
    if start not in at or end not in at or end <= start:
        result.notes.append(f"no steady window ({len(samples)} samples, requests from {first} to {last}): "
                            "lengthen --duration")
        return
    result.warmup = warmup
    result.window_s = end - start
    result.requests = sum(per_sec.get(s, 0) for s in range(start, end))
    result.own_s = {k: at[end].own[k] - at[start].own[k] for k in SIDES}
    result.core_s = {k: at[end].core[k] - at[start].core[k] for k in SIDES}


def run_mode(mode: str, cfg: Path, workdir: Path, args: argparse.Namespace) -> RunResult:
    """Start a fresh simulator, load it with one Locust user class, and measure both sides."""
    result = RunResult(mode=mode, pinned=not args.no_pin)
    sim = start_sim(cfg, None if args.no_pin else SIM_CPU, result.notes)
    try:
        sanity_calls = 0
        if mode == "plain":
            result.notes.append("sanity check: " + sanity_check(sim, args.max_tokens))
            sanity_calls = 2
        samples, entry = run_locust(mode, sim, workdir, args, result)
        result.sim_served = sim.admin("/_sim/stats").json()["served"].get("chat", 0) - sanity_calls
    finally:
        sim.stop()
        if "Traceback" in sim.stderr or "internal error" in sim.stderr:
            result.notes.append("simulator stderr (end):\n" + sim.stderr[-4000:])
    analyse(result, samples, entry, args.warmup)
    return result


def report(results: dict[str, RunResult], args: argparse.Namespace) -> str:
    """The side-by-side table with streamed/plain ratios, and the bottleneck verdicts."""
    p, s = results["plain"], results["stream"]

    def ratio(a: float, b: float) -> str:
        return f"{b / a:.2f}x" if a and not (math.isnan(a) or math.isnan(b)) else ""

    def row(label: str, fmt: str, get, with_ratio: bool = False) -> tuple[str, str, str, str]:  # noqa: ANN001
        a, b = get(p), get(s)
        return label, format(a, fmt), format(b, fmt), ratio(a, b) if with_ratio else ""

    rows = [
        row("steady window (s)", "d", lambda r: r.window_s),
        row("requests in window", ",d", lambda r: r.requests),
        row("requests/s", ",.0f", lambda r: r.rps, True),
        row("median latency (ms)", ".0f", lambda r: r.p50_ms, True),
        row("simulator CPU (% of a core)", ".1f", lambda r: r.pct("simulator"), True),
        row("simulator CPU/request (µs)", ",.0f", lambda r: r.us_per_request("simulator"), True),
        row("Locust CPU (% of a core)", ".1f", lambda r: r.pct("Locust"), True),
        row("Locust CPU/request (µs)", ",.0f", lambda r: r.us_per_request("Locust"), True),
        row("peak 1-s simulator CPU (%)", ".0f", lambda r: r.peak("simulator")),
        row("peak 1-s Locust CPU (%)", ".0f", lambda r: r.peak("Locust")),
    ]
    if not args.no_pin:
        rows += [
            row("other work on core 0 (%)", ".0f", lambda r: r.other_pct("simulator")),
            row("other work on core 1 (%)", ".0f", lambda r: r.other_pct("Locust")),
        ]
    rows += [
        ("simulator RSS first / last (MB)", f"{p.sim_rss_mb[0]:.0f} / {p.sim_rss_mb[1]:.0f}",
         f"{s.sim_rss_mb[0]:.0f} / {s.sim_rss_mb[1]:.0f}", ""),
        row("failures (whole run)", "d", lambda r: r.failures),
        ("requests Locust / sim served", f"{p.locust_total} / {p.sim_served}", f"{s.locust_total} / {s.sim_served}",
         ""),
        ("bottleneck", p.bottleneck(), s.bottleneck(), ""),
    ]
    head = ("", "plain chat", "streamed chat", "stream/plain")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                               strict=True)))

    out = [
        f"gatewaysim throughput: {args.users} FastHttpUsers, {args.duration} s per mode, model {MODEL}, "
        f"{args.max_tokens} output tokens, first {args.warmup} s and last 1 s skipped",
        f"simulator pinned to CPU {SIM_CPU}, Locust to CPU {LOCUST_CPU}" if not args.no_pin else "no CPU pinning",
        "",
        line(head),
        "  ".join("-" * w for w in widths),
        *(line(r) for r in rows),
        "",
        p.explain(),
        s.explain(),
    ]
    for res in (p, s):
        worst = max(res.other_pct("simulator"), res.other_pct("Locust"))
        if worst > OTHER_LOAD_WARN_PCT:
            out.append(f"warning ({res.mode}): other work used {worst:.0f}% of a pinned core during the window; "
                       "the figures are disturbed, run again on a quiet machine")
    if args.per_second:
        for res in (p, s):
            out.append(f"{res.mode} per second: t, requests, simulator %, core 0 busy %, Locust %, core 1 busy %")
            out.extend(f"  +{x.t:2d} s {x.requests:6d}  {x.own['simulator']:5.1f} {x.core['simulator']:5.1f}  "
                       f"{x.own['Locust']:5.1f} {x.core['Locust']:5.1f}" for x in res.seconds)
    for res in (p, s):
        out.extend(f"[{res.mode}] {note}" for note in res.notes)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run both modes and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=positive_int, default=12,
                        help="Locust run time per mode, seconds (default 12)")
    parser.add_argument("--users", type=positive_int, default=20, help="concurrent Locust users (default 20)")
    parser.add_argument("--warmup", type=non_negative_int, default=3,
                        help="seconds skipped after the first request (default 3)")
    parser.add_argument("--max-tokens", type=positive_int, default=32, help="fixed answer length (default 32)")
    parser.add_argument("--quiet-wait", type=non_negative_float, default=10,
                        help="before each mode, wait up to this many seconds for idle cores (default 10)")
    parser.add_argument("--per-second", action="store_true", help="also print the per-second series")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the two processes to CPUs 0 and 1")
    args = parser.parse_args(argv)
    check_run_args(parser, args)
    workdir = Path(tempfile.mkdtemp(prefix="sim_throughput_"))
    try:
        cfg = workdir / "sim.yaml"
        cfg.write_text(sim_config_yaml(args.max_tokens))
        results = {}
        for mode in MODES:
            settle((SIM_CPU, LOCUST_CPU), args.quiet_wait)
            print(f"running {mode} chat for {args.duration} s ...", file=sys.stderr, flush=True)
            results[mode] = run_mode(mode, cfg, workdir, args)
        print(report(results, args), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
