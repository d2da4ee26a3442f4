"""kill -9 one worker mid-run: the master carries on, names the lost worker, and attributes its charges."""

from __future__ import annotations

import json
import signal
import time

import pytest

from analysis.report import analyze
from ttbench.simproc import SimProcess

from .conftest import write_config
from .runs import records, start_master_and_workers, write_scenario

pytestmark = pytest.mark.timeout(180)


def test_killed_workers_are_named_and_each_estimate_bounds_what_is_missing(tmp_path):
    """Three of four workers killed at different moments: each is named, each estimate of its possibly missing
    records is an upper bound on what is really missing (the simulator's truth minus the records), and what is
    missing is at most 1.5 s (flush plus report interval) of its calls."""
    slow = {"defaults": {"chat": {"base_ms": 20, "decode_tokens_per_s": 40, "output_tokens": {"min": 30, "max": 30},
                                  "slots": 64, "queue": 64}}}
    scenario = write_scenario(tmp_path / "crash.yaml", {
        "name": "crash", "seed": 4, "users": 16, "spawn_rate": 16, "duration": "14s", "stop_timeout": "10s",
        "defaults": {"prompt_tokens": 10, "output_tokens": 30},
        "mix": [{"endpoint": "chat", "stream": 0.8}, {"endpoint": "messages", "stream": 0.8}]})
    out = tmp_path / "run"
    killed_at: dict[int, float] = {}
    with SimProcess(config=write_config(tmp_path / "sim.yaml", slow, fast=False), api_key="crash-key") as sim:
        out.mkdir()
        (out / "prices.yaml").write_text(json.dumps(sim.admin("/_sim/config").json()["prices"]))
        master, workers = start_master_and_workers(scenario, out, sim.url, "crash-key", 16, "crash-run", workers=4)
        try:
            deadline = time.time() + 30
            while time.time() < deadline and (not (out / "records.jsonl").exists()
                                              or (out / "records.jsonl").stat().st_size < 5000):
                time.sleep(0.2)
            for k in (0, 1, 2):
                time.sleep(1.3)
                killed_at[k] = time.time()
                workers[k].send_signal(signal.SIGKILL)
            output, _ = master.communicate(timeout=120)
            workers[3].communicate(timeout=60)
        finally:
            for p in (master, *workers):
                if p.poll() is None:
                    p.kill()
        truth = [json.loads(line) for line in sim.admin("/_sim/truth").text.splitlines()]
        (out / "ledger.jsonl").write_text(sim.admin("/_sim/ledger").text)
    assert master.returncode == 0, output[-3000:]
    harness = json.loads((out / "harness.json").read_text())
    lost = harness["lost_workers"]
    assert len(lost) == 3
    recs = records(out)
    alive = {r["worker"] for r in recs} - {w["worker_index"] for w in lost}
    assert alive and max(r["t_start"] for r in recs if r["worker"] in alive) > max(killed_at.values()) + 2
    have = {r["attempt_id"] for r in recs}
    kill_time = sorted(killed_at.values())
    total_missing = 0
    for entry, when in zip(sorted(lost, key=lambda w: w["lost_at"]), kill_time, strict=True):
        dead = entry["worker_index"]
        prefix = f"crash-run-w{dead}-"
        missing = [e for e in truth if (e["client_attempt_id"] or "").startswith(prefix)
                   and e["client_attempt_id"] not in have]
        assert len(missing) <= entry["possibly_missing_records"], (len(missing), entry)
        total_missing += len(missing)
        for e in missing:  # in flight at the kill, or finished at most 1.5 s before it
            unfinished = e["last_byte"] is None or e["last_byte"] > when - 0.05
            assert unfinished or e["last_byte"] > when - 1.5, e
    assert total_missing > 0  # calls in flight at the kills: the estimates bound something real
    summary, _ = analyze(out)
    for entry in lost:
        assert any(f"worker {entry['worker_index']} was lost" in w for w in summary["warnings"])
    assert "was lost mid-run" in (out / "report.md").read_text()
    b = summary["billing"]
    assert b["counts"]["unknown_request"] == 0  # the lost workers' charges are attributed to them
    attributed = sum(v["charges"] for v in b["lost_worker_charges"].values())
    charged_missing = [e for e in truth if float(e.get("charged_amount") or 0) > 0
                       and any((e["client_attempt_id"] or "").startswith(f"crash-run-w{w['worker_index']}-")
                               for w in lost) and e["client_attempt_id"] not in have]
    assert attributed == len(charged_missing)
