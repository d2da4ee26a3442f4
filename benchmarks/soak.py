"""A soak: `ttbench run` against its embedded simulator at a constant streamed-chat rate, memory sampled.

The run is a real one (`ttbench run` on a scenario this script writes): open-loop constant arrivals of
streamed chats (--rate calls/s, 32 output tokens) for --duration seconds, the simulator's model made fast and
wide (TTFT about 5 ms, 2,000 tokens/s, thousands of slots) so the rate, not the model, is what is offered.
With --processes N (default 1) Locust runs as a master and N worker processes, so the figures cover the
simulator, the master and each worker.

Every second the resident memory (RSS) of each process of the run is sampled. A process passes when its
RSS at the end of the load is within --tolerance (default 20%) of its RSS one minute after the first
call (--settle-s), i.e. memory stays flat once the run is warm. Also printed: the calls/s achieved (from
the run's summary.json) and the run's own exit code.

Usage:
    python benchmarks/soak.py [--duration 600] [--rate 500] [--processes 1] [--settle-s 60] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import ROOT, non_negative_int, positive_int  # noqa: E402

TTBENCH = [sys.executable, "-m", "ttbench"]
ROLES = ("simulator", "master", "worker")


def scenario_yaml(rate: float, duration_s: int, users: int) -> str:
    """A constant-rate streamed-chat soak against a fast, wide simulated model."""
    return f"""# written by benchmarks/soak.py
name: soak
description: Streamed chat at a constant rate for a long time; memory must stay flat.
seed: 5
target: sim
users: {users}
spawn_rate: {users}
duration: {duration_s}s
stop_timeout: 20s
arrivals: {{process: constant, rate: {rate}}}
timeouts: {{connect_s: 5, first_byte_s: 30, idle_s: 30, total_s: 60}}
retry: {{max_attempts: 1, budget: 0}}
defaults:
  prompt_tokens: 64
  output_tokens: 32
mix:
  - {{endpoint: chat, weight: 1, models: [gpt-4o-mini], stream: 1.0}}
sim:
  config:
    defaults:
      chat: {{base_ms: 5, prefill_ms_per_token: 0, ttft_jitter_ms: 0, decode_tokens_per_s: 2000,
              slowdown_at_full: 0, slots: 4096, queue: 4096}}
