"""Runs side by side: deltas with bootstrap confidence intervals, and regressions beyond thresholds.

Latencies under load are correlated in time (a slow spell slows every call in it), so resampling calls as if they
were independent gives intervals far too narrow, and a gate on them flaps. Each side is resampled as it was drawn:

- one run: a moving-block bootstrap over its calls in start order; the block length is the first lag at which the
  sample autocorrelation of the metric's series falls below 0.1 (1 for independent calls; at most a quarter of the
  calls), so a block holds a slow spell whole;
- several runs: whole runs, drawn with replacement (calls of one run are never taken as independent of each other);
- `iid` (on request only): calls drawn independently, as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .load import InputError
from .metrics import build_calls
from .records import load_records

#: metric -> (column, percentile or None for a rate, "higher is worse" or "lower is worse")
METRICS: dict[str, tuple[str, float | None, str]] = {
    "ttft_p50_ms": ("ttft_ms", 50, "higher"),
    "ttft_p95_ms": ("ttft_ms", 95, "higher"),
    "ttft_p99_ms": ("ttft_ms", 99, "higher"),
    "e2e_p50_ms": ("e2e_ms", 50, "higher"),
    "e2e_p95_ms": ("e2e_ms", 95, "higher"),
    "tpot_p50_ms": ("tpot_ms", 50, "higher"),
    "out_tps_p50": ("out_tps", 50, "lower"),
    "error_rate": ("error", None, "higher"),
}
RESAMPLING = ("auto", "block", "runs", "iid")
ACF_BELOW = 0.1  # a block ends where the autocorrelation falls below this


@dataclass
class Thresholds:
    """How much worse counts as a regression: relative for latencies, absolute for the error rate."""

    latency_rel: float = 0.10
    error_rate_abs: float = 0.01
    confidence: float = 0.95
    resamples: int = 400


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation of x at lags 0..max_lag (by FFT; a constant series: zero past lag 0)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    d = x - x.mean()
    var = float(d @ d)
    if n < 2 or var <= (1e-9 * max(1.0, float(np.abs(x).max()))) ** 2 * n:  # constant, up to rounding
        out = np.zeros(max_lag + 1)
        out[0] = 1.0
        return out
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(d, size)
    acov = np.fft.irfft(f * np.conj(f), size)[:max_lag + 1]
    return acov / var


def block_length(x: np.ndarray, below: float = ACF_BELOW) -> int:
    """The first lag at which the series' sample autocorrelation falls below `below` (1: already at lag 1),
    at most a quarter of its length."""
    n = len(x)
    cap = max(1, n // 4)
    if cap == 1:
        return 1
    acf = autocorrelation(x, cap)
    low = np.flatnonzero(acf[1:] < below)
    return int(low[0]) + 1 if low.size else cap


def _block_sample(rng: np.random.Generator, x: np.ndarray, b: int) -> np.ndarray:
    """A moving-block resample of x: blocks of b consecutive values from random starts, cut to len(x)."""
    n = x.size
    if b <= 1:
        return x[rng.integers(0, n, n)]
    k = math.ceil(n / b)
    starts = rng.integers(0, n - b + 1, k)
    return x[(starts[:, None] + np.arange(b)).ravel()[:n]]


Stat = Callable[[np.ndarray], float]


def _percentile_stat(pct: float | None) -> Stat:
    if pct is None:
        return lambda a: float(a.mean())
    return lambda a: float(np.percentile(a, pct))


def side_method(runs: Sequence[np.ndarray], requested: str) -> str:
    """The resampling a side gets: whole runs when it has several (auto), else moving blocks, or as requested."""
    if requested == "auto":
        return "runs" if len(runs) >= 2 else "block"
    if requested == "runs" and len(runs) < 2:
        return "block"
    return requested


def bootstrap(runs: Sequence[np.ndarray], stat: Stat, method: str, resamples: int,
              rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """`resamples` bootstrap replicates of stat over one side's runs (each an array in start order), and what
    resampling it got: {"method", "runs", "block_calls" (per run, block only)}."""
    runs = [np.asarray(r, dtype=np.float64) for r in runs if len(r)]
    info: dict[str, Any] = {"method": method, "runs": len(runs)}
    out = np.empty(resamples)
    if method == "runs":
        for i in range(resamples):
            pick = rng.integers(0, len(runs), len(runs))
            out[i] = stat(np.concatenate([runs[j] for j in pick]))
        return out, info
    pooled = np.concatenate(runs) if runs else np.empty(0)
    if method == "iid":
        for i in range(resamples):
            out[i] = stat(pooled[rng.integers(0, pooled.size, pooled.size)])
        return out, info
    blocks = [block_length(r) for r in runs]
    info["block_calls"] = blocks
    for i in range(resamples):
        parts = [_block_sample(rng, r, b) for r, b in zip(runs, blocks, strict=True)]
        out[i] = stat(parts[0] if len(parts) == 1 else np.concatenate(parts))
    return out, info


def delta_interval(base: Sequence[np.ndarray], new: Sequence[np.ndarray], pct: float | None,
                   resampling: str = "auto", th: Thresholds | None = None,
                   rng: np.random.Generator | None = None) -> dict[str, Any]:
    """base and new statistic (pooled over each side's runs), the delta, its bootstrap CI and how each side
    was resampled."""
    th = th or Thresholds()
    rng = rng or np.random.default_rng(0)
    stat = _percentile_stat(pct)
    va = stat(np.concatenate([np.asarray(r, dtype=np.float64) for r in base]))
    vb = stat(np.concatenate([np.asarray(r, dtype=np.float64) for r in new]))
    mb, mn = side_method(base, resampling), side_method(new, resampling)
    boot_b, info_b = bootstrap(new, stat, mn, th.resamples, rng)
    boot_a, info_a = bootstrap(base, stat, mb, th.resamples, rng)
    alpha = (1 - th.confidence) / 2
    lo, hi = (float(x) for x in np.quantile(boot_b - boot_a, [alpha, 1 - alpha]))
    return {"base": va, "new": vb, "delta": vb - va, "ci": [lo, hi], "resampling": {"base": info_a, "new": info_b}}


def _calls(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "records.jsonl"
    if not Path(run_dir).is_dir() or not path.exists():
        raise InputError(f"{run_dir}: no records.jsonl (not a run folder)")
    calls = build_calls(load_records(path))
    if not len(calls):
        return calls
    calls = calls[~calls["cancelled"]].sort_values("first_start", kind="stable")
    return calls.assign(error=(~calls["ok"]).astype(float))


def _series(calls: pd.DataFrame, col: str, pct: float | None) -> np.ndarray:
    """The metric's values in start order: successful calls' figures, or every call's error flag."""
    if not len(calls):
        return np.empty(0)
    sel = calls[col].notna()
    if pct is not None:
        sel &= calls["ok"]
    return calls.loc[sel, col].to_numpy(dtype=np.float64)


def _dirs(d: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(d)] if isinstance(d, str | Path) else [Path(x) for x in d]


def compare(base_dir: str | Path | Sequence[str | Path], new_dir: str | Path | Sequence[str | Path],
            th: Thresholds | None = None, seed: int = 0, resampling: str = "auto") -> dict[str, Any]:
    """Per metric: base, new, delta, a bootstrap CI of the delta, and whether it is a regression. Each side is
    one run folder or several (of the same scenario); `resampling`: auto, block, runs or iid."""
    th = th or Thresholds()
    if resampling not in RESAMPLING:
        raise InputError(f"resampling: expected one of {', '.join(RESAMPLING)}, got {resampling!r}")
    bases, news = _dirs(base_dir), _dirs(new_dir)
    if not bases or not news:
        raise InputError("compare: needs at least one base and one new run folder")
    base_calls, new_calls = [_calls(d) for d in bases], [_calls(d) for d in news]
    rng = np.random.default_rng(seed)
    rows = []
    for name, (col, pct, worse) in METRICS.items():
        a = [_series(c, col, pct) for c in base_calls]
        b = [_series(c, col, pct) for c in new_calls]
        if sum(map(len, a)) < 2 or sum(map(len, b)) < 2:
            rows.append({"metric": name, "base": None, "new": None, "delta": None, "ci": None, "regression": False,
                         "resampling": None})
            continue
        r = delta_interval([x for x in a if len(x)], [x for x in b if len(x)], pct, resampling, th, rng)
        va, (lo, hi) = r["base"], r["ci"]
        if name == "error_rate":
            regression = lo > th.error_rate_abs
        elif worse == "higher":
            regression = va > 0 and lo / va > th.latency_rel
        else:
            regression = va > 0 and -hi / va > th.latency_rel
        rows.append({"metric": name, "base": va, "new": r["new"], "delta": r["delta"],
                     "delta_rel": r["delta"] / va if va else None, "ci": [lo, hi], "regression": bool(regression),
                     "resampling": r["resampling"]})
    return {"base": [str(d) for d in bases], "new": [str(d) for d in news], "rows": rows,
            "resampling": {"requested": resampling, "base": side_method(bases, resampling),
                           "new": side_method(news, resampling), "acf_below": ACF_BELOW,
                           "resamples": th.resamples},
            "thresholds": {"latency_rel": th.latency_rel, "error_rate_abs": th.error_rate_abs,
                           "confidence": th.confidence},
            "regressions": [r["metric"] for r in rows if r["regression"]]}


def _describe(method: str, runs: int) -> str:
    return {"runs": f"whole runs ({runs}, drawn with replacement)",
            "block": f"moving blocks of calls in start order (block = first lag with autocorrelation < {ACF_BELOW})"
            + (f", within each of {runs} runs" if runs > 1 else ""),
            "iid": "calls drawn independently (ignores correlation in time: intervals too narrow under load)"}[method]


def _how(info: dict[str, Any] | None) -> str:
    if not info:
        return ""
    if info["method"] == "block":
        return "b" + "+".join(str(b) for b in info.get("block_calls") or [])
    return "runs" if info["method"] == "runs" else "iid"


def render(result: dict[str, Any]) -> str:
    """The comparison as a text table, with the resampling each side got."""
    rs = result.get("resampling") or {}
    lines = []
    if rs:
        b, n = _describe(rs["base"], len(result["base"])), _describe(rs["new"], len(result["new"]))
        lines.append(f"resampling: {b if b == n else f'base {b}; new {n}'}; {rs.get('resamples')} resamples")
    lines.append(f"{'metric':<14} {'base':>10} {'new':>10} {'delta':>10} {'rel':>8}   {'95% CI of delta':<24} "
                 f"{'verdict':<10} resampled (base/new)")
    for r in result["rows"]:
        if r["base"] is None:
            lines.append(f"{r['metric']:<14} {'–':>10} {'–':>10} {'–':>10} {'':>8}   {'(too few samples)':<24}")
            continue
        ci = f"[{r['ci'][0]:+.3g}, {r['ci'][1]:+.3g}]"
        rel = f"{r['delta_rel']:+.1%}" if r.get("delta_rel") is not None else ""
        verdict = "REGRESSION" if r["regression"] else "ok"
        how = r.get("resampling") or {}
        lines.append(f"{r['metric']:<14} {r['base']:>10.4g} {r['new']:>10.4g} {r['delta']:>+10.3g} {rel:>8}   "
                     f"{ci:<24} {verdict:<10} {_how(how.get('base'))}/{_how(how.get('new'))}")
    lines.append("regressions: " + (", ".join(result["regressions"]) or "none"))
    return "\n".join(lines)
