"""analysis.metrics.compute over a run read in batches: the same figures, in memory that does not grow with it.

Counts and sums add up batch by batch; every distribution is exact: chunk gaps are whole microseconds and are
counted per value, every other figure goes through two passes (analysis.exact.GroupedQuantiles)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ttformats.calls import counts_as_attempt

from .callscan import CallBatch, CallIndex, Source, call_batches, index_calls
from .exact import GroupedQuantiles, ValueCounts
from .metrics import SLO, Options, good_mask, text_calls

#: per-call distributions of group_metrics, by name: (column of the calls frame, first attempts only)
DISTS = {"ttft_ms": ("ttft_ms", False), "ttft_text_ms": ("ttft_text_ms", False),
         "ttft_tool_ms": ("ttft_tool_ms", False), "ttft_reasoning_ms": ("ttft_reasoning_ms", False),
         "first_event_ms": ("first_event_ms", False), "headers_ms": ("headers_ms", False),
         "ttft_first_attempt_ms": ("ttft_ms", True), "tpot_ms": ("tpot_ms", False), "e2e_ms": ("e2e_ms", False),
         "e2e_first_attempt_ms": ("e2e_ms", True), "output_tokens_per_s_per_request": ("out_tps", False)}
CALL_COLUMNS = ["run_id", "call_id", "attempt", "final", "t_start", "endpoint", "model", "stream", "ok", "dry_run",
                "replayed", "error_kind", "sent", "max_tokens", "u_output", "u_input", "stage", "end_ms",
                "headers_ms", "first_event_ms", "first_content_ms", "first_text_ms", "first_tool_ms",
                "first_reasoning_ms", "dry_run_ignored", "framing_mismatch", "chunks_n", "chunk_us"]
#: the levels (%) at which each endpoint's TTFT CDF is drawn: exact quantiles, never every call
CDF_LEVELS = tuple(float(x) for x in np.linspace(0.0, 100.0, 201))
TPS_BINS = 40
_COUNTS = ("attempts", "calls", "cancelled_calls", "successes", "retries", "replays", "dry_runs_ignored",
           "framing_mismatches", "good")


class _Group:
    """The additive figures of one group."""

    def __init__(self) -> None:
        self.n = dict.fromkeys(_COUNTS, 0)
        self.errors: dict[str, int] = {}
        self.out_tokens = 0.0
        self.in_tokens = 0.0
        self.gaps = ValueCounts()


class _Scan:
    """One group per label (0: the whole run), and the per-second series."""

    def __init__(self, start: float, slo: SLO) -> None:
        self.start = start
        self.slo = slo
        self.ids: dict[str, int] = {}
        self.groups: dict[int, _Group] = {0: _Group()}
        self.dists = {name: GroupedQuantiles() for name in DISTS}
        self.itl_mean = GroupedQuantiles()
        self.ts_ttft = GroupedQuantiles(pcts=(50, 95))
        self.ts_e2e = GroupedQuantiles(pcts=(50,))
        self.ttft_cdf = GroupedQuantiles(pcts=CDF_LEVELS)  # by endpoint
        self.endpoints: dict[str, int] = {}
        self.tps_lo, self.tps_hi = math.inf, -math.inf
        self.tps_edges: np.ndarray | None = None
        self.tps_counts: np.ndarray | None = None
        self.seconds: dict[int, list[Any]] = {}  # second -> [calls, ok, tokens, (first call id with a stage, stage)]
        self.end = -math.inf
        self.first = math.inf

    def gid(self, labels: np.ndarray) -> np.ndarray:
        """Group numbers of labels (1.. in order of first sight)."""
        uniq, inv = np.unique(labels.astype(str), return_inverse=True)
        nums = np.array([self.ids.setdefault(u, len(self.ids) + 1) for u in uniq.tolist()], dtype=np.int64)
        for n in nums.tolist():
            self.groups.setdefault(n, _Group())
        return nums[inv]

    def batch(self, cb: CallBatch, first_pass: bool) -> None:
        """Add one batch of calls (and their attempts) to the figures of this pass."""
        calls = cb.calls
        g = self.gid(cb.labels)
        live = ~calls["cancelled"].to_numpy(dtype=bool)
        ok = calls["ok"].to_numpy(dtype=bool)
        okl = ok & live
        first_ok = okl & calls["first_attempt_ok"].to_numpy(dtype=bool)
        for name, (col, first_only) in DISTS.items():
            sel = first_ok if first_only else okl
            v = calls[col].to_numpy(dtype=np.float64)[sel]
            self.dists[name].add(np.r_[np.zeros(v.size, dtype=np.int64), g[sel]], np.r_[v, v])
        means, pooled, pooled_g = self._itl(cb, g, live)
        self.itl_mean.add(means[0], means[1])  # overall and per group
        sec = np.floor(calls["first_start"].to_numpy(dtype=np.float64)[live] - self.start).astype(np.int64)
        tt = calls["ttft_ms"].to_numpy(dtype=np.float64)[live]
        ee = calls["e2e_ms"].to_numpy(dtype=np.float64)[live]
        k = ok[live]
        self.ts_ttft.add(sec[k], tt[k])
        self.ts_e2e.add(sec[k], ee[k])
        self._figures(calls, ok, first_pass)
        if not first_pass:
            return
        if pooled is not None:
            for grp, vals in ((0, pooled), *((int(x), pooled[pooled_g == x]) for x in np.unique(pooled_g))):
                self.groups[grp].gaps.add_ints(vals)
        self._counts(cb, g, live, ok)
        self._seconds(calls, live, ok, sec)
        fs = calls["first_start"].to_numpy(dtype=np.float64)
        et = calls["end_time"].to_numpy(dtype=np.float64)
        if fs.size and (~np.isnan(fs)).any():
            self.first = min(self.first, float(np.nanmin(fs)))
        if et.size and (~np.isnan(et)).any():
            self.end = max(self.end, float(np.nanmax(et)))

    def _figures(self, calls: pd.DataFrame, ok: np.ndarray, first_pass: bool) -> None:
        """What the report's figures draw: TTFT per endpoint (ok calls), output tokens/s per request (ok calls)."""
        ends = calls["endpoint"].to_numpy(dtype=object)[ok].astype(str)
        uniq, inv = np.unique(ends, return_inverse=True)
        eid = np.array([self.endpoints.setdefault(u, len(self.endpoints)) for u in uniq.tolist()], dtype=np.int64)
        self.ttft_cdf.add(eid[inv], calls["ttft_ms"].to_numpy(dtype=np.float64)[ok])
        tps = calls["out_tps"].to_numpy(dtype=np.float64)[ok]
        tps = tps[~np.isnan(tps)]
        if not tps.size:
            return
        if first_pass:
            self.tps_lo, self.tps_hi = min(self.tps_lo, float(tps.min())), max(self.tps_hi, float(tps.max()))
            return
        if self.tps_edges is None:
            self.tps_edges = np.histogram_bin_edges([self.tps_lo, self.tps_hi], bins=TPS_BINS)
            self.tps_counts = np.zeros(TPS_BINS, dtype=np.int64)
        assert self.tps_counts is not None
        self.tps_counts += np.histogram(tps, bins=self.tps_edges)[0]

    def figure_data(self) -> dict[str, Any]:
        """TTFT CDF points per endpoint ((values, levels, n)) and the output tokens/s histogram (edges, counts)."""
        cdfs = {}
        for name, eid in sorted(self.endpoints.items()):
            d = self.ttft_cdf.dist(eid)
            if d["n"]:
                cdfs[name] = (np.array([d[f"p{p:g}"] for p in CDF_LEVELS]), np.array(CDF_LEVELS) / 100.0, d["n"])
        return {"ttft_cdf": cdfs, "tps_hist": (self.tps_edges, self.tps_counts) if self.tps_edges is not None
                else None}

    def _itl(self, cb: CallBatch, g: np.ndarray, live: np.ndarray) -> tuple[Any, Any, Any]:
        """Per-call mean gaps (overall and per group) and the pooled gaps in µs with their groups."""
        calls = cb.calls
        sel = (live & calls["ok"].to_numpy(dtype=bool) & calls["stream"].to_numpy(dtype=bool)
               & ~calls["dry_run"].to_numpy(dtype=bool) & (calls["chunks_n"].to_numpy() >= 2)
               & ~calls["replayed"].to_numpy(dtype=bool))
        empty = (np.empty(0, dtype=np.int64), np.empty(0))
        if cb.gaps_offsets is None or cb.gaps_values is None or not sel.any():
            return empty, None, None
        off = cb.gaps_offsets
        rows = np.flatnonzero(sel)
        lens = (off[rows + 1] - off[rows]).astype(np.int64)
        rows, lens = rows[lens >= 2], lens[lens >= 2]
        if not rows.size:
            return empty, None, None
        # the gaps of a call are its deltas after the first (which is from the attempt's start)
        lo = off[rows] + 1
        n = lens - 1
        idx = np.repeat(lo - np.r_[0, np.cumsum(n)[:-1]], n) + np.arange(int(n.sum()))
        gaps_us = cb.gaps_values[idx].astype(np.int64)
        sums = np.add.reduceat(gaps_us, np.r_[0, np.cumsum(n)[:-1]])
        means = sums / 1000.0 / n
        gg = g[rows]
        return ((np.r_[np.zeros(means.size, dtype=np.int64), gg], np.r_[means, means]), gaps_us,
                np.repeat(gg, n))

    def _counts(self, cb: CallBatch, g: np.ndarray, live: np.ndarray, ok: np.ndarray) -> None:
        calls = cb.calls
        att = cb.attempts
        ag = self.gid(cb.attempt_labels) if len(att) else np.empty(0, dtype=np.int64)
        counted = counts_as_attempt(att["error_kind"], att["sent"]) if len(att) else np.empty(0, dtype=bool)
        good = good_mask(calls[live], self.slo).to_numpy(dtype=bool) if live.any() else np.empty(0, dtype=bool)
        real = ok & live & ~calls["dry_run"].to_numpy(dtype=bool)
        textual = text_calls(calls).to_numpy(dtype=bool)
        u_out = calls["u_output"].to_numpy(dtype=np.float64)
        u_in = calls["u_input"].to_numpy(dtype=np.float64)
        flags = {name: (calls[col].fillna(False).astype(bool).to_numpy() if col in calls
                        else np.zeros(len(calls), dtype=bool)) for name, col in
                 (("dry_runs_ignored", "dry_run_ignored"), ("framing_mismatches", "framing_mismatch"))}
        kinds = att["error_kind"].to_numpy(dtype=object) if len(att) else np.empty(0, dtype=object)
        att_no = att["attempt"].to_numpy() if len(att) else np.empty(0)
        replayed = att["replayed"].to_numpy(dtype=bool) if len(att) else np.empty(0, dtype=bool)
        for grp in (0, *np.unique(np.r_[g, ag]).tolist()):
            mine = np.ones(len(calls), dtype=bool) if grp == 0 else g == grp
            amine = (np.ones(len(att), dtype=bool) if grp == 0 else ag == grp) & counted
            s = self.groups[grp]
            n = s.n
            n["attempts"] += int(amine.sum())
            n["calls"] += int((mine & live).sum())
            n["cancelled_calls"] += int((mine & ~live).sum())
            n["successes"] += int((mine & live & ok).sum())
            n["retries"] += int((amine & (att_no > 1)).sum())
            n["replays"] += int((amine & replayed).sum())
            for name, flag in flags.items():
                n[name] += int((mine & live & flag).sum())
            n["good"] += int(good[mine[live]].sum())
            for kind, c in pd.Series(kinds[amine]).dropna().value_counts().items():
                if kind != "cancelled":
                    s.errors[str(kind)] = s.errors.get(str(kind), 0) + int(c)
            s.out_tokens += float(np.nan_to_num(u_out[mine & real & textual], nan=0.0).sum())
            s.in_tokens += float(np.nan_to_num(u_in[mine & real], nan=0.0).sum())

    def _seconds(self, calls: pd.DataFrame, live: np.ndarray, ok: np.ndarray, sec: np.ndarray) -> None:
        if not sec.size:
            return
        sub = calls.loc[live, ["u_output", "stage"]]
        k = ok[live]
        tokens = np.where(k, np.nan_to_num(sub["u_output"].to_numpy(dtype=np.float64), nan=0.0), 0.0)
        stage = sub["stage"].to_numpy(dtype=np.float64)
        ids = np.asarray(sub.index, dtype=object)
        order = np.argsort(sec, kind="stable")
        s_sorted = sec[order]
        bounds = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1], True])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            rows = order[a:b]
            second = int(s_sorted[a])
            slot = self.seconds.setdefault(second, [0, 0, 0.0, None])
            slot[0] += b - a
            slot[1] += int(k[rows].sum())
            slot[2] += float(tokens[rows].sum())
            staged = rows[~np.isnan(stage[rows])]
            if staged.size:
                first_id = min(ids[staged].tolist())
                if slot[3] is None or first_id < slot[3][0]:
                    at = staged[[i for i, x in enumerate(ids[staged].tolist()) if x == first_id][0]]
                    slot[3] = (first_id, int(stage[at]))


