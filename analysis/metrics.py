"""LLM latency and throughput metrics from attempt records (definitions in README, "Metrics")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .load import decode_chunk_column

PCTS = (50, 90, 95, 99, 99.9)
ANCHORS = {"ttft": "first_content_ms", "ttft_text": "first_text_ms", "ttft_tool": "first_tool_ms",
           "ttft_reasoning": "first_reasoning_ms", "first_event": "first_event_ms", "headers": "headers_ms"}


def dist(values: Any) -> dict[str, Any]:
    """n, mean, p50, p90, p95, p99, p99.9 and max (linear interpolation between order statistics)."""
    a = np.asarray(values, dtype=np.float64)
    a = a[~np.isnan(a)]
    if a.size == 0:
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p95": None, "p99": None, "p99.9": None, "max": None}
    ps = np.percentile(a, PCTS)
    out: dict[str, Any] = {"n": int(a.size), "mean": float(a.mean())}
    for p, v in zip(PCTS, ps, strict=True):
        out[f"p{p:g}"] = float(v)
    out["max"] = float(a.max())
    return out


@dataclass
class SLO:
    """Per-call objectives for goodput (None: not applied)."""

    ttft_ms: float | None = None
    e2e_ms: float | None = None
    tpot_ms: float | None = None
    itl_ms: float | None = None

    @classmethod
    def from_mapping(cls, m: dict[str, Any] | None) -> SLO:
        """From the scenario's `analysis.slo`."""
        m = m or {}
        return cls(**{k: float(m[k]) for k in ("ttft_ms", "e2e_ms", "tpot_ms", "itl_ms") if m.get(k) is not None})


@dataclass
class Options:
    """Analysis settings."""

    warmup_s: float = 0.0
    slo: SLO = field(default_factory=SLO)


def build_calls(att: pd.DataFrame, warmup_s: float = 0.0) -> pd.DataFrame:
    """One row per logical call: its final attempt plus call-level timings (cancelled calls kept, flagged)."""
    if att.empty:
        return att.assign(first_start=[], n_attempts=[], cancelled=[], e2e_ms=[])
    g = att.groupby("call_id", sort=False)
    first_start = g["t_start"].min()
    n_att = g["attempt"].max()
    final = att.sort_values(["call_id", "attempt"]).drop_duplicates("call_id", keep="last").set_index("call_id")
    calls = final.copy()
    calls["first_start"] = first_start
    calls["n_attempts"] = n_att
    calls["first_attempt_ok"] = calls["n_attempts"].eq(1) & calls["ok"]
    calls["cancelled"] = calls["error_kind"].eq("cancelled")
    offset = (calls["t_start"] - calls["first_start"]) * 1000.0
    calls["e2e_ms"] = offset + calls["end_ms"]
    calls["attempt_e2e_ms"] = calls["end_ms"]
    streamed = calls["stream"] & ~calls["dry_run"]
    for name, col in ANCHORS.items():
        calls[name + "_ms"] = np.where(streamed, offset + calls[col], np.nan)
    out_tok = calls["u_output"]
    calls["tpot_ms"] = np.where(streamed & (out_tok > 1),
                                (calls["end_ms"] - calls["first_content_ms"]) / (out_tok - 1), np.nan)
    textual = calls["endpoint"].isin(("chat", "messages", "gemini"))
    calls["out_tps"] = np.where(calls["ok"] & textual & (out_tok > 0) & (calls["end_ms"] > 0),
                                out_tok / (calls["end_ms"] / 1000.0), np.nan)
    calls["end_time"] = calls["t_start"] + calls["end_ms"] / 1000.0
    if warmup_s > 0 and len(calls):
        start = calls["first_start"].min()
        calls = calls[calls["first_start"] >= start + warmup_s]
    return calls


