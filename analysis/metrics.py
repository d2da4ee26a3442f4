"""LLM latency and throughput metrics from attempt records (definitions in README, "Metrics")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ttformats.calls import call_e2e_ms, call_output_tps, call_tpot_ms, call_ttft_ms, counts_as_attempt

from .chunks import call_gap_figures, chunk_gap_stats

PCTS = (50, 90, 95, 99, 99.9)
ANCHORS = {"ttft": "first_content_ms", "ttft_text": "first_text_ms", "ttft_tool": "first_tool_ms",
           "ttft_reasoning": "first_reasoning_ms", "first_event": "first_event_ms", "headers": "headers_ms"}



#: the text endpoints of version 1 records (whose hand-made copies may lack max_tokens)
V1_TEXT_ENDPOINTS = ("chat", "messages", "gemini")


def text_calls(frame: pd.DataFrame) -> pd.Series:
    """Calls of endpoints that generate text, whatever the dialect: the load generator sends them a token cap
    (`max_tokens`), and never sends one to embeddings, images or model listings."""
    return frame["max_tokens"].notna() | frame["endpoint"].isin(V1_TEXT_ENDPOINTS)

def dist(values: Any) -> dict[str, Any]:
    """n, mean, p50, p90, p95, p99, p99.9 and max (linear interpolation between order statistics)."""
    a = values.to_numpy(dtype=np.float64) if isinstance(values, pd.Series) else np.asarray(values, dtype=np.float64)
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
    return _calls(att, warmup_s)[0]


def _calls(att: pd.DataFrame, warmup_s: float) -> tuple[pd.DataFrame, np.ndarray | None]:
    """build_calls, and for each attempt the row of its call in the result (-1: dropped by the warm-up);
    no rows (None) when the call ids are not all strings: then the general, slower path runs."""
    if att.empty:
        return att.assign(first_start=[], n_attempts=[], cancelled=[], e2e_ms=[]), None
    plan = _plan(att, warmup_s)
    if plan is None:
        g = att.groupby("call_id", sort=False)
        first_start = g["t_start"].min()
        n_att = g["attempt"].max()
        final = att.sort_values(["call_id", "attempt"]).drop_duplicates("call_id", keep="last").set_index("call_id")
        calls = _call_columns(final.copy(), first_start, n_att)
        if warmup_s > 0 and len(calls):
            start = calls["first_start"].min()
            calls = calls[calls["first_start"] >= start + warmup_s]
        return calls, None
    return _plan_frame(att, plan), plan.rows


@dataclass
class _Plan:
    """Which attempt row is each logical call's final one, in build_calls' order (string call ids)."""

    final: np.ndarray  # the att row of each call's last attempt (calls after the warm-up only)
    first_start: np.ndarray
    n_att: np.ndarray
    rows: np.ndarray  # for each att row, its call's row (-1: dropped by the warm-up)


def _plan(att: pd.DataFrame, warmup_s: float) -> _Plan | None:
    """The rows sort_values(["call_id", "attempt"]).drop_duplicates(keep="last") picks, in its order, from
    integer codes of the call ids (no string sorts and hashes over every attempt); None unless all are strings."""
    ids = att["call_id"]
    if ids.isna().any() or pd.api.types.infer_dtype(ids, skipna=False) != "string":
        return None
    codes = _sorted_codes(ids)
    attempt = att["attempt"].to_numpy()
    order = np.lexsort((attempt, codes))  # stable, as sort_values: equal keys keep the file's order
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(order)] - 1
    first_start = np.fmin.reduceat(att["t_start"].to_numpy()[order], starts)  # NaN skipped, as groupby's min
    n_att = np.maximum.reduceat(attempt[order], starts)
    final = order[ends]
    if warmup_s > 0:
        kept = first_start >= np.fmin.reduce(first_start) + warmup_s  # the first start: pandas' min, NaN skipped
        row = np.cumsum(kept) - 1
        row[~kept] = -1
        return _Plan(final[kept], first_start[kept], n_att[kept], row[codes])
    return _Plan(final, first_start, n_att, codes)


def _plan_frame(att: pd.DataFrame, plan: _Plan) -> pd.DataFrame:
    return indexed_calls(att.take(plan.final), plan.first_start, plan.n_att)


def indexed_calls(final: pd.DataFrame, first_start: Any, n_att: Any) -> pd.DataFrame:
    """_call_columns of the calls' final attempts (arrays in their order), then indexed by call id (computed before
    the index is set: pandas looks each numpy call's probes up in a string index, at a cost that grows with it)."""
    return _call_columns(final.reset_index(drop=True), first_start, n_att).set_index("call_id")


