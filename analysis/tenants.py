"""Per-tenant metrics, and isolation: whether one tenant's bursts slow another tenant's calls (README, "Isolation")."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ttformats.calls import counts_as_attempt

from .compare import bootstrap
from .limits import UNNAMED
from .metrics import SLO, group_metrics, text_calls

#: calls each side of the isolation ratio needs (a p95 of fewer is noise)
MIN_CALLS = 20
RESAMPLES = 2000
CONFIDENCE = 0.95
REFUSALS = ("rate_limit", "quota")


def _labels(frame: pd.DataFrame) -> pd.Series:
    """Each row's tenant label (records without one: the unnamed tenant)."""
    return frame["tenant"].astype(object).where(frame["tenant"].notna(), UNNAMED)


def tenant_metrics(calls: pd.DataFrame, att: pd.DataFrame, duration_s: float,
                   slo: SLO) -> dict[str, Any] | None:
    """Every metric of each tenant's calls, with its refusals by kind; None when no record names a tenant."""
    if "tenant" not in att or not att["tenant"].notna().any() or calls.empty:
        return None
    att = att[att["call_id"].isin(calls.index)]
    call_labels, att_labels = _labels(calls), _labels(att)
    out: dict[str, Any] = {}
    for label in sorted(set(call_labels.tolist())):
        a = att[att_labels == label]
        m = group_metrics(calls[call_labels == label], a, duration_s, slo)
        counted = a[counts_as_attempt(a["error_kind"], a["sent"])] if "sent" in a else a
        refusals = counted["refusal"].value_counts()
        m["refusals"] = {k: int(refusals.get(k, 0)) for k in REFUSALS}
        out[label] = m
    return out


def _in_flight(att: pd.DataFrame, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The spells (starts, ends; sorted, disjoint) during which the tenant had at least one attempt in flight."""
    a = att.loc[_labels(att).eq(label) & att["t_start"].notna(), ["t_start", "end_ms"]]
    s = a["t_start"].to_numpy(dtype=np.float64)
    e = s + np.nan_to_num(a["end_ms"].to_numpy(dtype=np.float64), nan=0.0) / 1000.0
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    starts: list[float] = []
    ends: list[float] = []
    for lo, hi in zip(s.tolist(), e.tolist(), strict=True):
        if starts and lo <= ends[-1]:
            ends[-1] = max(ends[-1], hi)
        else:
            starts.append(lo)
            ends.append(hi)
    return np.array(starts), np.array(ends)


def during_bursts(first_start: np.ndarray, att: pd.DataFrame, burst: str) -> np.ndarray:
    """Which of these call starts fell while the burst tenant had an attempt in flight."""
    starts, ends = _in_flight(att, burst)
    if not starts.size:
        return np.zeros(len(first_start), dtype=bool)
    k = np.searchsorted(starts, first_start, "right") - 1
    return (k >= 0) & (first_start <= ends[np.maximum(k, 0)])


def _p95(a: np.ndarray) -> float:
    return float(np.percentile(a, 95))


def isolation(calls: pd.DataFrame, att: pd.DataFrame,
              settings: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, np.ndarray]]:
    """The steady tenant's TTFT during and outside the burst tenant's bursts (summary `isolation`), and samples."""
    if not settings:
        return None, {}
    steady, burst = str(settings["steady"]), str(settings["burst"])
    resamples = int(settings.get("resamples", RESAMPLES))
    confidence = float(settings.get("confidence", CONFIDENCE))
    seed = int(settings.get("seed", 0))
    out: dict[str, Any] = {"steady": steady, "burst": burst, "during": {"n": 0, "ttft_p95_ms": None},
                           "outside": {"n": 0, "ttft_p95_ms": None}, "ratio": None, "ci": None,
                           "confidence": confidence, "resamples": resamples, "seed": seed, "n": 0, "reason": None}
    if calls.empty or "tenant" not in calls:
        out["reason"] = "no calls"
        return out, {}
    labels = _labels(calls)
    mine = calls[labels.eq(steady) & ~calls["cancelled"] & calls["ok"] & calls["ttft_ms"].notna()
                 & text_calls(calls)]
    if not _labels(att).eq(burst).any():
        out["reason"] = f"no attempts of the burst tenant {burst!r}"
    during = during_bursts(mine["first_start"].to_numpy(dtype=np.float64), att, burst)
    ttft = mine["ttft_ms"].to_numpy(dtype=np.float64)
    samples = {"during": ttft[during], "outside": ttft[~during]}
    for side, v in samples.items():
        out[side] = {"n": int(v.size), "ttft_p95_ms": _p95(v) if v.size else None}
    out["n"] = min(v.size for v in samples.values())
    if out["reason"] is None and out["n"] < MIN_CALLS:
        out["reason"] = (f"too few streamed successful calls of {steady!r}: {samples['during'].size} during the "
                         f"bursts, {samples['outside'].size} outside (each side needs {MIN_CALLS})")
    if out["reason"] is not None:
        return out, samples
    d, o = out["during"]["ttft_p95_ms"], out["outside"]["ttft_p95_ms"]
    if not o:
        out["reason"] = "the TTFT p95 outside the bursts is 0"
        return out, samples
    out["ratio"] = d / o
    rng = np.random.default_rng(seed)
    boot_d, _ = bootstrap([samples["during"]], _p95, "iid", resamples, rng)
    boot_o, _ = bootstrap([samples["outside"]], _p95, "iid", resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = boot_d / boot_o
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [alpha, 1.0 - alpha])
    out["ci"] = [float(lo), float(hi)]
    return out, samples
