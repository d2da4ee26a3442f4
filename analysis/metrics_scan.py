"""analysis.metrics.compute over a run read in batches: the same figures, in memory that does not grow with it.

Counts and sums add up batch by batch; every distribution is exact: chunk gaps are whole microseconds and are
counted per value, every other figure goes through two passes (analysis.exact.GroupedQuantiles), the second over
the values the first kept aside (in memory, then in temporary files): the records are read once after the index."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ttformats.calls import counts_as_attempt
from ttformats.records import sorted_gap_figures

from . import exact, trim
from .attempt_facts import COLUMNS as FACT_COLUMNS
from .callscan import CallBatch, CallIndex, Source, call_batches, index_calls
from .exact import GroupedQuantiles, Spool, ValueCounts
from .metrics import CALL_GAPS, NO_POOLED_GAPS, SLO, Options, good_mask, text_calls

#: per-call distributions of group_metrics, by name: (column of the calls frame, first attempts only)
DISTS = {"ttft_ms": ("ttft_ms", False), "ttft_text_ms": ("ttft_text_ms", False),
         "ttft_tool_ms": ("ttft_tool_ms", False), "ttft_reasoning_ms": ("ttft_reasoning_ms", False),
         "first_event_ms": ("first_event_ms", False), "headers_ms": ("headers_ms", False),
         "ttft_first_attempt_ms": ("ttft_ms", True), "tpot_ms": ("tpot_ms", False), "e2e_ms": ("e2e_ms", False),
         "e2e_first_attempt_ms": ("e2e_ms", True), "output_tokens_per_s_per_request": ("out_tps", False)}
CALL_COLUMNS = ["call_id", "attempt", "final", "t_start", "endpoint", "model", "stream", "ok", "dry_run",
                "replayed", "error_kind", "sent", "max_tokens", "u_output", "u_input", "stage", "end_ms",
                "headers_ms", "first_event_ms", "first_content_ms", "first_text_ms", "first_tool_ms",
                "first_reasoning_ms", "dry_run_ignored", "framing_mismatch", "chunks_n", "chunk_us", "gap_sum_us",
                "gap_p50_us", "gap_p99_us", "gap_max_us"]
#: the levels (%) at which each endpoint's TTFT CDF is drawn: exact quantiles, never every call
CDF_LEVELS = tuple(float(x) for x in np.linspace(0.0, 100.0, 201))
TPS_BINS = 40
TRIM_BATCHES = 8  # batches between two hand-backs of freed memory (trim.release; 16: 10M peak +80 MiB)
_COUNTS = ("attempts", "calls", "cancelled_calls", "successes", "retries", "replays", "dry_runs_ignored",
           "framing_mismatches", "good", "summary_timing_calls")


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

    def __init__(self, start: float, slo: SLO, direct: bool = False) -> None:
        """`direct`: every distribution keeps its values in memory (a run of at most DIRECT_ROWS records)."""
        self.start = start
        self.slo = slo
        self.ids: dict[str, int] = {}
        self.groups: dict[int, _Group] = {0: _Group()}
        self.dists = {name: GroupedQuantiles(spool=True, direct=direct) for name in DISTS}
        self.itl_mean = GroupedQuantiles(spool=True, direct=direct)
        self.itl_call = {name: GroupedQuantiles(spool=True, direct=direct) for name in CALL_GAPS}
        self.ts_ttft = GroupedQuantiles(pcts=(50, 95), spool=True, direct=direct)
        self.ts_e2e = GroupedQuantiles(pcts=(50,), spool=True, direct=direct)
        self.ttft_cdf = GroupedQuantiles(pcts=CDF_LEVELS, spool=True, direct=direct)  # by endpoint
        self.endpoints: dict[str, int] = {}
        self.tps_lo, self.tps_hi = math.inf, -math.inf
        self.tps = Spool()
        self.tps_edges: np.ndarray | None = None
        self.tps_counts: np.ndarray | None = None
        self.seconds: dict[int, list[Any]] = {}  # second -> [calls, ok, tokens, (first call id with a stage, stage)]
        self.end = -math.inf
        self.first = math.inf

    def gid(self, labels: np.ndarray) -> np.ndarray:
        """Group numbers of labels (1.. in order of first sight)."""
        inv, uniq = pd.factorize(labels)
        if (inv < 0).any():  # a missing label: named as str() names it
            uniq, inv = np.unique(labels.astype(str), return_inverse=True)
        nums = np.array([self.ids.setdefault(str(u), len(self.ids) + 1) for u in uniq.tolist()], dtype=np.int64)
        for n in nums.tolist():
            self.groups.setdefault(n, _Group())
        return nums[inv]

    def batch(self, cb: CallBatch) -> None:
        """Add one batch of calls (and their attempts) to the figures."""
        calls = cb.calls
        g = self.gid(cb.labels)
        live = ~calls["cancelled"].to_numpy(dtype=bool)
        ok = calls["ok"].to_numpy(dtype=bool)
        okl = ok & live
        first_ok = okl & calls["first_attempt_ok"].to_numpy(dtype=bool)
        for name, (col, first_only) in DISTS.items():
            sel = first_ok if first_only else okl
            self.dists[name].add(g[sel], calls[col].to_numpy(dtype=np.float64)[sel], overall=True)
        means, pooled, per_call, summary_g = self._itl(cb, g, live)
        self.itl_mean.add(means[0], means[1], overall=True)
        for name, key in CALL_GAPS.items():
            self.itl_call[name].add(means[0], per_call[key] / 1000.0, overall=True)
        for x in summary_g.tolist():  # streamed calls whose records kept summary timing
            self.groups[0].n["summary_timing_calls"] += 1
            self.groups[x].n["summary_timing_calls"] += 1
        sec = np.floor(calls["first_start"].to_numpy(dtype=np.float64)[live] - self.start).astype(np.int64)
        tt = calls["ttft_ms"].to_numpy(dtype=np.float64)[live]
        ee = calls["e2e_ms"].to_numpy(dtype=np.float64)[live]
        k = ok[live]
        self.ts_ttft.add(sec[k], tt[k])
        self.ts_e2e.add(sec[k], ee[k])
        self._figures(calls, ok)
        for calls_g, gaps in pooled or ():  # by the groups of the calls (few), not of each gap; the whole run's: finish()
            groups = np.unique(calls_g).tolist()
            for x in groups:
                self.groups[x].gaps.add_ints((gaps[calls_g == x] if len(groups) > 1 else gaps).ravel())
        self._counts(cb, g, live, ok)
        self._seconds(calls, live, ok, sec)
        fs = calls["first_start"].to_numpy(dtype=np.float64)
        et = calls["end_time"].to_numpy(dtype=np.float64)
        if fs.size and (~np.isnan(fs)).any():
            self.first = min(self.first, float(np.nanmin(fs)))
        if et.size and (~np.isnan(et)).any():
            self.end = max(self.end, float(np.nanmax(et)))

    def _figures(self, calls: pd.DataFrame, ok: np.ndarray) -> None:
        """What the report's figures draw: TTFT per endpoint (ok calls), output tokens/s per request (ok calls)."""
        codes, uniq = pd.factorize(calls["endpoint"])  # on the column as held (Arrow's, without a str per row)
        inv = codes[ok]
        if (inv < 0).any():  # a missing endpoint: named as str() names it
            ends = calls["endpoint"].to_numpy(dtype=object)[ok]
            uniq, inv = np.unique(ends.astype(str), return_inverse=True)
            used = np.arange(len(uniq))
        else:
            used = np.unique(inv)  # the endpoints of the ok calls only
        eid = np.full(len(uniq), -1, dtype=np.int64)
        for u in used.tolist():
            eid[u] = self.endpoints.setdefault(str(uniq[u]), len(self.endpoints))
        self.ttft_cdf.add(eid[inv], calls["ttft_ms"].to_numpy(dtype=np.float64)[ok])
        tps = calls["out_tps"].to_numpy(dtype=np.float64)[ok]
        tps = tps[~np.isnan(tps)]
        if not tps.size:
            return
        self.tps_lo, self.tps_hi = min(self.tps_lo, float(tps.min())), max(self.tps_hi, float(tps.max()))
        self.tps.write(tps)

    def finish(self) -> None:
        """After every batch: the second pass of the exact distributions and the tokens/s histogram, over the
        values the first pass kept."""
        for q in (*self.dists.values(), self.itl_mean, *self.itl_call.values(), self.ts_ttft, self.ts_e2e, self.ttft_cdf):
            q.start_second_pass()
            q.replay()
        for gid, grp in self.groups.items():  # each chunk gap is in exactly one group
            if gid:
                self.groups[0].gaps.merge(grp.gaps)
        for (tps,) in self.tps.read():
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

    def _itl(self, cb: CallBatch, g: np.ndarray, live: np.ndarray) -> tuple[Any, Any, Any, np.ndarray]:
        """Per-call mean gaps (overall and per group), the pooled gaps in µs (blocks of calls of as many gaps: their
        groups, and their gaps as rows), the per-call gap figures (p50_us, p99_us, max_us: in the order of the
        means) and the groups of the summary-timing calls."""
        calls = cb.calls
        sel = (live & calls["ok"].to_numpy(dtype=bool) & calls["stream"].to_numpy(dtype=bool)
               & ~calls["dry_run"].to_numpy(dtype=bool) & (calls["chunks_n"].to_numpy() >= 2)
               & ~calls["replayed"].to_numpy(dtype=bool))
        none = np.empty(0, dtype=np.int64)
        empty = ((none, np.empty(0)), None, {k: np.empty(0) for k in CALL_GAPS.values()}, none)
        if not sel.any():
            return empty
        # a summary-timing call: its figures as the worker computed them from the same deltas
        summ = sel & calls["gap_sum_us"].notna().to_numpy()
        lens = np.zeros(len(calls), dtype=np.int64)
        if cb.gaps_starts is not None and cb.gaps_ends is not None and cb.gaps_values is not None:
            lens = (cb.gaps_ends - cb.gaps_starts).astype(np.int64)
        full = sel & ~summ & (lens >= 2)
        rows = np.flatnonzero(full | summ)
        if not rows.size:
            return empty
        n_gaps = np.where(summ, calls["chunks_n"].to_numpy() - 1, lens - 1)[rows]
        sums = np.zeros(rows.size, dtype=np.int64)
        figs = {k: np.zeros(rows.size, dtype=np.float64) for k in CALL_GAPS.values()}
        in_summ = summ[rows]
        if in_summ.any():
            sums[in_summ] = calls["gap_sum_us"].to_numpy(dtype=np.float64)[rows[in_summ]].astype(np.int64)
            for k in figs:
                figs[k][in_summ] = calls["gap_" + k].to_numpy(dtype=np.float64)[rows[in_summ]]
        pooled: list[tuple[np.ndarray, np.ndarray]] | None = None
        fr = rows[~in_summ]
        if fr.size:
            off, values = cb.gaps_starts, cb.gaps_values
            assert off is not None and values is not None
            n = lens[fr] - 1
            at = np.flatnonzero(~in_summ)
            pooled = []
            # calls of as many chunks together, each block's deltas gathered once: the gaps of a call are its
            # deltas after the first (which is from the attempt's start); its figures as the worker computes them
            for m in np.unique(n).tolist():
                same = n == m
                gaps = _rows(values, off[fr[same]] + 1, m)
                sums[at[same]] = gaps.sum(axis=1, dtype=np.int64)
                ordered = np.sort(gaps, axis=1)
                for k, v in sorted_gap_figures(ordered).items():
                    figs[k][at[same]] = v
                pooled.append((g[fr[same]], ordered))
        means = sums / 1000.0 / n_gaps
        return (g[rows], means), pooled, figs, g[rows[in_summ]]

    def _counts(self, cb: CallBatch, g: np.ndarray, live: np.ndarray, ok: np.ndarray) -> None:
        calls = cb.calls
        att = cb.attempts
        ag = (g if cb.attempt_labels is cb.labels else self.gid(cb.attempt_labels)) if len(att) \
            else np.empty(0, dtype=np.int64)  # a batch of lone calls: its attempts are its calls
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
        size = int(max(g.max(initial=0), ag.max(initial=0))) + 1

        def per_group(mask: np.ndarray, of: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
            """Sums per group number of the masked rows (index 0: every group's)."""
            out = np.bincount(of[mask], weights=None if weights is None else weights[mask], minlength=size)
            out[0] = out[1:].sum()  # group numbers start at 1: index 0 is the whole run
            return out

        sums = {"attempts": per_group(counted, ag), "calls": per_group(live, g),
                "cancelled_calls": per_group(~live, g), "successes": per_group(live & ok, g),
                "retries": per_group(counted & (att_no > 1), ag), "replays": per_group(counted & replayed, ag),
                "good": np.bincount(g[live], weights=good.astype(np.int64), minlength=size)}
        sums["good"][0] = sums["good"][1:].sum()
        for name, flag in flags.items():
            sums[name] = per_group(live & flag, g)
        out_tok = per_group(real & textual, g, np.nan_to_num(u_out, nan=0.0))
        in_tok = per_group(real, g, np.nan_to_num(u_in, nan=0.0))
        errs = counted & pd.notna(kinds) & (kinds != "cancelled")
        err_pairs = pd.DataFrame({"g": ag[errs], "kind": kinds[errs]}).value_counts(sort=False) if errs.any() \
            else pd.Series(dtype=np.int64)
        for grp in (0, *np.unique(np.r_[g, ag]).tolist()):
            n = self.groups[grp].n
            for name, arr in sums.items():
                n[name] += int(arr[grp])
            self.groups[grp].out_tokens += float(out_tok[grp])
            self.groups[grp].in_tokens += float(in_tok[grp])
        errors: dict[int, dict[str, int]] = {}
        for (grp, kind), c in err_pairs.items():
            for k in (0, int(grp)):
                errors.setdefault(k, {})
                errors[k][str(kind)] = errors[k].get(str(kind), 0) + int(c)
        for grp, found in errors.items():  # most first within the batch, as value_counts gives them
            s = self.groups[grp]
            for kind, c in sorted(found.items(), key=lambda kv: -kv[1]):
                s.errors[kind] = s.errors.get(kind, 0) + c

    def _seconds(self, calls: pd.DataFrame, live: np.ndarray, ok: np.ndarray, sec: np.ndarray) -> None:
        if not sec.size:
            return
        k = ok[live]
        tokens = np.where(k, np.nan_to_num(calls["u_output"].to_numpy(dtype=np.float64)[live], nan=0.0), 0.0)
        lo = int(sec.min())
        at = sec - lo
        n = np.bincount(at)
        nk = np.bincount(at, weights=k)
        tok = np.bincount(at, weights=tokens)  # in the calls' order within each second, as a loop adds them
        stage = calls["stage"].to_numpy(dtype=np.float64)[live]
        staged = np.flatnonzero(~np.isnan(stage))
        for i in np.flatnonzero(n).tolist():
            slot = self.seconds.setdefault(lo + i, [0, 0, 0.0, None])
            slot[0] += int(n[i])
            slot[1] += int(nk[i])
            slot[2] += float(tok[i])
        if staged.size:  # each second's first call id with a stage, and that stage
            ids = np.asarray(calls.index, dtype=object)[live][staged]
            for second, cid, st in zip((lo + at[staged]).tolist(), ids.tolist(), stage[staged].tolist(), strict=True):
                slot = self.seconds[second]
                if slot[3] is None or cid < slot[3][0]:
                    slot[3] = (cid, int(st))


def compute_scan(source: Source, opts: Options, dropped: int = 0, figures: dict[str, Any] | None = None,
                 idx: CallIndex | None = None, also: Any = None) -> dict[str, Any]:
    """What analysis.metrics.compute gives (without the calls frame), from batches of records, in two passes (the index's, then one);
    `figures`, when given, gets what the report's TTFT CDF and tokens/s histogram draw; `also` (an
    attempt_facts.FactsScan) gets every batch of the same pass."""
    idx = idx or index_calls(source, opts.warmup_s)
    if not np.isfinite(idx.first_start):
        return {"empty": True, "overall": None, "groups": {}, "timeseries": [], "duration_s": 0.0}
    scan = _Scan(idx.first_start, opts.slo, direct=idx.rows <= exact.DIRECT_ROWS)
    for k, cb in enumerate(call_batches(source, idx, CALL_COLUMNS, each=None if also is None else also.batch,
                                        each_columns=None if also is None else FACT_COLUMNS)):
        if len(cb.calls):
            scan.batch(cb)
        if k % TRIM_BATCHES == TRIM_BATCHES - 1:
            trim.release()
        del cb  # the last batch is not held through finish()
    trim.release()
    scan.finish()
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


def _rows(values: np.ndarray, starts: np.ndarray, m: int) -> np.ndarray:
    """values[s:s + m] for each start s, as the rows of a new array (copied row by row from a sliding view: no
    index array of every element)."""
    window = np.lib.stride_tricks.as_strided(values, shape=(values.size - m + 1, m),
                                             strides=(values.strides[0], values.strides[0]), writeable=False)
    return window[starts]


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
    out["itl_ms"] = gaps if not n["summary_timing_calls"] else None
    out["itl_per_request_mean_ms"] = scan.itl_mean.dist(gid)
    for name, q in scan.itl_call.items():
        out[name] = q.dist(gid)
    out["summary_timing_calls"] = n["summary_timing_calls"]
    if n["summary_timing_calls"]:
        out["itl_ms_missing"] = NO_POOLED_GAPS
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