def compute_scan(source: Source, opts: Options, dropped: int = 0, figures: dict[str, Any] | None = None,
                 idx: CallIndex | None = None) -> dict[str, Any]:
    """What analysis.metrics.compute gives (without the calls frame), from batches of records, in three passes;
    `figures`, when given, gets what the report's TTFT CDF and tokens/s histogram draw."""
    idx = idx or index_calls(source, opts.warmup_s)
    if not np.isfinite(idx.first_start):
        return {"empty": True, "overall": None, "groups": {}, "timeseries": [], "duration_s": 0.0}
    scan = _Scan(idx.first_start, opts.slo)
    for first in (True, False):
        for cb in call_batches(source, idx, CALL_COLUMNS):
            if len(cb.calls):
                scan.batch(cb, first)
        if first:
            for q in (*scan.dists.values(), scan.itl_mean, scan.ts_ttft, scan.ts_e2e, scan.ttft_cdf):
                q.start_second_pass()
    if not math.isfinite(scan.first):
        return {"empty": True, "overall": None, "groups": {}, "timeseries": [], "duration_s": 0.0}
    if figures is not None:
        figures.update(scan.figure_data())
    start, end = scan.first, scan.end
    duration = max(end - start, 1e-9)
    overall = _group_figures(scan, 0, duration)
    overall["dropped_arrivals"] = dropped
    groups = {label: _group_figures(scan, gid, duration) for label, gid in sorted(scan.ids.items())
              if scan.groups[gid].n["calls"] + scan.groups[gid].n["cancelled_calls"]}
    return {"empty": False, "start": start, "end": end, "duration_s": duration, "overall": overall,
            "groups": groups, "timeseries": _series(scan)}


