"""Distributed open-loop runs: one schedule split by dense ranks, re-split when a worker is lost or joins, and
figures on the master that are the run's, not its own process's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from locustfiles.arrivals import Arrivals
from locustfiles.scenario import load_scenario
from ttbench.simproc import SimProcess

from .conftest import FAST, write_config
from .runs import GATEWAY, ROOT, records, start_master_and_workers, ttbench, write_scenario

pytestmark = [pytest.mark.timeout(200), pytest.mark.serial]  # timing under load: runs alone (make test)

RATE = 30.0


def _worker(scenario, port: int, key: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "locust", "-f", str(GATEWAY), "--scenario", str(scenario),
                             "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)], cwd=ROOT,
                            env=dict(os.environ, TT_API_KEY=key), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_a_lost_and_a_new_worker_re_split_the_schedule_without_duplicates(tmp_path):
    scenario = write_scenario(tmp_path / "resplit.yaml", {
        "name": "resplit", "seed": 12, "users": 24, "spawn_rate": 24, "duration": "18s", "stop_timeout": "5s",
        "arrivals": {"process": "constant", "rate": RATE}, "defaults": {"prompt_tokens": 10, "output_tokens": 8},
        "mix": [{"endpoint": "chat", "stream": 0.5}]})
    out = tmp_path / "run"
    with SimProcess(config=write_config(tmp_path / "sim.yaml"), api_key="split-key") as sim:
        master, workers = start_master_and_workers(scenario, out, sim.url, "split-key", 24, "split-run",
                                                   workers=3)
        port = master.master_port
        extra = None
        try:
            deadline = time.time() + 30
            while time.time() < deadline and (not (out / "records.jsonl").exists()
                                              or (out / "records.jsonl").stat().st_size < 3000):
                time.sleep(0.2)
            time.sleep(1.0)
            workers[1].send_signal(signal.SIGKILL)
            time.sleep(5.0)  # Locust marks it missing after about 3 s without a heartbeat
            extra = _worker(scenario, port, "split-key")
            output, _ = master.communicate(timeout=120)
        finally:
            for p in (master, *workers, *([extra] if extra else [])):
                if p.poll() is None:
                    p.kill()
    newcomer_output = extra.communicate(timeout=10)[0][-2000:] if extra else ""
    assert master.returncode == 0, output[-3000:]
    harness = json.loads((out / "harness.json").read_text())
    (lost,) = harness["lost_workers"]
    start = harness["run_start"]
    resplits = harness["resplits"]
    assert len(resplits) >= 3, resplits  # the start, the loss, the newcomer
    assert sorted(resplits[-1]["ranks"].values()) == [0, 1, 2]  # dense ranks again
    newcomer = max(int(k) for k in resplits[-1]["ranks"])
    recs = [r for r in records(out) if r["attempt"] == 1]
    sent = [r["arrival"] for r in recs]
    assert len(sent) == len(set(sent)), "an arrival went out twice"
    schedule = list(Arrivals(load_scenario(scenario), 12, duration_s=18.0).times())
    holes = set(range(len(schedule))) - set(sent)
    # holes only among the lost worker's arrivals, from just before its last shipment to the re-split after it
    old_rank = resplits[0]["ranks"][str(lost["worker_index"])]
    after_loss = next(s for s in resplits if s["at"] >= lost["lost_at"] - 0.01)
    window = (lost["last_shipment_at"] - start - 1.0, after_loss["from_t"])
    lost_holes = {i for i in holes if i % 3 == old_rank and window[0] <= schedule[i] < window[1]}
    assert lost_holes
    # every other hole is an arrival counted as dropped (no free user: while users spawn at the start, or while
    # the newcomer's rebalanced users spawn), never one silently lost
    others = holes - lost_holes
    assert harness["arrivals"]["dropped"] == len(others), (sorted((i, schedule[i]) for i in others)[:20],
                                                           harness["workers"], newcomer_output, output[-2000:])
    late = [r for r in recs if r["worker"] == newcomer]
    assert all(schedule[r["arrival"]] >= resplits[-1]["from_t"] for r in late)  # never before its rank took effect
    # the run's figures are the sums over its workers
    w = harness["workers"]
    assert harness["arrivals"]["offered"] == sum(x["arrivals"]["offered"] for x in w if x["arrivals"])
    assert harness["retry_budget"]["spent"] == sum(1 for r in records(out) if r["attempt"] > 1)


def test_two_processes_keep_the_duration_and_report_each_workers_cpu(tmp_path):
    scenario = write_scenario(tmp_path / "two.yaml", {
        "name": "two", "seed": 3, "sim": {"config": FAST}, "users": 16, "spawn_rate": 16, "duration": "8s",
        "arrivals": {"process": "constant", "rate": 20}, "defaults": {"prompt_tokens": 10, "output_tokens": 8},
        "mix": [{"endpoint": "chat", "stream": 0.5}]})
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--out", str(out), "--processes", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    harness = json.loads((out / "harness.json").read_text())
    recs = [r for r in records(out) if r["attempt"] == 1]
    starts = sorted(r["scheduled"] for r in recs)
    assert abs((starts[-1] - harness["run_start"]) - (8.0 - 1 / 20)) <= 0.2  # the last arrival is due at 7.95 s
    # every arrival of the schedule (0.05 s apart, ending at 8 s) offered, none after the stop; only arrivals of the
    # first second, before the users had spawned, may find no free user
    n = len(list(Arrivals(load_scenario(scenario), 3, duration_s=8.0).times()))
    assert n in (159, 160)
    assert harness["arrivals"]["offered"] == n and len(recs) + harness["arrivals"]["dropped"] == n
    assert sorted({r["arrival"] for r in recs} ^ set(range(n))) == list(range(n - len(recs)))
    assert n - len(recs) <= 20
    assert {r["worker"] for r in recs} == {0, 1}
    assert len(harness["workers"]) == 2
    assert all(x["cpu_percent_mean"] and x["cpu_percent_mean"] > 0 for x in harness["workers"])
    assert harness["peak_worker_cpu_percent"] >= max(x["cpu_percent_peak"] for x in harness["workers"])
