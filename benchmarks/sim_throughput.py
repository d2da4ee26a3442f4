"""How many plain and streamed chat requests/s gatewaysim serves per core, loaded by Locust's FastHttpUser.

The simulator runs with every latency and capacity limit of the model removed (no TTFT, no jitter, an
almost infinite decode rate, huge slot and queue counts, a fixed 32-token answer), so only CPU limits
throughput. The simulator is pinned to CPU 0 and Locust to CPU 1 (with taskset when it is installed).
For each mode a fresh simulator is started, Locust runs headless for --duration seconds, and the CPU
time of both processes is sampled once per wall-clock second. Requests/s and CPU are taken over a steady
window that skips the first --warmup seconds after the first request and the last second.

Usage:
    python benchmarks/sim_throughput.py [--duration 12] [--users 20] [--warmup 3] [--no-pin]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ttbench.simproc import SimProcess  # noqa: E402

LOCUSTFILE = Path(__file__).resolve().parent / "_sim_load_locustfile.py"
MODEL = "gpt-4o-mini"
SIM_CPU = 0
LOCUST_CPU = 1
SATURATED_PCT = 90.0

MODES = {"plain": "PlainChat", "stream": "StreamChat"}


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
class RunResult:
    """The figures of one Locust run against one simulator."""

    mode: str
    window_s: int = 0
    requests: int = 0
    failures: int = 0
    sim_cpu_s: float = 0.0
    locust_cpu_s: float = 0.0
    p50_ms: float = math.nan
    sim_first_sat_s: float | None = None
    locust_first_sat_s: float | None = None
    sim_peak_pct: float = 0.0
    locust_peak_pct: float = 0.0
    sim_served: int | None = None
    locust_total: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Requests/s in the steady window."""
        return self.requests / self.window_s if self.window_s else math.nan

    @property
    def sim_pct(self) -> float:
        """The simulator's CPU, in % of one core, in the steady window."""
        return 100 * self.sim_cpu_s / self.window_s if self.window_s else math.nan

    @property
    def locust_pct(self) -> float:
        """Locust's CPU, in % of one core, in the steady window."""
        return 100 * self.locust_cpu_s / self.window_s if self.window_s else math.nan

    @property
    def sim_us_per_req(self) -> float:
        """Simulator CPU µs per request."""
        return 1e6 * self.sim_cpu_s / self.requests if self.requests else math.nan

    @property
    def locust_us_per_req(self) -> float:
        """Locust CPU µs per request."""
        return 1e6 * self.locust_cpu_s / self.requests if self.requests else math.nan

    def bottleneck(self) -> str:
        """Which side ran out of CPU first, in words."""
        sim_sat = self.sim_pct >= SATURATED_PCT
        loc_sat = self.locust_pct >= SATURATED_PCT
        if sim_sat and not loc_sat:
            return "simulator"
        if loc_sat and not sim_sat:
            return "locust"
        if sim_sat and loc_sat:
            s = self.sim_first_sat_s if self.sim_first_sat_s is not None else math.inf
            lo = self.locust_first_sat_s if self.locust_first_sat_s is not None else math.inf
            return "simulator (both saturated)" if s <= lo else "locust (both saturated)"
        return "neither (both below 90% of a core)"


def cpu_seconds(proc: psutil.Process) -> float:
    """User plus system CPU seconds of a process (all its threads)."""
    t = proc.cpu_times()
    return t.user + t.system


def pin(pid: int, cpu: int) -> bool:
    """Pin every thread of a running process to one CPU; True when it worked."""
    if shutil.which("taskset"):
        done = subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], capture_output=True)
        return done.returncode == 0
    if hasattr(os, "sched_setaffinity"):
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), {cpu})
        return True
    return False


def pinned_cmd(cmd: list[str], cpu: int | None) -> list[str]:
    """The command prefixed with taskset when pinning is asked for and available."""
    if cpu is not None and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *cmd]
    return cmd


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
    return f"{tokens} completion tokens plain; {len(events)} SSE events streamed"


def sleep_to_next_second() -> float:
    """Sleep until just after the next whole wall-clock second; return that second."""
    now = time.time()
    target = math.floor(now) + 1
    time.sleep(target - now + 0.002)
    return float(target)


def first_saturated(series: list[tuple[int, float]], start: int) -> float | None:
    """Seconds after start when a per-second CPU % series first reached the saturation mark."""
    for second, pct in series:
        if second >= start and pct >= SATURATED_PCT:
            return float(second - start)
    return None


