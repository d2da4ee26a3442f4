"""SIGTERM or Ctrl-C keeps everything already written; a refused key on the first calls stops the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ttbench.simproc import SimProcess

from .runs import ROOT, jsonl, records, ttbench, write_scenario

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_keeps_the_records(tmp_path, sig):
    scenario = write_scenario(tmp_path / "long.yaml", {
        "name": "long", "users": 4, "duration": "120s", "stop_timeout": 0,
        "sim": {"config": {"defaults": {"chat": {"base_ms": 5, "decode_tokens_per_s": 200}}}},
        "mix": [{"endpoint": "chat", "stream": 0.5}]})
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ttbench", "run", str(scenario), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and (not (out / "records.jsonl").exists()
                                      or (out / "records.jsonl").stat().st_size < 2000):
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    recs = records(out)  # every line parses: nothing torn
    assert len(recs) >= 5, err[-2000:]
    truth = jsonl(out / "truth.jsonl")  # the simulator's truth was still collected
    seen = {r["request_id"] for r in recs} | {r["attempt_id"] for r in recs}
    assert all(e["request_id"] in seen or e["client_attempt_id"] in seen for e in truth)
    assert (out / "run.json").exists()


def test_a_refused_key_stops_the_run_early(tmp_path):
    with SimProcess(api_key="right") as sim:
        scenario = write_scenario(tmp_path / "s.yaml", {
            "name": "s", "target": sim.url, "users": 1, "duration": "60s",
            "mix": [{"endpoint": "gemini"}]})
        t0 = time.time()
        res = ttbench("run", str(scenario), "--out", str(tmp_path / "o"), "--max-spend", "1",
                      env=dict(os.environ, TT_API_KEY="wrong"), timeout=60)
    # /v1/models refuses it first (exit 2); the in-run check covers gateways whose models route is open
    assert res.returncode == 2 and time.time() - t0 < 10
    assert "refused the API key" in res.stderr


def test_a_run_whose_every_call_was_cut_reports_and_exits_0(tmp_path):
    """Every call stalls past the run's end: all are cancelled, and the summary still prints (no traceback)."""
    sim = {"defaults": {"chat": {"base_ms": 5}}, "faults": {"rate": 1.0, "weights": {"stall": 1}, "stall_ms": 30000}}
    scenario = write_scenario(tmp_path / "cut.yaml", {
        "name": "cut", "users": 3, "spawn_rate": 3, "duration": "2s", "stop_timeout": 0,
        "timeouts": {"first_byte_s": 60}, "sim": {"config": sim}, "mix": [{"endpoint": "chat"}]})
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    recs = records(out)
    assert recs and all(r["error_kind"] == "cancelled" for r in recs)
    assert "calls 0" in res.stdout or "empty" in res.stdout or "report:" in res.stdout
