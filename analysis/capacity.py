"""Capacity planning over load stages: throughput, latency, the maximum sustainable rate, the knee."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .metrics import SLO, good_mask

SERVED_SHARE = 0.95
KNEE_FACTOR = 2.0


def _stages(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    from locustfiles.scenario import _V  # the duration syntax is the scenario's own

    v = _V("scenario")
    out = []
    for st in scenario.get("stages") or []:
        out.append({"duration_s": v.duration("stages.duration", st.get("duration")), "rate": st.get("rate"),
                    "users": st.get("users")})
    return out


def analyse(calls: pd.DataFrame, scenario: dict[str, Any], slo: SLO, dropped_by_stage: dict[int, int] | None = None,
            slo_share: float = SERVED_SHARE) -> dict[str, Any] | None:
    """Per stage: offered, achieved, latency, errors, goodput; then the max sustainable rate, knee and SLO stage."""
    stages = _stages(scenario)
    if not stages or calls.empty:
        return None
    live = calls[~calls["cancelled"]]
    start = float(live["first_start"].min()) if len(live) else 0.0
    bounds = np.cumsum([0.0] + [s["duration_s"] for s in stages])
    by_time = np.searchsorted(bounds, live["first_start"] - start, side="right") - 1
    stage_idx = live["stage"].where(live["stage"].notna(), pd.Series(by_time, index=live.index))
    rows = []
    for i, st in enumerate(stages):
        sub = live[stage_idx == i]
        okc = sub[sub["ok"]]
        d = st["duration_s"]
        offered_calls = (st["rate"] * d) if st["rate"] is not None else len(sub) + (dropped_by_stage or {}).get(i, 0)
        good = good_mask(sub, slo) if len(sub) else sub["ok"]
        tt = okc["ttft_ms"].dropna()
        e2e = okc["e2e_ms"].dropna()
        rows.append({
            "stage": i, "duration_s": d, "offered_rps": st["rate"], "users": st["users"],
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
    sustainable = [r for r in rows if r["served_share"] is not None and r["served_share"] >= SERVED_SHARE]
    mst = max(sustainable, key=lambda r: r["offered_rps"] or r["achieved_rps"]) if sustainable else None
    base = next((r["ttft_p95_ms"] for r in rows if r["ttft_p95_ms"] is not None), None)
    knee_rows = [r for r in rows if base is not None and r["ttft_p95_ms"] is not None
                 and r["ttft_p95_ms"] <= KNEE_FACTOR * base]
    knee = max(knee_rows, key=lambda r: r["offered_rps"] or r["achieved_rps"]) if knee_rows else None
    slo_rows = [r for r in rows if r["goodput_share"] is not None and r["goodput_share"] >= slo_share]
    at_slo = max(slo_rows, key=lambda r: r["offered_rps"] or r["achieved_rps"]) if slo_rows else None

    def pick(r: dict[str, Any] | None) -> dict[str, Any] | None:
        if r is None:
            return None
        return {"stage": r["stage"], "offered_rps": r["offered_rps"], "achieved_rps": r["achieved_rps"],
                "users": r["users"] if r["users"] is not None else round(r["mean_in_flight"], 2)}

    return {
        "stages": rows,
        "max_sustainable": pick(mst),
        "max_sustainable_rps": (mst["offered_rps"] or mst["achieved_rps"]) if mst else None,
        "knee": pick(knee),
        "at_slo": pick(at_slo),
        "definitions": {"served_share_min": SERVED_SHARE, "knee_factor": KNEE_FACTOR, "slo_share_min": slo_share},
    }
