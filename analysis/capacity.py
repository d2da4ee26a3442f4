"""Capacity planning over load stages: throughput, latency, the maximum sustainable rate, the knee.

Each stage's figures leave out the calls that started in its first `settle_s` seconds (the transient after a rate
change) and, for the last stage, the calls that started after the stages' total duration (the drain). Stages a sweep
stopped early never ran: they are listed as such and count in none of the verdicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ttformats.durations import parse_duration
from ttformats.sweep import early_stop_verdict  # the rule the load generator stops a sweep with

from .load import InputError
from .metrics import SLO, good_mask

__all__ = ["KNEE_FACTOR", "SERVED_SHARE", "SETTLE_S", "analyse", "early_stop_verdict", "stage_durations"]

SERVED_SHARE = 0.95
KNEE_FACTOR = 2.0
SETTLE_S = 2.0


def _seconds(v: Any, where: str) -> float:
    try:
        return parse_duration(v)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None


def stage_durations(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """The scenario's stages: duration (s), rate and users of each."""
    out = []
    for i, st in enumerate(scenario.get("stages") or []):
        st = st if isinstance(st, dict) else {}
        out.append({"duration_s": _seconds(st.get("duration"), f"stages[{i}].duration"), "rate": st.get("rate"),
                    "users": st.get("users")})
    return out


def analyse(calls: pd.DataFrame, scenario: dict[str, Any], slo: SLO, dropped_by_stage: dict[int, int] | None = None,
            slo_share: float = SERVED_SHARE, settle_s: float = SETTLE_S,
            early_stop: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Per stage: offered, achieved, latency, errors, goodput (settle window and drain left out); then the max
    sustainable rate, knee and SLO stage over the stages that ran. `early_stop`: harness.json's."""
    stages = stage_durations(scenario)
    if not stages or calls.empty:
        return None
    live = calls[~calls["cancelled"]]
    start = float(live["first_start"].min()) if len(live) else 0.0
    bounds = np.cumsum([0.0] + [s["duration_s"] for s in stages])
    rel = (live["first_start"] - start).to_numpy(dtype=np.float64)
    by_time = np.searchsorted(bounds, rel, side="right") - 1
    stage_idx = live["stage"].where(live["stage"].notna(), pd.Series(by_time, index=live.index)).to_numpy()
    stopped_after = None
    if isinstance(early_stop, dict) and isinstance(early_stop.get("stage"), int):
        stopped_after = int(early_stop["stage"])
    last_start = float(rel.max()) if rel.size else 0.0
    rows = []
    for i, st in enumerate(stages):
        mine = stage_idx == i
        if i == len(stages) - 1:  # calls past the last stage (no stage of their own) are its drain
            mine = mine | (stage_idx > i)
        settling = mine & (rel < bounds[i] + settle_s)
        draining = mine & ~settling & (rel >= bounds[-1]) if i == len(stages) - 1 else np.zeros_like(mine)
        ran = not (stopped_after is not None and i > stopped_after) and (mine.any() or bounds[i] <= last_start)
        sub = live[mine & ~settling & ~draining]
        okc = sub[sub["ok"]]
        d = max(st["duration_s"] - settle_s, 0.0)
        row: dict[str, Any] = {
            "stage": i, "duration_s": st["duration_s"], "offered_rps": st["rate"], "users": st["users"],
            "ran": bool(ran), "measured_s": d, "excluded": {"settle": int(settling.sum()), "drain": int(draining.sum())},
        }
        if not ran or d <= 0:
            rows.append(row | {"calls": int(len(sub)), "ok": int(len(okc)), "achieved_rps": None,
                               "served_share": None, "error_rate": None, "rate_limited": 0, "ttft_p50_ms": None,
                               "ttft_p95_ms": None, "e2e_p50_ms": None, "e2e_p95_ms": None, "goodput_rps": None,
                               "goodput_share": None, "mean_in_flight": None})
            continue
        offered_calls = (st["rate"] * d) if st["rate"] is not None else len(sub) + (dropped_by_stage or {}).get(i, 0)
        good = good_mask(sub, slo) if len(sub) else sub["ok"]
        tt = okc["ttft_ms"].dropna()
        e2e = okc["e2e_ms"].dropna()
        rows.append(row | {
            "calls": int(len(sub)), "ok": int(len(okc)), "achieved_rps": len(okc) / d,
            "served_share": (len(okc) / offered_calls) if offered_calls else None,
            "error_rate": (len(sub) - len(okc)) / len(sub) if len(sub) else None,
            "rate_limited": int((sub["error_kind"] == "http_429").sum()),
            "ttft_p50_ms": float(tt.median()) if len(tt) else None,
            "ttft_p95_ms": float(np.percentile(tt, 95)) if len(tt) else None,
            "e2e_p50_ms": float(e2e.median()) if len(e2e) else None,
            "e2e_p95_ms": float(np.percentile(e2e, 95)) if len(e2e) else None,
            "goodput_rps": float(good.sum()) / d, "goodput_share": float(good.sum()) / len(sub) if len(sub) else None,
            "mean_in_flight": float(okc["e2e_ms"].sum() / 1000.0 / d) if len(okc) else 0.0,
        })
    measured = [r for r in rows if r["ran"] and r["achieved_rps"] is not None]
    sustainable = [r for r in measured if r["served_share"] is not None and r["served_share"] >= SERVED_SHARE]
    mst = max(sustainable, key=lambda r: r["offered_rps"] or r["achieved_rps"]) if sustainable else None
    base = next((r["ttft_p95_ms"] for r in measured if r["ttft_p95_ms"] is not None), None)
    knee_rows = [r for r in measured if base is not None and r["ttft_p95_ms"] is not None
                 and r["ttft_p95_ms"] <= KNEE_FACTOR * base]
    knee = max(knee_rows, key=lambda r: r["offered_rps"] or r["achieved_rps"]) if knee_rows else None
    slo_rows = [r for r in measured if r["goodput_share"] is not None and r["goodput_share"] >= slo_share]
    at_slo = max(slo_rows, key=lambda r: r["offered_rps"] or r["achieved_rps"]) if slo_rows else None

    def pick(r: dict[str, Any] | None) -> dict[str, Any] | None:
        if r is None:
            return None
        return {"stage": r["stage"], "offered_rps": r["offered_rps"], "achieved_rps": r["achieved_rps"],
                "users": r["users"] if r["users"] is not None else round(r["mean_in_flight"], 2)}

    stop = None
    if stopped_after is not None:
        stop = {"stage": stopped_after, "reason": str(early_stop.get("reason") or "") if early_stop else "",
                "stages_not_run": [r["stage"] for r in rows if not r["ran"]]}
    return {
        "stages": rows,
        "max_sustainable": pick(mst),
        "max_sustainable_rps": (mst["offered_rps"] or mst["achieved_rps"]) if mst else None,
        "knee": pick(knee),
        "at_slo": pick(at_slo),
        "early_stop": stop,
        "measured_stages": len(measured),
        "definitions": {"served_share_min": SERVED_SHARE, "knee_factor": KNEE_FACTOR, "slo_share_min": slo_share,
                        "settle_s": settle_s},
    }
