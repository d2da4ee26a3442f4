"""Open-loop arrivals: Poisson inter-arrivals, and drops (not bursts) when the target stalls."""

from __future__ import annotations

import json
import math

import pytest

from .runs import records, ttbench, write_scenario

pytestmark = [pytest.mark.timeout(180), pytest.mark.serial]  # timing under load: runs alone (make test)

FAST = {"defaults": {"chat": {"base_ms": 5, "ttft_jitter_ms": 1, "decode_tokens_per_s": 1000,
                              "output_tokens": {"min": 8, "max": 8}}}}


def test_poisson_interarrivals_are_exponential(tmp_path):
    scenario = write_scenario(tmp_path / "poisson.yaml", {
        "name": "poisson", "seed": 9, "sim": {"config": FAST}, "users": 20, "duration": "8s",
        "arrivals": {"process": "poisson", "rate": 40}, "mix": [{"endpoint": "chat"}]})
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    # the send times (when each call really started), not the generator's own draws
    firsts = sorted(r["t_start"] for r in records(out) if r["attempt"] == 1 and r["scheduled"] is not None)
    gaps = sorted(b - a for a, b in zip(firsts, firsts[1:], strict=False))
    n = len(gaps)
    assert n > 200
    mean = sum(gaps) / n
    assert abs(mean - 1 / 40) / (1 / 40) < 0.15
    # Kolmogorov-Smirnov against Exp(1/mean): D below the 1% critical value 1.63/sqrt(n)
    d = max(max(abs((i + 1) / n - (1 - math.exp(-g / mean))), abs(i / n - (1 - math.exp(-g / mean))))
            for i, g in enumerate(gaps))
    assert d < 1.63 / math.sqrt(n), d
    lags = sorted(r["schedule_lag_ms"] for r in records(out) if r["schedule_lag_ms"] is not None)
    assert lags[len(lags) // 2] < 20
    harness = json.loads((out / "harness.json").read_text())
    assert harness["arrivals"]["dropped"] == 0


def test_a_stall_drops_arrivals_and_no_burst_follows(tmp_path):
    sim = dict(FAST, faults={"quota": {"stall": 3}, "quota_rate": 1.0, "stall_ms": 2000})
    scenario = write_scenario(tmp_path / "stall.yaml", {
        "name": "stall", "seed": 2, "sim": {"config": sim}, "users": 3, "duration": "6s",
        "timeouts": {"first_byte_s": 10}, "arrivals": {"process": "constant", "rate": 10},
        "mix": [{"endpoint": "chat"}]})
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    harness = json.loads((out / "harness.json").read_text())
    assert harness["arrivals"]["dropped"] >= 10  # about 2 s of arrivals at 10/s found no free user
    recs = sorted((r for r in records(out) if r["attempt"] == 1), key=lambda r: r["t_start"])
    stalled_end = max(r["t_start"] + r["end_ms"] / 1000 for r in recs[:3])
    after = [r["t_start"] for r in recs if r["t_start"] > stalled_end]
    # no catch-up: in any 0.5 s window after the stall, at most the nominal 5 calls (+1 for edges)
    for t in after:
        assert sum(1 for u in after if t <= u < t + 0.5) <= 6
    assert all(r["schedule_lag_ms"] < 100 for r in recs if r["t_start"] > stalled_end)
