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


def test_a_killed_worker_is_named_and_loses_at_most_a_second(tmp_path):
    slow = {"defaults": {"chat": {"base_ms": 20, "decode_tokens_per_s": 40, "output_tokens": {"min": 30, "max": 30},
                                  "slots": 64, "queue": 64}}}
    scenario = write_scenario(tmp_path / "crash.yaml", {
        "name": "crash", "seed": 4, "users": 8, "spawn_rate": 8, "duration": "12s", "stop_timeout": "10s",
        "defaults": {"prompt_tokens": 10, "output_tokens": 30},
        "mix": [{"endpoint": "chat", "stream": 0.8}, {"endpoint": "messages", "stream": 0.8}]})
    out = tmp_path / "run"
    with SimProcess(config=write_config(tmp_path / "sim.yaml", slow, fast=False), api_key="crash-key") as sim:
        out.mkdir()
        (out / "prices.yaml").write_text(json.dumps(sim.admin("/_sim/config").json()["prices"]))
        master, workers = start_master_and_workers(scenario, out, sim.url, "crash-key", 8, "crash-run")
        try:
            deadline = time.time() + 30
            while time.time() < deadline and (not (out / "records.jsonl").exists()
                                              or (out / "records.jsonl").stat().st_size < 5000):
                time.sleep(0.2)
            time.sleep(1.0)
            killed_at = time.time()
            workers[0].send_signal(signal.SIGKILL)
            output, _ = master.communicate(timeout=120)
            workers[1].communicate(timeout=60)
        finally:
            for p in (master, *workers):
                if p.poll() is None:
                    p.kill()
        truth = [json.loads(line) for line in sim.admin("/_sim/truth").text.splitlines()]
        (out / "ledger.jsonl").write_text(sim.admin("/_sim/ledger").text)
    assert master.returncode == 0, output[-3000:]
    harness = json.loads((out / "harness.json").read_text())
    (lost,) = harness["lost_workers"]
    dead = lost["worker_index"]
    assert lost["possibly_missing_records"] >= 0
    recs = records(out)
    live_worker = ({0, 1} - {dead}).pop()
    assert max(r["t_start"] for r in recs if r["worker"] == live_worker) > killed_at + 2  # the master carried on
    have = {r["attempt_id"] for r in recs}
    prefix = f"crash-run-w{dead}-"
    missing = [e for e in truth if (e["client_attempt_id"] or "").startswith(prefix)
               and e["client_attempt_id"] not in have]
    # lost: calls still in flight at the kill, and at most about a second of finished ones before it
    for e in missing:
        unfinished = e["last_byte"] is None or e["last_byte"] > killed_at - 0.05
        assert unfinished or e["last_byte"] > killed_at - 1.2, e
    summary, _ = analyze(out)
    assert any(f"worker {dead} was lost" in w for w in summary["warnings"])
    assert "was lost mid-run" in (out / "report.md").read_text()
    b = summary["billing"]
    charged_unfinished = [e for e in missing if float(e["charged_amount"]) > 0]
    if charged_unfinished:
        assert b["lost_worker_charges"][str(dead)]["charges"] == len(charged_unfinished)
    assert b["counts"]["unknown_request"] == 0  # its charges are attributed to it, not called unknown
