"""How many records per second one ttbench master takes from its workers, and its CPU per record.

First a short real run (`ttbench run`, streamed chat against the embedded simulator, 32 output tokens)
gives one real attempt record of a streamed chat. Then, for each --rates figure, Locust runs ttbench's
runtime as a master and --processes workers whose users make no HTTP calls: each emits copies of that record
at a fixed pace through the worker's own record path (benchmarks/_ingest_locustfile.py), so the machine's
CPU goes to the master and the shipping, not to a server. Every second the master's and the workers' CPU and
the size of the master's records.jsonl are sampled; over a steady window (after --warmup seconds, the last
second left out) the records landing per second, the master's CPU (% of one core) and its CPU per record
are printed, and whether the master kept up (landed >= 97% of offered, and its core under 90% busy).
After the load each run's backlog is what the master had not written when Locust stopped the users.

Usage:
    python benchmarks/master_ingest.py [--rates 2000 4000 6000 8000 12000] [--duration 15] [--processes 2]
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
from dataclasses import dataclass
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import ROOT, non_negative_float, positive_int, sleep_to_next_second  # noqa: E402

LOCUSTFILE = BENCH / "_ingest_locustfile.py"
PACE_S = 0.05  # one user's records: 20 a second
KEEP_UP_SHARE = 0.97
FULL_PCT = 90.0

TEMPLATE_SCENARIO = """# written by benchmarks/master_ingest.py: one real streamed chat record
name: ingest-template
seed: 3
target: sim
users: 2
spawn_rate: 2
duration: 4s
stop_timeout: 10s
retry: {max_attempts: 1, budget: 0}
defaults:
  prompt_tokens: 64
  output_tokens: 32
mix:
  - {endpoint: chat, weight: 1, models: [gpt-4o-mini], stream: 1.0}
"""

INGEST_SCENARIO = """# written by benchmarks/master_ingest.py: the master's settings; the users make no calls
name: ingest
seed: 3
target: http://127.0.0.1:9
users: 1
spawn_rate: 1
duration: 60s
stop_timeout: 5s
retry: {max_attempts: 1, budget: 0}
mix:
  - {endpoint: chat, weight: 1, models: [gpt-4o-mini], stream: 1.0}