def itl_values(calls: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(pooled gaps between content chunks, per-call mean gap) for successful streamed calls."""
    sel = calls[calls["ok"] & calls["stream"] & ~calls["dry_run"] & (calls["chunks_n"] >= 2) & ~calls["replayed"]]
    if sel.empty:
        return np.empty(0), np.empty(0)
    times = decode_chunk_column(sel["chunks_us"])
    gaps = [np.diff(t) for t in times]
    pooled = np.concatenate(gaps) if gaps else np.empty(0)
    means = np.array([g.mean() for g in gaps if g.size])
    return pooled, means


def good_mask(calls: pd.DataFrame, slo: SLO, itl_mean: pd.Series | None = None) -> pd.Series:
    """Calls that succeeded and met every applicable SLO."""
    ok = calls["ok"].copy()
    if slo.ttft_ms is not None:
        ok &= ~(calls["ttft_ms"] > slo.ttft_ms)
    if slo.e2e_ms is not None:
        ok &= calls["e2e_ms"] <= slo.e2e_ms
    if slo.tpot_ms is not None:
        ok &= ~(calls["tpot_ms"] > slo.tpot_ms)
    if slo.itl_ms is not None and itl_mean is not None:
        ok &= ~(itl_mean.reindex(calls.index) > slo.itl_ms)
    return ok


def group_metrics(calls: pd.DataFrame, att: pd.DataFrame, duration_s: float, slo: SLO) -> dict[str, Any]:
    """Every metric for one group of calls (and their attempts)."""
    live = calls[~calls["cancelled"]]
    okc = live[live["ok"]]
    real = okc[~okc["dry_run"]]
    pooled, means = itl_values(live)
    errors = att[att["error_kind"].notna() & att["error_kind"].ne("cancelled")]["error_kind"].value_counts()
    good = good_mask(live, slo) if len(live) else live["ok"]
    d = max(duration_s, 1e-9)
    out_tokens = float(real.loc[real["endpoint"].isin(("chat", "messages", "gemini")), "u_output"].fillna(0).sum())
    in_tokens = float(real["u_input"].fillna(0).sum())
    return {
        "attempts": int(len(att)),
        "calls": int(len(live)),
        "cancelled_calls": int(calls["cancelled"].sum()),
        "successes": int(len(okc)),
        "failures": int(len(live) - len(okc)),
        "error_rate": (len(live) - len(okc)) / len(live) if len(live) else None,
        "errors": {str(k): int(v) for k, v in errors.items()},
        "retries": int((att["attempt"] > 1).sum()),
        "replays": int(att["replayed"].sum()),
        "requests_per_s": len(okc) / d,
        "attempts_per_s": len(att) / d,
        "ttft_ms": dist(okc["ttft_ms"]),
        "ttft_text_ms": dist(okc["ttft_text_ms"]),
        "ttft_tool_ms": dist(okc["ttft_tool_ms"]),
        "ttft_reasoning_ms": dist(okc["ttft_reasoning_ms"]),
        "first_event_ms": dist(okc["first_event_ms"]),
        "headers_ms": dist(okc["headers_ms"]),
        "ttft_first_attempt_ms": dist(okc.loc[okc["first_attempt_ok"], "ttft_ms"]),
        "itl_ms": dist(pooled),
        "itl_per_request_mean_ms": dist(means),
        "tpot_ms": dist(okc["tpot_ms"]),
        "e2e_ms": dist(okc["e2e_ms"]),
        "e2e_first_attempt_ms": dist(okc.loc[okc["first_attempt_ok"], "e2e_ms"]),
        "output_tokens_per_s_per_request": dist(okc["out_tps"]),
        "output_tokens_per_s": out_tokens / d,
        "input_tokens_per_s": in_tokens / d,
        "output_tokens": int(out_tokens),
        "input_tokens": int(in_tokens),
        "goodput_per_s": float(good.sum()) / d,
        "goodput_share": float(good.sum()) / len(live) if len(live) else None,
    }


def group_key(row: pd.Series) -> str:
    """endpoint / model / plain|stream."""
    return f"{row['endpoint']} {row['model']} {'stream' if row['stream'] else 'plain'}"


def compute(att: pd.DataFrame, opts: Options, dropped: int = 0) -> dict[str, Any]:
    """Overall and per endpoint x model x stream-mode metrics, and time series."""
    calls = build_calls(att, opts.warmup_s)
    if calls.empty:
        return {"empty": True, "overall": None, "groups": {}, "timeseries": [], "duration_s": 0.0}
    att = att[att["call_id"].isin(calls.index)]
    start = float(calls["first_start"].min())
    end = float(calls["end_time"].max())
    duration = max(end - start, 1e-9)
    overall = group_metrics(calls, att, duration, opts.slo)
    overall["dropped_arrivals"] = dropped
    groups: dict[str, Any] = {}
    label = np.where(calls["model"].eq("-"), calls["endpoint"],
                     calls["endpoint"] + " " + calls["model"] + " " + np.where(calls["stream"], "stream", "plain"))
    calls = calls.assign(group=label)
    att_group = att["call_id"].map(calls["group"])
    for key, sub in calls.groupby("group", sort=True):
        groups[str(key)] = group_metrics(sub, att[att_group == key], duration, opts.slo)
    return {"empty": False, "start": start, "end": end, "duration_s": duration, "overall": overall,
            "groups": groups, "timeseries": timeseries(calls, start), "calls_frame": calls}


def timeseries(calls: pd.DataFrame, start: float) -> list[dict[str, Any]]:
    """Per second of the run: calls started, finished ok, failed, TTFT p50/p95, output tokens, stage."""
    live = calls[~calls["cancelled"]]
    sec = np.floor(live["first_start"] - start).astype(int)
    out = []
    for s, sub in live.groupby(sec):
        okc = sub[sub["ok"]]
        tt = okc["ttft_ms"].dropna()
        out.append({
            "second": int(s), "calls": int(len(sub)), "ok": int(len(okc)), "failed": int(len(sub) - len(okc)),
            "ttft_p50_ms": float(tt.median()) if len(tt) else None,
            "ttft_p95_ms": float(np.percentile(tt, 95)) if len(tt) else None,
            "e2e_p50_ms": float(okc["e2e_ms"].median()) if len(okc) else None,
            "output_tokens": int(okc["u_output"].fillna(0).sum()),
            "stage": None if sub["stage"].isna().all() else int(sub["stage"].dropna().iloc[0]),
        })
    return out


def finite(x: Any) -> Any:
    """NaN and infinities to None, recursively, for JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    if isinstance(x, np.floating):
        return finite(float(x))
    if isinstance(x, np.integer):
        return int(x)
    return x