def _sorted_codes(values: pd.Series) -> np.ndarray:
    """pd.factorize(values, sort=True)[0] for strings: the distinct values sorted by Python's own sort."""
    codes, uniques = pd.factorize(values)
    keys = np.asarray(uniques, dtype=object).tolist()
    rank = np.empty(len(keys), dtype=np.int64)
    rank[sorted(range(len(keys)), key=keys.__getitem__)] = np.arange(len(keys))
    return rank[codes]


def _call_columns(calls: pd.DataFrame, first_start: Any, n_att: Any) -> pd.DataFrame:
    calls["first_start"] = first_start
    calls["n_attempts"] = n_att
    calls["first_attempt_ok"] = calls["n_attempts"].eq(1) & calls["ok"]
    calls["cancelled"] = calls["error_kind"].eq("cancelled")
    first, t_start = calls["first_start"], calls["t_start"]
    calls["e2e_ms"] = call_e2e_ms(first, t_start, calls["end_ms"])
    calls["attempt_e2e_ms"] = calls["end_ms"]
    streamed = calls["stream"] & ~calls["dry_run"]
    for name, col in ANCHORS.items():
        calls[name + "_ms"] = np.where(streamed, call_ttft_ms(first, t_start, calls[col]), np.nan)
    out_tok = calls["u_output"]
    replayed = calls["replayed"].to_numpy(dtype=bool)
    calls["tpot_ms"] = np.where(streamed, call_tpot_ms(calls["first_content_ms"], calls["end_ms"], out_tok,
                                                       replayed), np.nan)
    textual = text_calls(calls)
    calls["out_tps"] = np.where(calls["ok"] & textual, call_output_tps(out_tok, calls["end_ms"], replayed), np.nan)
    calls["end_time"] = calls["t_start"] + calls["end_ms"] / 1000.0
    return calls


def _itl_rows(calls: pd.DataFrame) -> pd.Series:
    return calls["ok"] & calls["stream"] & ~calls["dry_run"] & (calls["chunks_n"] >= 2) & ~calls["replayed"]


#: per-call gap figures, by name: the record's (or call_gap_figures') key, in µs
CALL_GAPS = {"itl_per_request_p50_ms": "p50_us", "itl_per_request_p99_ms": "p99_us",
             "itl_per_request_max_ms": "max_us"}
#: why the pooled inter-token latency is missing
NO_POOLED_GAPS = ("the run kept summary timing (records.timing: summary): the records hold per-call gap figures, "
                  "not every chunk's time, so the pooled inter-token latency cannot be given; see "
                  "itl_per_request_mean_ms, itl_per_request_p50_ms, itl_per_request_p99_ms and itl_per_request_max_ms")


def _itl_parts(f: pd.DataFrame, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any],
                                                          np.ndarray]:
    """For the rows `sel` of f: the pooled gaps (ms, in order) and for each the position among the `sel` rows of
    the row it came from; then for each row with gaps (in order): its position in f, its per-call figures by name
    (mean gap and CALL_GAPS, ms) and whether its record kept summary timing. A mean is the gaps' whole-microsecond
    sum / 1000 / their count, from either kind of record."""
    rows = np.flatnonzero(sel)
    summ = f["gap_sum_us"].notna().to_numpy()[rows] if "gap_sum_us" in f else np.zeros(rows.size, dtype=bool)
    cells = f["chunks_us"].to_numpy()[rows][~summ]
    pooled, counts, _ = chunk_gap_stats(cells)
    figs = call_gap_figures(cells)
    keep = np.ones(rows.size, dtype=bool)
    keep[~summ] = counts > 0
    sums = np.zeros(rows.size, dtype=np.int64)
    n_gaps = np.ones(rows.size, dtype=np.int64)
    us = {k: np.full(rows.size, np.nan) for k in CALL_GAPS.values()}
    sums[~summ] = np.nan_to_num(figs["sum_us"]).astype(np.int64)
    n_gaps[~summ] = np.maximum(counts, 1)
    for k in us:
        us[k][~summ] = figs[k]
    if summ.any():
        srows = rows[summ]
        sums[summ] = f["gap_sum_us"].to_numpy(dtype=np.float64)[srows].astype(np.int64)
        n_gaps[summ] = f["chunks_n"].to_numpy()[srows] - 1
        for k in us:
            us[k][summ] = f["gap_" + k].to_numpy(dtype=np.float64)[srows]
    per_call = {"itl_per_request_mean_ms": (sums / 1000.0 / n_gaps)[keep],
                **{name: us[k][keep] / 1000.0 for name, k in CALL_GAPS.items()}}
    pooled_at = np.repeat(np.flatnonzero(~summ), counts) if counts.size else np.empty(0, dtype=np.int64)
    return pooled, pooled_at, rows[keep], per_call, summ[keep]


