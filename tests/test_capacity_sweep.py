"""A constant-rate sweep on a x1.1 grid finds the simulator's maximum sustainable throughput within 15%."""

from __future__ import annotations

import json

import pytest

from ttbench.simproc import SimProcess

from .conftest import write_config
from .runs import records, ttbench_together, write_scenario

pytestmark = [pytest.mark.timeout(240), pytest.mark.serial]  # timing under load: runs alone (make test)

MODEL = {"defaults": {"chat": {"slots": 4, "queue": 8, "base_ms": 20, "prefill_ms_per_token": 0, "ttft_jitter_ms": 0,
                               "decode_tokens_per_s": 200, "slowdown_at_full": 0.2,
                               "output_tokens": {"min": 20, "max": 20}}}}


def _sweep(tmp_path, name: str, stages: int, extra: dict) -> tuple[list[float], list[str]]:
    grid = [round(18 * 1.1**i, 2) for i in range(stages)]
    scenario = write_scenario(tmp_path / f"{name}.yaml", {
        "name": name, "seed": 21, "sim": {"config": MODEL}, "users": 48, "spawn_rate": 48,
        "arrivals": {"process": "constant", "rate": grid[0]}, "stop_timeout": "10s",
        "retry": {"max_attempts": 1, "budget": 0}, "timeouts": {"first_byte_s": 20},
        "defaults": {"prompt_tokens": 20, "output_tokens": 20, "ignore_eos": True},
        "mix": [{"endpoint": "chat", "stream": 1.0}],
        "stages": [{"duration": "4s", "rate": r} for r in grid], **extra})
    return grid, ["run", str(scenario), "--out", str(tmp_path / name)]


def test_a_sweep_finds_the_maximum_sustainable_throughput_and_another_stops_within_one_stage_of_it(tmp_path):
    """Two sweeps at once (the knee is the simulated model's, not this machine's): the whole grid, and one that
    stops early."""
    grid, whole = _sweep(tmp_path, "sweep", 9, {"gates": {"max_sustainable_rps": 1.0}})
    # the served share alone: at the knee the model's queue can also grow TTFT p95 five-fold from one stage to the
    # next (28 -> 149 ms once), which would stop the sweep on the other rule (unit-tested in test_analysis_figures)
    rule = {"served_share_below": 0.93, "ttft_p95_growth": None, "consecutive": 1}
    early_grid, early = _sweep(tmp_path, "early", 11, {"analysis": {"early_stop": rule, "settle_s": 1}})
    res, res_early = ttbench_together(whole, early, timeout=200)
    with SimProcess(config=write_config(tmp_path / "m.yaml", MODEL, fast=False)) as sim:
        truth = sim.admin("/_sim/capacity", model="gpt-4o-mini", input_tokens=20, output_tokens=20).json()
    out = tmp_path / "sweep"
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    cap = summary["capacity"]
    assert [s["offered_rps"] for s in cap["stages"]] == grid
    found = cap["max_sustainable_rps"]
    assert abs(found - truth["max_sustainable_rps"]) / truth["max_sustainable_rps"] <= 0.15, (found, truth)
    top = cap["stages"][-1]
    assert top["rate_limited"] > 0 and top["served_share"] < 0.95  # past the knee the model refuses work
    assert cap["knee"] is not None and cap["stages"][0]["ttft_p95_ms"] is not None
    assert summary["gates"][0]["gate"] == "max_sustainable_rps" and summary["gates"][0]["ok"]
    html = (out / "report.html").read_text()
    assert "alt='capacity'" in html

    out = tmp_path / "early"
    assert res_early.returncode == 0, res_early.stderr[-3000:]
    first_over = next(i for i, r in enumerate(early_grid) if r > truth["max_sustainable_rps"])
    harness = json.loads((out / "harness.json").read_text())
    stop = harness["early_stop"]
    assert stop is not None and "served share" in stop["reason"], harness["stop_reason"]
    assert first_over - 1 <= stop["stage"] <= first_over + 1, (stop, first_over, truth)
    sent = {r["stage"] for r in records(out)}
    assert max(sent) <= stop["stage"] + 1 < len(early_grid) - 1  # stopped in the stage after the one judged
    assert "stopped early" in harness["stop_reason"]
