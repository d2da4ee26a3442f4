"""`ttbench compare` resamples as the data were drawn: moving blocks of calls in start order (latencies under load
are correlated in time), or whole runs. Checked against known properties of seeded synthetic series, and against
the true spread of the statistic, measured by simulating many independent runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.compare import Thresholds, block_length, delta_interval

from .runs import ttbench
from .test_analysis_metrics import rec, write

pytestmark = pytest.mark.timeout(120)


def ar1(n: int, phi: float, rng: np.random.Generator, k: int = 1) -> np.ndarray:
    """k AR(1) series of n values with unit stationary variance: x[t] = phi x[t-1] + e[t]."""
    e = rng.normal(0.0, np.sqrt(1 - phi**2), (k, n))
    x = np.empty((k, n))
    x[:, 0] = rng.normal(0.0, 1.0, k)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def test_the_block_is_where_the_autocorrelation_falls_below_a_tenth():
    rng = np.random.default_rng(0)
    # AR(1): autocorrelation phi^k, below 0.1 from k = 22 for phi 0.9 (0.9^21 = 0.109, 0.9^22 = 0.098)
    blocks = [block_length(s) for s in ar1(3000, 0.9, rng, 6)]
    assert all(14 <= b <= 35 for b in blocks), blocks
    assert 18 <= float(np.median(blocks)) <= 30
    assert [block_length(s) for s in ar1(3000, 0.0, rng, 6)] == [1] * 6  # independent: no blocks
    assert block_length(np.full(100, 7.0)) == 1
    assert block_length(np.arange(100.0)) == 25  # a trend never decorrelates: a quarter of the calls


def _half_width(ci: list[float]) -> float:
    return (ci[1] - ci[0]) / (2 * 1.96)


@pytest.mark.parametrize("pct", [50, 95, None])
def test_block_intervals_are_as_wide_as_the_truth_and_independent_ones_are_not(pct):
    n, runs = 1000, 1000
    stat = (lambda a: np.percentile(a, pct, axis=1)) if pct is not None else (lambda a: a.mean(axis=1))
    th = Thresholds(resamples=400)
    for phi, seed in ((0.9, 7), (0.0, 8)):
        x = 500 + 100 * ar1(n, phi, np.random.default_rng(seed), runs)
        # the truth: the spread of the delta between two independent runs of the same process
        true_sd = float(np.std(stat(x[runs // 2:]) - stat(x[:runs // 2]), ddof=1))
        for s in range(4):
            a, b = x[s], x[runs // 2 + s]
            block = _half_width(delta_interval([a], [b], pct, "block", th, np.random.default_rng(s))["ci"])
            iid = _half_width(delta_interval([a], [b], pct, "iid", th, np.random.default_rng(100 + s))["ci"])
            if phi:
                assert block >= 1.8 * iid, (pct, s, block, iid)
                assert 0.5 * true_sd <= block <= 1.6 * true_sd, (pct, s, block, true_sd)
                assert iid < 0.55 * true_sd, (pct, s, iid, true_sd)  # independent resampling: far too narrow
            else:
                assert 0.7 <= block / iid <= 1.3, (pct, s, block, iid)
                assert 0.7 * true_sd <= block <= 1.3 * true_sd, (pct, s, block, true_sd)


def test_independent_resampling_flags_noise_as_regressions_and_blocks_do_not():
    """Two runs of one AR(1) process (phi 0.9): any 'regression' is a false positive. At 95% one-sided-2.5%
    intervals, a sound interval flags about 2.5% of pairs."""
    pairs, n = 40, 1000
    x = 500 + 100 * ar1(n, 0.9, np.random.default_rng(11), 2 * pairs)
    th = Thresholds(resamples=200, latency_rel=0.0)  # any increase whose interval excludes 0
    flagged = {"block": 0, "iid": 0}
    for s in range(pairs):
        for method in flagged:
            ci = delta_interval([x[s]], [x[pairs + s]], 95, method, th, np.random.default_rng(s))["ci"]
            flagged[method] += ci[0] > 0
    assert flagged["block"] <= 0.1 * pairs, flagged
    assert flagged["iid"] >= 0.15 * pairs and flagged["iid"] >= 3 * max(1, flagged["block"]), flagged


def _run(folder: Path, ttft: np.ndarray) -> Path:
    folder.mkdir()
    recs = [rec(f"c{i}", 1, 100 + i * 0.05, float(t) + 200, stream=True, first=float(t),
                chunks=[float(t), float(t) + 100, float(t) + 200], out=10) for i, t in enumerate(ttft)]
    write(folder / "records.jsonl", recs)
    return folder


def test_compare_of_runs_differing_only_by_correlated_noise(tmp_path):
    # TTFT 300 ms + a wander (AR(1), phi 0.9, sd 100 ms), the same process in both runs; seed 6 is the first whose
    # noise alone raised p95 by over 10%, twice the 5% threshold
    x = 300 + 100 * ar1(1000, 0.9, np.random.default_rng(6), 2)
    base, new = _run(tmp_path / "base", np.maximum(x[0], 1)), _run(tmp_path / "new", np.maximum(x[1], 1))
    assert np.percentile(x[1], 95) > 1.1 * np.percentile(x[0], 95)
    iid = ttbench("compare", str(base), str(new), "--latency-threshold", "0.05", "--resampling", "iid")
    assert iid.returncode == 1 and "ttft_p95_ms" in iid.stdout.splitlines()[-1], iid.stdout  # a false positive
    assert "calls drawn independently" in iid.stdout.splitlines()[0]
    res = ttbench("compare", str(base), str(new), "--latency-threshold", "0.05", "--json", str(tmp_path / "c.json"))
    assert res.returncode == 0, res.stdout
    assert "regressions: none" in res.stdout and "moving blocks" in res.stdout.splitlines()[0]
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["resampling"]["base"] == out["resampling"]["new"] == "block"
    row = next(r for r in out["rows"] if r["metric"] == "ttft_p95_ms")
    assert row["resampling"]["base"]["method"] == "block" and row["resampling"]["base"]["block_calls"][0] >= 14


def test_several_runs_per_side_resample_whole_runs(tmp_path):
    x = 400 + 100 * ar1(300, 0.97, np.random.default_rng(5), 6)
    runs = [_run(tmp_path / f"r{i}", np.maximum(x[i], 1)) for i in range(6)]
    slow = [_run(tmp_path / f"slow{i}", np.maximum(x[i] * 2, 1)) for i in range(3)]
    args = [a for i in range(3) for a in ("--base", str(runs[i]))]
    same = ttbench("compare", *args, *[a for i in range(3, 6) for a in ("--new", str(runs[i]))],
                   "--json", str(tmp_path / "same.json"))
    assert same.returncode == 0 and "whole runs (3" in same.stdout, same.stdout
    out = json.loads((tmp_path / "same.json").read_text())
    assert out["resampling"]["base"] == "runs" and len(out["base"]) == 3 and len(out["new"]) == 3
    worse = ttbench("compare", *args, *[a for r in slow for a in ("--new", str(r))])
    assert worse.returncode == 1 and "ttft_p95_ms" in worse.stdout.splitlines()[-1], worse.stdout
    both = ttbench("compare", str(runs[0]), str(runs[1]), "--base", str(runs[2]))
    assert both.returncode == 2 and "not both" in both.stderr
    one = ttbench("compare", str(runs[0]))
    assert one.returncode == 2 and "BASE NEW" in one.stderr