def run_mode(mode: str, cfg: Path, workdir: Path, args: argparse.Namespace) -> RunResult:
    """Start a fresh simulator, load it with one Locust user class, and measure both sides."""
    result = RunResult(mode=mode)
    sim = SimProcess(config=cfg, seed=0)
    locust: subprocess.Popen[bytes] | None = None
    try:
        if not args.no_pin and not pin(sim.proc.pid, SIM_CPU):
            result.notes.append("could not pin the simulator")
        sanity_calls = 0
        if mode == "plain":
            result.notes.append("sanity: " + sanity_check(sim, args.max_tokens))
            sanity_calls = 2
        json_base = workdir / f"locust_{mode}"
        log_path = workdir / f"locust_{mode}.log"
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(args.users),
               "-r", str(args.users), "-t", f"{args.duration}s", "-H", sim.url, "--json-file", str(json_base),
               "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "0", MODES[mode]]
        env = dict(os.environ, SIM_API_KEY=sim.api_key, SIM_MODEL=MODEL, SIM_MAX_TOKENS=str(args.max_tokens))
        with open(log_path, "wb") as log:
            locust = subprocess.Popen(pinned_cmd(cmd, None if args.no_pin else LOCUST_CPU), stdout=log,
                                      stderr=subprocess.STDOUT, env=env, cwd=workdir)
            sim_p, loc_p = psutil.Process(sim.proc.pid), psutil.Process(locust.pid)
            samples: list[tuple[float, float, float]] = []  # (wall second, sim cpu s, locust cpu s)
            deadline = time.monotonic() + args.duration + 30
            while locust.poll() is None and time.monotonic() < deadline:
                second = sleep_to_next_second()
                try:
                    samples.append((second, cpu_seconds(sim_p), cpu_seconds(loc_p)))
                except psutil.NoSuchProcess:
                    break
            if locust.poll() is None:
                result.notes.append("Locust did not stop in time; killed")
                locust.kill()
            locust.wait()
        stats = json.loads(Path(f"{json_base}.json").read_text())
        served = sim.admin("/_sim/stats").json()["served"]
        result.sim_served = served.get("chat", 0) - sanity_calls
    finally:
        if locust is not None and locust.poll() is None:
            locust.kill()
            locust.wait()
        sim.stop()
    if "Traceback" in sim.stderr or "internal error" in sim.stderr:
        result.notes.append("simulator stderr:\n" + sim.stderr[-4000:])
    entry = next((e for e in stats if e["name"].startswith("chat")), None)
    if entry is None:
        result.notes.append("Locust recorded no requests; its log:\n" + log_path.read_text()[-4000:])
        return result
    per_sec = {int(k): v for k, v in entry["num_reqs_per_sec"].items()}
    result.locust_total = entry["num_requests"]
    result.failures = entry["num_failures"]
    if result.failures:
        result.notes.append("Locust failures; its summary:\n" + log_path.read_text()[-3000:])
    # per-second CPU series, indexed by the second that just ended
    sim_series = [(int(b[0]) - 1, 100 * (b[1] - a[1])) for a, b in zip(samples, samples[1:], strict=False)]
    loc_series = [(int(b[0]) - 1, 100 * (b[2] - a[2])) for a, b in zip(samples, samples[1:], strict=False)]
    first_req = min(per_sec) if per_sec else int(samples[0][0])
    last_req = max(per_sec) if per_sec else int(samples[-1][0])
    start, end = first_req + args.warmup, last_req - 1  # steady window: seconds [start, end)
    at = {int(s[0]): s for s in samples}
    if start not in at or end not in at or end <= start:
        result.notes.append(f"no steady window (first request {first_req}, last {last_req}, "
                            f"{len(samples)} samples): lengthen --duration")
        return result
    result.window_s = end - start
    result.requests = sum(per_sec.get(s, 0) for s in range(start, end))
    result.sim_cpu_s = at[end][1] - at[start][1]
    result.locust_cpu_s = at[end][2] - at[start][2]
    result.sim_first_sat_s = first_saturated(sim_series, first_req)
    result.locust_first_sat_s = first_saturated(loc_series, first_req)
    steady = range(start, end)
    result.sim_peak_pct = max((p for s, p in sim_series if s in steady), default=0.0)
    result.locust_peak_pct = max((p for s, p in loc_series if s in steady), default=0.0)
    times = {int(k): v for k, v in entry["response_times"].items()}
    result.p50_ms = percentile(times, 0.5)
    return result


def percentile(hist: dict[int, int], q: float) -> float:
    """A percentile of Locust's rounded response-time histogram (ms)."""
    total = sum(hist.values())
    if not total:
        return math.nan
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= q * total:
            return float(value)
    return float(max(hist))