"""


@dataclass
class Track:
    """One process of the run and its RSS samples: (seconds since the first call, MiB)."""

    pid: int
    role: str
    samples: list[tuple[float, float]] = field(default_factory=list)

    def at(self, t: float) -> float | None:
        """The first sample at or after t seconds."""
        return next((m for s, m in self.samples if s >= t), None)


def role_of(proc: psutil.Process) -> str | None:
    """Which part of a ttbench run a process is: the simulator, Locust's master (or its only process), a worker
    (Locust forks its --processes workers from the master, so a worker is a Locust process whose parent is one)."""
    text = " ".join(proc.cmdline())
    if " sim " in f" {text} ":
        return "simulator"
    if "locust" not in text:
        return None
    parent = proc.parent()
    return "worker" if parent is not None and "locust" in " ".join(parent.cmdline()) else "master"


def main() -> int:
    """Run the soak and print the memory table; exit 1 when a process's memory grew past the tolerance."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=positive_int, default=600, help="seconds of load (default 600)")
    p.add_argument("--rate", type=float, default=500.0, help="streamed chats per second offered (default 500)")
    p.add_argument("--processes", type=non_negative_int, default=1,
                   help="Locust worker processes (default 1: a master and one worker; 0: one process)")
    p.add_argument("--users", type=positive_int, default=400, help="Locust users (the calls in flight at most)")
    p.add_argument("--settle-s", type=float, default=60.0, help="the memory baseline: this long after the first call")
    p.add_argument("--tolerance", type=float, default=0.20, help="allowed growth after the baseline (default 0.20)")
    p.add_argument("--keep", action="store_true", help="keep the run folder (its path is printed)")
    args = p.parse_args()
    if args.duration <= args.settle_s:
        p.error("--duration must be longer than --settle-s")
    work = Path(tempfile.mkdtemp(prefix="ttbench-soak-"))
    scenario = work / "soak.yaml"
    scenario.write_text(scenario_yaml(args.rate, args.duration, args.users))
    out = work / "run"
    cmd = [*TTBENCH, "run", str(scenario), "--out", str(out)]
    if args.processes:
        cmd += ["--processes", str(args.processes)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    print(f"soak: {args.rate:g} streamed chats/s for {args.duration} s, {args.processes or 'no'} worker process(es); "
          f"run folder {out}", flush=True)
    tracks: dict[int, Track] = {}
    start = time.monotonic()
    first_call: float | None = None
    log = (work / "run.log").open("wb")
    run = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        root = psutil.Process(run.pid)
        while run.poll() is None:
            time.sleep(1.0)
            if first_call is None and (out / "records.jsonl").exists() and (out / "records.jsonl").stat().st_size:
                first_call = time.monotonic()
            try:
                kids = root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            now = time.monotonic()
            for proc in kids:
                try:
                    track = tracks.get(proc.pid)
                    if track is None:
                        role = role_of(proc)
                        if role is None:
                            continue
                        track = tracks[proc.pid] = Track(proc.pid, role)
                    if first_call is not None and now - first_call <= args.duration:
                        track.samples.append((now - first_call, proc.memory_info().rss / 2**20))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            if now - start > args.duration + 600:
                os.killpg(run.pid, signal.SIGTERM)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        log.close()
    code = run.returncode
    summary_path = out / "summary.json"
    achieved = None
    if summary_path.exists():
        overall = json.loads(summary_path.read_text())["metrics"].get("overall") or {}
        achieved = overall.get("requests_per_s")
        print(f"calls {overall.get('calls'):,}, successes {overall.get('successes'):,}, "
              f"{achieved:.1f} successful calls/s, error rate {overall.get('error_rate', 0):.4f}")
    print(f"ttbench run exit code {code}")
    print(f"\n  {'process':<12}{'pid':>8}{'RSS at ' + format(args.settle_s, 'g') + ' s':>16}{'RSS at end':>14}"
          f"{'growth':>10}   verdict")
    ok = code == 0 and bool(tracks)
    for role in ROLES:
        for t in sorted((t for t in tracks.values() if t.role == role), key=lambda t: t.pid):
            base = t.at(args.settle_s)
            end = t.samples[-1][1] if t.samples else None
            if base is None or end is None:
                print(f"  {role:<12}{t.pid:>8}{'-':>16}{'-':>14}{'-':>10}   too few samples")
                ok = False
                continue
            growth = end / base - 1
            good = growth <= args.tolerance
            ok = ok and good
            print(f"  {role:<12}{t.pid:>8}{base:>13.1f} MiB{end:>10.1f} MiB{growth:>+10.1%}   "
                  f"{'ok' if good else 'GREW'}")
    minutes = range(60, int(args.duration) + 1, 60)
    if minutes and tracks:
        print("\n  RSS (MiB) at each minute after the first call")
        print("  " + f"{'process':<12}" + "".join(f"{m // 60:>7} m" for m in minutes))
        for t in sorted(tracks.values(), key=lambda t: (ROLES.index(t.role), t.pid)):
            print("  " + f"{t.role:<12}" + "".join(f"{v:>9.1f}" if (v := t.at(m - 1)) is not None else f"{'-':>9}"
                                                  for m in minutes))
    (work / "soak-memory.json").write_text(json.dumps(
        {"rate": args.rate, "duration_s": args.duration, "processes": args.processes, "achieved": achieved,
         "tracks": [{"pid": t.pid, "role": t.role, "samples": t.samples} for t in tracks.values()]}))
    if achieved is not None and achieved < 0.95 * args.rate:
        print(f"the run achieved {achieved:.1f} calls/s, short of the {args.rate:g} offered")
        ok = False
    print(f"\n{'met' if ok else 'NOT met'}: every process within {args.tolerance:.0%} of its memory at "
          f"{args.settle_s:g} s, at {args.rate:g} streamed calls/s offered")
    if achieved is not None:
        short = 1 - achieved / args.rate
        print(f"rate: {achieved:.1f} calls/s served of {args.rate:g} offered"
              + (f" ({short:.1%} short: see the dropped arrivals in harness.json)" if short > 0.001 else ""))
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