def itl_values(calls: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """(pooled gaps between content chunks, per-call gap figures by name, how many calls kept summary timing) for
    successful streamed calls."""
    sel = _itl_rows(calls).to_numpy()
    empty = {k: np.empty(0) for k in ("itl_per_request_mean_ms", *CALL_GAPS)}
    if not sel.any():
        return np.empty(0), empty, 0
    pooled, _, _, per_call, summ = _itl_parts(calls, sel)
    return pooled, per_call, int(summ.sum())


def itl_figures(pooled: Any, per_call: dict[str, Any], summary_calls: int,
                own: bool = False) -> dict[str, Any]:
    """The ITL figures of group_metrics: pooled (None when a call kept summary timing) and per call."""
    d = _dist_owned if own else dist
    out: dict[str, Any] = {"itl_ms": d(pooled) if not summary_calls else None}
    for name in ("itl_per_request_mean_ms", *CALL_GAPS):
        out[name] = d(per_call[name])
    out["summary_timing_calls"] = summary_calls
    if summary_calls:
        out["itl_ms_missing"] = NO_POOLED_GAPS
    return out


def _dist_owned(a: np.ndarray) -> dict[str, Any]:
    """dist() of a float64 array without NaN that may be reordered (no copies: the pooled gaps are big)."""
    if a.size == 0:
        return dist(a)
    out: dict[str, Any] = {"n": int(a.size), "mean": float(a.mean())}
    top = float(a.max())
    for p, v in zip(PCTS, np.percentile(a, PCTS, overwrite_input=True), strict=True):
        out[f"p{p:g}"] = float(v)
    out["max"] = top
    return out


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


#: the call columns group_metrics reads (besides what itl_values reads when no ITL figures are given)
GROUP_COLUMNS = ("cancelled", "ok", "dry_run", "endpoint", "max_tokens", "u_output", "u_input", "first_attempt_ok", "ttft_ms",
                 "ttft_text_ms", "ttft_tool_ms", "ttft_reasoning_ms", "first_event_ms", "headers_ms", "tpot_ms",
                 "e2e_ms", "out_tps", "dry_run_ignored", "framing_mismatch")


def group_metrics(calls: pd.DataFrame, att: pd.DataFrame, duration_s: float, slo: SLO,
                  itl: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every metric for one group of calls (and their attempts); `itl`: the ITL figures when already known."""
    live = calls[~calls["cancelled"]]
    okc = live[live["ok"]]
    real = okc[~okc["dry_run"]]
    if itl is None:
        itl = itl_figures(*itl_values(live))
    if "sent" in att:  # the marker of a call cut while it waited to retry is no attempt
        att = att[counts_as_attempt(att["error_kind"], att["sent"])]
    errors = att[att["error_kind"].notna() & att["error_kind"].ne("cancelled")]["error_kind"].value_counts()
    good = good_mask(live, slo) if len(live) else live["ok"]
    d = max(duration_s, 1e-9)
    out_tokens = float(real.loc[text_calls(real), "u_output"].fillna(0).sum())
    in_tokens = float(real["u_input"].fillna(0).sum())
    out = {
        "attempts": int(len(att)),
        "calls": int(len(live)),
        "cancelled_calls": int(calls["cancelled"].sum()),
        "successes": int(len(okc)),
        "failures": int(len(live) - len(okc)),
        "error_rate": (len(live) - len(okc)) / len(live) if len(live) else None,
        "errors": {str(k): int(v) for k, v in errors.items()},
        "retries": int((att["attempt"] > 1).sum()),
        "replays": int(att["replayed"].sum()),
        "dry_runs_ignored": _flagged(live, "dry_run_ignored"),
        "framing_mismatches": _flagged(live, "framing_mismatch"),
        "requests_per_s": len(okc) / d,
        "attempts_per_s": len(att) / d,
        "ttft_ms": dist(okc["ttft_ms"]),
        "ttft_text_ms": dist(okc["ttft_text_ms"]),
        "ttft_tool_ms": dist(okc["ttft_tool_ms"]),
        "ttft_reasoning_ms": dist(okc["ttft_reasoning_ms"]),
        "first_event_ms": dist(okc["first_event_ms"]),
        "headers_ms": dist(okc["headers_ms"]),
        "ttft_first_attempt_ms": dist(okc.loc[okc["first_attempt_ok"], "ttft_ms"]),
        "itl_ms": itl["itl_ms"],
        "itl_per_request_mean_ms": itl["itl_per_request_mean_ms"],
        **{name: itl[name] for name in CALL_GAPS},
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
        "summary_timing_calls": itl["summary_timing_calls"],
    }
    if "itl_ms_missing" in itl:
        out["itl_ms_missing"] = itl["itl_ms_missing"]
    return out


def _flagged(calls: pd.DataFrame, column: str) -> int:
    """Calls whose final attempt has the flag (0 when the records predate it)."""
    return int(calls[column].fillna(False).astype(bool).sum()) if column in calls else 0


def group_key(row: pd.Series) -> str:
    """endpoint / model / plain|stream."""
    return f"{row['endpoint']} {row['model']} {'stream' if row['stream'] else 'plain'}"


def compute(att: pd.DataFrame, opts: Options, dropped: int = 0) -> dict[str, Any]:
    """Overall and per endpoint x model x stream-mode metrics, and time series."""
    plan = None if att.empty else _plan(att, opts.warmup_s)
    if plan is None:  # no records, or call ids that are not all strings: the general path
        calls, _ = _calls(att, opts.warmup_s)
    elif len(plan.final):
        itl, (labels, codes, keys) = _itl_by_group(att, plan.final)  # before the calls frame: peak memory
        calls = _plan_frame(att, plan)
    else:
        calls = att.iloc[:0]
    if calls.empty:
        return {"empty": True, "overall": None, "groups": {}, "timeseries": [], "duration_s": 0.0}
    start = float(calls["first_start"].min())
    end = float(calls["end_time"].max())
    duration = max(end - start, 1e-9)
    groups: dict[str, Any] = {}
    if plan is None:
        att = att[att["call_id"].isin(calls.index)]
        overall = group_metrics(calls, att, duration, opts.slo)
        calls = calls.assign(group=_group_label(calls))
        att_group = att["call_id"].map(calls["group"])
        for key, sub in calls.groupby("group", sort=True):
            groups[str(key)] = group_metrics(sub, att[att_group == key], duration, opts.slo)
    else:
        rows = plan.rows
        if (rows < 0).any():
            att, rows = att[rows >= 0], rows[rows >= 0]
        calls["group"] = labels  # calls is a frame of its own: no copy (assign would make one)
        narrow = calls[list(GROUP_COLUMNS)].reset_index(drop=True)  # cheap index checks on every mask
        att_n = att[["error_kind", "attempt", "replayed", "sent"]]
        overall = group_metrics(narrow, att_n, duration, opts.slo, itl.pop(None))
        for k, key in enumerate(keys):
            mine = codes == k
            groups[str(key)] = group_metrics(narrow[mine], att_n[mine[rows]], duration, opts.slo, itl[str(key)])
    overall["dropped_arrivals"] = dropped
    return {"empty": False, "start": start, "end": end, "duration_s": duration, "overall": overall,
            "groups": groups, "timeseries": timeseries(calls, start), "calls_frame": calls}


def _itl_by_group(att: pd.DataFrame, final: np.ndarray) -> tuple[dict[str | None, Any], Any]:
    """ITL figures per group (None: overall), and the groups (labels, codes, sorted keys) of the calls whose
    final attempts are `final`, from the few columns they need; the chunk gaps are decoded once for all groups."""
    cols = ["endpoint", "model", "stream", "ok", "dry_run", "chunks_n", "replayed", "error_kind", "chunks_us",
            *(c for c in ("gap_sum_us", *("gap_" + k for k in CALL_GAPS.values())) if c in att)]
    f = att[cols].take(final)
    labels = _labels(f)
    codes, keys = pd.factorize(labels, sort=True)  # groupby's groups: sorted, nulls dropped
    sel = (_itl_rows(f) & ~f["error_kind"].eq("cancelled")).to_numpy()
    pooled, pooled_at, rows, per_call, summ = _itl_parts(f, sel)
    del f
    pooled_group = codes[np.flatnonzero(sel)][pooled_at] if pooled.size else np.empty(0, dtype=np.int64)
    in_group = codes[rows]
    out: dict[str | None, Any] = {}
    for k, key in enumerate(keys):
        mine = in_group == k
        if not mine.any():  # no streamed calls in the group: nothing to pick out of the pooled gaps
            out[str(key)] = itl_figures(np.empty(0), {n: np.empty(0) for n in per_call}, 0)
            continue
        out[str(key)] = itl_figures(pooled[pooled_group == k], {n: v[mine] for n, v in per_call.items()},
                                    int(summ[mine].sum()), own=True)
    out[None] = itl_figures(pooled, per_call, int(summ.sum()), own=True)  # last: these reorder the arrays
    return out, (labels, codes, keys)


def _group_label(calls: pd.DataFrame) -> Any:
    """endpoint, model and plain|stream; just the endpoint for calls without a model (model listings)."""
    return np.where(calls["model"].eq("-"), calls["endpoint"],
                    calls["endpoint"] + " " + calls["model"] + " " + np.where(calls["stream"], "stream", "plain"))


def _labels(calls: pd.DataFrame) -> Any:
    """_group_label of every call, computed once per distinct (endpoint, model, stream)."""
    if len(calls) < 1000:
        return _group_label(calls)
    e, _ = pd.factorize(calls["endpoint"])
    m, models = pd.factorize(calls["model"])
    key = ((e.astype(np.int64) + 1) * (len(models) + 1) + (m + 1)) * 2 + calls["stream"].to_numpy(dtype=bool)
    combo, uniq = pd.factorize(key)
    first = np.full(len(uniq), len(key), dtype=np.int64)
    np.minimum.at(first, combo, np.arange(len(key)))
    return np.asarray(_group_label(calls.iloc[first]), dtype=object)[combo]


def timeseries(calls: pd.DataFrame, start: float) -> list[dict[str, Any]]:
    """Per second of the run: calls started, finished ok, failed, TTFT p50/p95, output tokens, stage."""
    live = calls.loc[~calls["cancelled"], ["first_start", "ok", "ttft_ms", "e2e_ms", "u_output", "stage"]]
    sec = np.floor(live["first_start"] - start).astype(int).to_numpy()
    if not sec.size:
        return []
    order = np.argsort(sec, kind="stable")  # groupby's seconds, ascending, each in the calls' order
    sec = sec[order]
    bounds = np.flatnonzero(np.r_[True, sec[1:] != sec[:-1], True])
    first = bounds[:-1]
    ok = live["ok"].to_numpy(dtype=bool)[order]
    ttft = live["ttft_ms"].to_numpy(dtype=np.float64)[order]
    e2e = live["e2e_ms"].to_numpy(dtype=np.float64)[order]
    stage = live["stage"].to_numpy(dtype=np.float64)[order]
    n_calls = np.diff(bounds)
    n_ok = np.add.reduceat(ok.astype(np.int64), first)
    tokens = np.where(ok, np.nan_to_num(live["u_output"].to_numpy(dtype=np.float64)[order], nan=0.0), 0.0)
    if np.array_equal(tokens, np.floor(tokens)) and np.abs(tokens).sum() < 2.0**53:
        sums = np.add.reduceat(tokens, first).tolist()  # whole numbers: exact in any order
    else:
        sums = [float(tokens[a:b][ok[a:b]].sum()) for a, b in zip(first, bounds[1:], strict=True)]
    has_stage = ~np.isnan(stage)
    out = []
    # medians as pandas takes them (np.nanmedian of the values; np.median is the same number without NaN)
    for i, (a, b) in enumerate(zip(first.tolist(), bounds[1:].tolist(), strict=True)):
        k = ok[a:b]
        tt = ttft[a:b][k]
        tt = tt[~np.isnan(tt)]
        ee = e2e[a:b][k]
        ee = ee[~np.isnan(ee)]
        st = stage[a:b][has_stage[a:b]]
        nk = int(n_ok[i])
        out.append({
            "second": int(sec[a]), "calls": int(n_calls[i]), "ok": nk, "failed": int(n_calls[i]) - nk,
            "ttft_p50_ms": float(np.median(tt)) if len(tt) else None,
            "ttft_p95_ms": float(np.percentile(tt, 95)) if len(tt) else None,
            "e2e_p50_ms": (float(np.median(ee)) if len(ee) else math.nan) if nk else None,
            "output_tokens": int(sums[i]),
            "stage": int(st[0]) if len(st) else None,
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