def fmt_sat(first: float | None) -> str:
    """When a side first reached the saturation mark, in words."""
    return "never" if first is None else f"+{first:.0f} s"


def report(results: dict[str, RunResult], args: argparse.Namespace, pinned: bool) -> str:
    """The side-by-side table with streamed/plain ratios, and the bottleneck verdict."""
    p, s = results["plain"], results["stream"]

    def ratio(a: float, b: float) -> str:
        return f"{b / a:.2f}x" if a and not (math.isnan(a) or math.isnan(b)) else "-"

    rows = [
        ("steady window (s)", f"{p.window_s}", f"{s.window_s}", ""),
        ("requests in window", f"{p.requests}", f"{s.requests}", ""),
        ("requests/s", f"{p.rps:,.0f}", f"{s.rps:,.0f}", ratio(p.rps, s.rps)),
        ("median latency (ms)", f"{p.p50_ms:.0f}", f"{s.p50_ms:.0f}", ratio(p.p50_ms, s.p50_ms)),
        ("simulator CPU (% core)", f"{p.sim_pct:.1f}", f"{s.sim_pct:.1f}", ""),
        ("simulator CPU/request (µs)", f"{p.sim_us_per_req:,.0f}", f"{s.sim_us_per_req:,.0f}",
         ratio(p.sim_us_per_req, s.sim_us_per_req)),
        ("Locust CPU (% core)", f"{p.locust_pct:.1f}", f"{s.locust_pct:.1f}", ""),
        ("Locust CPU/request (µs)", f"{p.locust_us_per_req:,.0f}", f"{s.locust_us_per_req:,.0f}",
         ratio(p.locust_us_per_req, s.locust_us_per_req)),
        ("peak 1-s CPU sim / Locust (%)", f"{p.sim_peak_pct:.0f} / {p.locust_peak_pct:.0f}",
         f"{s.sim_peak_pct:.0f} / {s.locust_peak_pct:.0f}", ""),
        (f"first >={SATURATED_PCT:.0f}% sim / Locust", f"{fmt_sat(p.sim_first_sat_s)} / {fmt_sat(p.locust_first_sat_s)}",
         f"{fmt_sat(s.sim_first_sat_s)} / {fmt_sat(s.locust_first_sat_s)}", ""),
        ("failures (whole run)", f"{p.failures}", f"{s.failures}", ""),
        ("requests Locust / sim served", f"{p.locust_total} / {p.sim_served}", f"{s.locust_total} / {s.sim_served}",
         ""),
        ("bottleneck", p.bottleneck(), s.bottleneck(), ""),
    ]
    widths = [max(len(r[i]) for r in [("", "plain chat", "streamed chat", "stream/plain"), *rows]) for i in range(4)]
    head = ("", "plain chat", "streamed chat", "stream/plain")
    lines = [
        f"gatewaysim throughput: {args.users} FastHttpUsers, {args.duration} s per mode, model {MODEL}, "
        f"{args.max_tokens} output tokens, warmup {args.warmup} s skipped",
        f"pinning: simulator CPU {SIM_CPU}, Locust CPU {LOCUST_CPU}" if pinned else "pinning: off",
        "",
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True))),
        "  ".join("-" * w for w in widths),
    ]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                      strict=True))))
    lines.append("")
    for res in (p, s):
        verdict = res.bottleneck()
        lines.append(f"{res.mode}: bottleneck = {verdict} (simulator {res.sim_pct:.0f}% of its core, "
                     f"Locust {res.locust_pct:.0f}% of its core)")
    for res in (p, s):
        for note in res.notes:
            lines.append(f"[{res.mode}] {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run both modes and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=12, help="Locust run time per mode, seconds (default 12)")
    parser.add_argument("--users", type=int, default=20, help="concurrent Locust users (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds skipped after the first request (default 3)")
    parser.add_argument("--max-tokens", type=int, default=32, help="fixed answer length (default 32)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the two processes to CPUs 0 and 1")
    args = parser.parse_args(argv)
    if args.duration < args.warmup + 3:
        parser.error("--duration must be at least --warmup + 3")
    if not args.no_pin and (os.cpu_count() or 1) < 2:
        print("fewer than 2 CPUs: not pinning", file=sys.stderr)
        args.no_pin = True
    workdir = Path(tempfile.mkdtemp(prefix="sim_throughput_"))
    try:
        cfg = workdir / "sim.yaml"
        cfg.write_text(sim_config_yaml(args.max_tokens))
        results = {}
        for mode in MODES:
            print(f"running {mode} chat for {args.duration} s ...", file=sys.stderr, flush=True)
            results[mode] = run_mode(mode, cfg, workdir, args)
        print(report(results, args, pinned=not args.no_pin))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