"""


@dataclass
class Sample:
    """Cumulative figures read at one whole second."""

    second: int
    master_cpu: float
    workers_cpu: float
    records_bytes: int


def template_record(work: Path) -> dict:
    """One successful streamed chat record from a short real run against the simulator."""
    scenario = work / "template.yaml"
    scenario.write_text(TEMPLATE_SCENARIO)
    out = work / "template"
    res = subprocess.run([sys.executable, "-m", "ttbench", "run", str(scenario), "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=180)
    if res.returncode != 0:
        raise SystemExit(f"the template run failed ({res.returncode}): {res.stderr[-2000:]}")
    for line in (out / "records.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("ok") and rec.get("stream") and (rec.get("chunks") or {}).get("n", 0) >= 32:
            return rec
    raise SystemExit(f"{out}/records.jsonl: no successful streamed chat of 32 chunks")


def cpu(proc: psutil.Process) -> float:
    """User plus system CPU seconds."""
    t = proc.cpu_times()
    return t.user + t.system


def run_rate(work: Path, rate: int, args: argparse.Namespace, record_path: Path, record_bytes: float) -> dict:
    """One Locust run offering `rate` records/s; its figures."""
    users = max(1, round(rate * PACE_S))
    offered = users / PACE_S
    out = work / f"rate-{rate}"
    scenario = work / "ingest.yaml"
    scenario.write_text(INGEST_SCENARIO)
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "SyntheticUser", "--headless",
           "--only-summary", "-u", str(users), "-r", str(users), "--ttbench-duration", str(args.duration),
           "--scenario", str(scenario),
           "--ttbench-out", str(out), "--run-id", f"ingest-{rate}", "-H", "http://127.0.0.1:9",
           "--max-spend", "1e12", "--stop-timeout", "5", "--loglevel", "WARNING"]
    if args.processes:
        cmd += ["--processes", str(args.processes)]
    env = dict(os.environ, INGEST_RECORD=str(record_path), INGEST_PACE_S=str(PACE_S), TT_API_KEY="ingest-no-calls",
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    samples: list[Sample] = []
    log = (work / f"rate-{rate}.log").open("wb")
    locust = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    records = out / "records.jsonl"
    stopped_at: int | None = None
    try:
        master = psutil.Process(locust.pid)
        deadline = time.monotonic() + args.duration + 120
        while locust.poll() is None and time.monotonic() < deadline:
            second = sleep_to_next_second()
            try:
                workers = master.children()
                w = 0.0
                for p in workers:
                    try:
                        w += cpu(p)
                    except psutil.NoSuchProcess:
                        pass
                size = records.stat().st_size if records.exists() else 0
                samples.append(Sample(second, cpu(master), w, size))
            except psutil.NoSuchProcess:
                break
    finally:
        if locust.poll() is None:
            locust.kill()
        locust.wait()
        log.close()
    (work / f"rate-{rate}.samples.json").write_text(json.dumps([s.__dict__ for s in samples]))
    lines = sum(1 for _ in records.open("rb")) if records.exists() else 0
    if lines:  # the real lines' size (their ids are longer than the template's)
        record_bytes = records.stat().st_size / lines
    first = next((i for i, s in enumerate(samples) if s.records_bytes), None)
    fig: dict = {"rate": rate, "users": users, "offered": offered, "records": lines, "exit": locust.returncode}
    harness_path = out / "harness.json"
    if harness_path.exists():  # what the run says of itself: its length, lost workers, records held for the master
        h = json.loads(harness_path.read_text())
        starts = []
        with records.open("rb") as f:
            for line in f:
                starts.append(json.loads(line)["t_start"])
        fig.update(wall_s=h.get("wall_s"), lost=len(h.get("lost_workers") or []), shipping=h.get("shipping") or {},
                   load_s=(max(starts) - min(starts)) if starts else None,
                   made=sum(w.get("records") or 0 for w in h.get("workers") or []))
    if first is None or len(samples) - first < args.warmup + 3:
        fig["error"] = "too few samples"
        return fig
    a = samples[first + int(args.warmup)]
    end = first + int(args.duration) - 1  # the load stops `duration` seconds after the first record
    b = samples[min(end, len(samples) - 1)]
    span = b.second - a.second
    if span <= 0:
        fig["error"] = "no steady window"
        return fig
    landed = (b.records_bytes - a.records_bytes) / record_bytes / span
    master_pct = 100 * (b.master_cpu - a.master_cpu) / span
    fig.update(landed=landed, master_pct=master_pct, workers_pct=100 * (b.workers_cpu - a.workers_cpu) / span,
               us_per_record=1e6 * (b.master_cpu - a.master_cpu) / max(1.0, landed * span),
               kept_up=landed >= KEEP_UP_SHARE * offered and master_pct < FULL_PCT)
    stopped_at = b.second
    after = [s for s in samples if s.second > stopped_at]
    fig["drain_s"] = next((s.second - stopped_at for s in after if s.records_bytes == samples[-1].records_bytes),
                          None)
    return fig


def main() -> int:
    """Run every rate and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rates", type=positive_int, nargs="+", default=[2000, 4000, 6000, 8000, 12000],
                   help="records/s offered, one run each")
    p.add_argument("--duration", type=positive_int, default=15, help="seconds of load per run (default 15)")
    p.add_argument("--warmup", type=non_negative_float, default=3.0, help="seconds skipped after the first record")
    p.add_argument("--processes", type=positive_int, default=2, help="Locust worker processes (default 2)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ttbench-ingest-"))
    try:
        rec = template_record(work)
        record_path = work / "record.json"
        record_path.write_text(json.dumps(rec))
        record_bytes = len(json.dumps(rec, separators=(",", ":"))) + 1
        print(f"template: a streamed chat record of {rec['chunks']['n']} chunks, {record_bytes:,} bytes as a line;"
              f" {args.processes} worker process(es), {args.duration} s per rate", flush=True)
        figs = []
        for rate in args.rates:
            print(f"  offering {rate:,} records/s ...", flush=True)
            figs.append(run_rate(work, rate, args, record_path, record_bytes))
        print(f"\n  {'offered/s':>10}{'landed/s':>10}{'master CPU':>12}{'per record':>12}{'workers CPU':>13}"
              f"{'drain':>8}   verdict; then what the run says of itself")
        best = None
        for f in figs:
            if "error" in f:
                print(f"  {f['offered']:>10,.0f}   {f['error']} (exit {f['exit']})")
                continue
            drain = "-" if f["drain_s"] is None else f"{f['drain_s']} s"
            ship = f.get("shipping") or {}
            own = (f"; load {f['load_s']:.1f} s of {args.duration}, run {f['wall_s']:.0f} s, {f['records']:,} records "
                   f"landed of {f['made']:,} shipped, {f['lost']} workers lost, held peak {ship.get('held_peak', 0):,}, "
                   f"spilled {ship.get('spilled', 0):,}") if f.get("wall_s") is not None and f.get("load_s") else ""
            print(f"  {f['offered']:>10,.0f}{f['landed']:>10,.0f}{f['master_pct']:>11.0f}%{f['us_per_record']:>9.1f} µs"
                  f"{f['workers_pct']:>12.0f}%{drain:>8}   {'keeps up' if f['kept_up'] else 'FALLS BEHIND'}{own}")
            if f["kept_up"]:
                best = f
        if best is not None:
            per_core = 1e6 / best["us_per_record"] if best["us_per_record"] else math.inf
            print(f"\none master kept up with {best['landed']:,.0f} records/s (the highest rate tried that it kept up"
                  f" with); at {best['us_per_record']:.1f} µs a record, one core is about {per_core:,.0f} records/s")
        if args.keep:
            print(f"kept {work}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
