"""Two runs side by side: deltas with bootstrap confidence intervals, and regressions beyond thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .load import InputError, load_records
from .metrics import build_calls

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


@dataclass
class Thresholds:
    """How much worse counts as a regression: relative for latencies, absolute for the error rate."""

    latency_rel: float = 0.10
    error_rate_abs: float = 0.01
    confidence: float = 0.95
    resamples: int = 400


def _values(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "records.jsonl"
    if not path.exists():
        raise InputError(f"{run_dir}: no records.jsonl (not a run folder)")
    calls = build_calls(load_records(path))
    calls = calls[~calls["cancelled"]] if len(calls) else calls
    return calls.assign(error=(~calls["ok"]).astype(float)) if len(calls) else calls


def _stat(a: np.ndarray, pct: float | None) -> float:
    return float(np.percentile(a, pct)) if pct is not None else float(a.mean())


def compare(base_dir: str | Path, new_dir: str | Path, th: Thresholds | None = None, seed: int = 0) -> dict[str, Any]:
    """Per metric: base, new, delta, a bootstrap CI of the delta, and whether it is a regression."""
    th = th or Thresholds()
    base, new = _values(Path(base_dir)), _values(Path(new_dir))
    rng = np.random.default_rng(seed)
    rows = []
    for name, (col, pct, worse) in METRICS.items():
        a = base[col].dropna().to_numpy() if len(base) else np.empty(0)
        b = new[col].dropna().to_numpy() if len(new) else np.empty(0)
        if pct is not None:
            a = a[base.loc[base[col].notna(), "ok"].to_numpy()] if a.size else a
            b = b[new.loc[new[col].notna(), "ok"].to_numpy()] if b.size else b
        if a.size < 2 or b.size < 2:
            rows.append({"metric": name, "base": None, "new": None, "delta": None, "ci": None, "regression": False})
            continue
        va, vb = _stat(a, pct), _stat(b, pct)
        boots = np.array([_stat(rng.choice(b, b.size), pct) - _stat(rng.choice(a, a.size), pct)
                          for _ in range(th.resamples)])
        alpha = (1 - th.confidence) / 2
        lo, hi = (float(x) for x in np.quantile(boots, [alpha, 1 - alpha]))
        if name == "error_rate":
            regression = lo > th.error_rate_abs
        elif worse == "higher":
            regression = va > 0 and lo / va > th.latency_rel
        else:
            regression = va > 0 and -hi / va > th.latency_rel
        rows.append({"metric": name, "base": va, "new": vb, "delta": vb - va,
                     "delta_rel": (vb - va) / va if va else None, "ci": [lo, hi], "regression": bool(regression)})
    return {"base": str(base_dir), "new": str(new_dir), "rows": rows,
            "thresholds": {"latency_rel": th.latency_rel, "error_rate_abs": th.error_rate_abs,
                           "confidence": th.confidence},
            "regressions": [r["metric"] for r in rows if r["regression"]]}


def render(result: dict[str, Any]) -> str:
    """The comparison as a text table."""
    lines = [f"{'metric':<14} {'base':>10} {'new':>10} {'delta':>10} {'rel':>8}   {'95% CI of delta':<24} verdict"]
    for r in result["rows"]:
        if r["base"] is None:
            lines.append(f"{r['metric']:<14} {'–':>10} {'–':>10} {'–':>10} {'':>8}   {'(too few samples)':<24}")
            continue
        ci = f"[{r['ci'][0]:+.3g}, {r['ci'][1]:+.3g}]"
        rel = f"{r['delta_rel']:+.1%}" if r.get("delta_rel") is not None else ""
        verdict = "REGRESSION" if r["regression"] else "ok"
        lines.append(f"{r['metric']:<14} {r['base']:>10.4g} {r['new']:>10.4g} {r['delta']:>+10.3g} {rel:>8}   "
                     f"{ci:<24} {verdict}")
    lines.append("regressions: " + (", ".join(result["regressions"]) or "none"))
    return "\n".join(lines)