def _group_figures(scan: _Scan, gid: int, d: float) -> dict[str, Any]:
    """group_metrics' figures of one group."""
    s = scan.groups[gid]
    n = s.n
    live = n["calls"]
    fails = live - n["successes"]
    out: dict[str, Any] = {
        "attempts": n["attempts"], "calls": live, "cancelled_calls": n["cancelled_calls"],
        "successes": n["successes"], "failures": fails, "error_rate": fails / live if live else None,
        "errors": dict(sorted(s.errors.items(), key=lambda kv: -kv[1])), "retries": n["retries"],
        "replays": n["replays"], "dry_runs_ignored": n["dry_runs_ignored"],
        "framing_mismatches": n["framing_mismatches"], "requests_per_s": n["successes"] / max(d, 1e-9),
        "attempts_per_s": n["attempts"] / max(d, 1e-9)}
    dists = {name: q.dist(gid) for name, q in scan.dists.items()}
    gaps = s.gaps.dist()
    for k in ("mean", *(x for x in gaps if x.startswith("p")), "max"):
        if gaps.get(k) is not None:
            gaps[k] = gaps[k] / 1000.0
    for name in ("ttft_ms", "ttft_text_ms", "ttft_tool_ms", "ttft_reasoning_ms", "first_event_ms", "headers_ms",
                 "ttft_first_attempt_ms"):
        out[name] = dists[name]
    out["itl_ms"] = gaps
    out["itl_per_request_mean_ms"] = scan.itl_mean.dist(gid)
    for name in ("tpot_ms", "e2e_ms", "e2e_first_attempt_ms", "output_tokens_per_s_per_request"):
        out[name] = dists[name]
    out.update({"output_tokens_per_s": s.out_tokens / max(d, 1e-9), "input_tokens_per_s": s.in_tokens / max(d, 1e-9),
                "output_tokens": int(s.out_tokens), "input_tokens": int(s.in_tokens),
                "goodput_per_s": float(n["good"]) / max(d, 1e-9),
                "goodput_share": float(n["good"]) / live if live else None})
    return out


def _series(scan: _Scan) -> list[dict[str, Any]]:
    """timeseries(): per second of the run."""
    out = []
    for second in sorted(scan.seconds):
        calls, nk, tokens, staged = scan.seconds[second]
        tt = scan.ts_ttft.dist(second)
        ee = scan.ts_e2e.dist(second)
        out.append({"second": second, "calls": calls, "ok": nk, "failed": calls - nk,
                    "ttft_p50_ms": tt["p50"], "ttft_p95_ms": tt["p95"],
                    "e2e_p50_ms": (ee["p50"] if ee["n"] else math.nan) if nk else None,
                    "output_tokens": int(tokens), "stage": staged[1] if staged else None})
    return out

