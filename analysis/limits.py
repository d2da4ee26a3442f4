"""Rate limits: each tenant's accepted calls replayed through the token-bucket model the gateway advertises
(`ttformats.buckets`), the tokens it let through past its limits, its rate-limit headers against the model, and
the headers or limits that are wrong (README, "The limit report")."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from ttformats.buckets import ACCOUNTING, Bucket, Limits, TenantLimiter
from ttformats.records import FULL_KEYS, SUMMARY_VERSION, expand

from .metrics import text_calls
from .records import RECORD_VERSIONS

#: the label of the records without a tenant (one unnamed tenant)
UNNAMED = "-"
DIMENSIONS = ("requests", "tokens")
FINDING_KINDS = ("remaining_stuck", "reset_wrong", "limit_mismatch")
DEFAULT_ACCOUNTING = "admission"
MAX_OUTPUT_DEFAULT = 1024
#: the columns of the records frame the replay reads
COLUMNS = ("tenant", "refusal", "attempt_id", "request_id", "t_start", "headers_ms", "end_ms", "status", "u_input",
           "u_output", "prompt_tokens_target", "max_tokens", "endpoint", "dry_run", "replayed")
_FIND = re.compile(rb'"ratelimit"\s*:\s*\{|"status"\s*:\s*429(?![0-9.])')
_READ_BYTES = 16 << 20
_FIN, _ARRIVE = 0, 1  # event order at the same instant: a call's end before an arrival
_ADMIT, _REFUSE = 1, 2  # what an arrival was

#: what the light pass keeps of an attempt: (its rate-limit headers or None, its error body's type or None)
Header = tuple[dict[str, dict[str, float | None]] | None, str | None]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _normalise(rl: Any) -> dict[str, dict[str, float | None]] | None:
    """The `ratelimit` of a record: {dimension: {limit, remaining, reset_s}} with numbers or None."""
    if not isinstance(rl, dict):
        return None
    out = {}
    for d in DIMENSIONS:
        v = rl.get(d)
        if isinstance(v, dict):
            out[d] = {k: _num(v.get(k)) for k in ("limit", "remaining", "reset_s")}
    return out or None


def _keep(line: bytes, out: dict[str, Header]) -> None:
    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError:
        return
    if not isinstance(d, dict) or d.get("v") not in RECORD_VERSIONS:
        return
    if len(d) < FULL_KEYS and d["v"] >= SUMMARY_VERSION:
        expand(d)  # a summary-timing record: its attempt_id (and the rest) back
    if not isinstance(d.get("attempt_id"), str):
        return
    rl, et = _normalise(d.get("ratelimit")), d.get("error_type")
    if rl is not None or d.get("status") == 429:
        out[d["attempt_id"]] = (rl, et if isinstance(et, str) else None)


def read_headers(path: str | Path) -> dict[str, Header]:
    """attempt_id -> (rate-limit headers, error type) of every record with rate-limit headers or a 429."""
    out: dict[str, Header] = {}
    p = Path(path)
    if not p.exists():
        return out
    rest = b""
    with open(p, "rb") as f:
        while True:
            block = f.read(_READ_BYTES)
            data = rest + block
            cut = data.rfind(b"\n") + 1 if block else len(data)
            data, rest = data[:cut], data[cut:]
            last = -1
            for m in _FIND.finditer(data):  # only the lines that match are parsed
                start = data.rfind(b"\n", 0, m.start()) + 1
                if start == last:
                    continue
                last = start
                end = data.find(b"\n", m.end())
                _keep(data[start:end if end >= 0 else len(data)], out)
            if not block:
                return out


@dataclass
class Replay:
    """One tenant's replay, for the plots: the model's remaining requests and the tokens accepted over time."""

    label: str
    t0: float
    limits: dict[str, float]
    #: accepted attempts with a reported requests remaining: (time, reported, model)
    remaining: list[tuple[float, float, float]] = field(default_factory=list)
    #: (end time, cumulative accepted tokens) at each accepted attempt's end
    tokens: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class _Calls:
    """One tenant's attempts in start order, as arrays."""

    t: np.ndarray
    h: np.ndarray  # seconds to the headers (the gateway answered within [t, t + h])
    end: np.ndarray
    est: np.ndarray
    actual: np.ndarray
    accepted: np.ndarray
    refused: np.ndarray  # by a rate limit
    quota: np.ndarray
    attempt_id: list[Any]
    request_id: list[Any]
    headers: list[Header | None]


def _calls(sub: pd.DataFrame, headers: dict[str, Header], max_output: int) -> _Calls:
    sub = sub.sort_values("t_start", kind="stable")
    t = sub["t_start"].to_numpy(dtype=np.float64)
    hs = sub["headers_ms"].to_numpy(dtype=np.float64) / 1000.0
    es = sub["end_ms"].to_numpy(dtype=np.float64) / 1000.0
    h = np.nan_to_num(np.where(np.isnan(hs), es, hs), nan=0.0)
    end = t + np.where(np.isnan(es), h, es)
    status = sub["status"].to_numpy(dtype=np.float64)
    refusal = sub["refusal"].to_numpy(dtype=object)
    no_refusal = pd.isna(refusal)
    u_in = sub["u_input"].to_numpy(dtype=np.float64)
    u_out = sub["u_output"].to_numpy(dtype=np.float64)
    prompt = pd.to_numeric(sub["prompt_tokens_target"], errors="coerce").to_numpy(dtype=np.float64)
    cap = pd.to_numeric(sub["max_tokens"], errors="coerce").to_numpy(dtype=np.float64)
    textual = text_calls(sub).to_numpy(dtype=bool)
    est_in = np.where(np.isnan(u_in), np.nan_to_num(prompt, nan=0.0), u_in)
    est = est_in + np.where(textual, np.where(np.isnan(cap), float(max_output), cap), 0.0)
    actual = np.nan_to_num(u_in, nan=0.0) + np.nan_to_num(u_out, nan=0.0)
    replayed = sub["replayed"].to_numpy(dtype=bool)  # the gateway's stored answer: a request, no tokens
    live = ~sub["dry_run"].to_numpy(dtype=bool)  # a dry run is neither counted nor refused
    ids = sub["attempt_id"].tolist()
    return _Calls(
        t=t, h=h, end=end, est=np.where(replayed, 0, np.rint(est)).astype(np.int64),
        actual=np.where(replayed, 0, np.rint(actual)).astype(np.int64),
        # a 4xx other than 429 never reached the limits (a bad key, body or model); a 5xx came after admission
        accepted=live & ~np.isnan(status) & ((status < 400) | (status >= 500)) & no_refusal,
        refused=live & ((refusal == "rate_limit") | ((status == 429) & no_refusal)), quota=refusal == "quota",
        attempt_id=ids, request_id=sub["request_id"].tolist(), headers=[headers.get(a) for a in ids])


def _advertised(c: _Calls, dim: str, configured: dict[str, Any]) -> tuple[float | None, str | None]:
    """The tenant's limit on a dimension: the most common one its headers report, else the configured one."""
    seen = Counter(h[0][dim]["limit"] for h in c.headers
                   if h and h[0] and dim in h[0] and h[0][dim]["limit"] is not None and h[0][dim]["limit"] > 0)
    if seen:
        return seen.most_common(1)[0][0], "headers"
    v = configured.get("rpm" if dim == "requests" else "tpm")
    return (float(v), "settings") if v else (None, None)


@dataclass
class _Events:
    """The replay's events in time order: ends of accepted calls, then arrivals (admitted or refused)."""

    time: np.ndarray
    kind: np.ndarray  # _FIN, _ADMIT, _REFUSE
    row: np.ndarray


def _events(c: _Calls) -> _Events:
    acc = np.flatnonzero(c.accepted)
    ref = np.flatnonzero(c.refused & ~c.accepted)
    time = np.concatenate([c.end[acc], c.t[acc], c.t[ref]])
    kind = np.concatenate([np.full(acc.size, _FIN), np.full(acc.size, _ADMIT), np.full(ref.size, _REFUSE)])
    row = np.concatenate([acc, acc, ref])
    order = np.lexsort((row, np.minimum(kind, _ARRIVE), time))  # arrivals at one instant in start order
    return _Events(time[order], kind[order], row[order])


def _levels(limits: Limits, accounting: str, t0: float, c: _Calls, ev: _Events) -> dict[str, np.ndarray]:
    """The model's levels at each event, before and after it: {requests_before, requests_after, tokens_...}."""
    lim = TenantLimiter(limits, accounting, t0)
    n = len(ev.time)
    out = {f"{d}_{w}": np.full(n, np.nan) for d in DIMENSIONS for w in ("before", "after")}
    rb, ra, tb, ta = out["requests_before"], out["requests_after"], out["tokens_before"], out["tokens_after"]
    req, tok = lim.requests, lim.tokens
    est, actual = c.est.tolist(), c.actual.tolist()
    for k, (te, kind, i) in enumerate(zip(ev.time.tolist(), ev.kind.tolist(), ev.row.tolist(), strict=True)):
        if req is not None:
            rb[k] = req.advance(te)
        if tok is not None:
            tb[k] = tok.advance(te)
        if kind == _FIN:
            lim.finish(te, est[i], actual[i])
        elif kind == _ADMIT:
            lim.admit(te, est[i])
        if req is not None:
            ra[k] = req.level
        if tok is not None:
            ta[k] = tok.level
    out["overshoot_requests"] = np.array(lim.overshoot_requests)
    out["overshoot_tokens"] = np.array(lim.overshoot_tokens)
    return out


@dataclass
class _Window:
    """Debits another call may have made at the gateway on the other side of a call's admission.

    A call reaches the gateway somewhere in [t, t + h] (h: its time to the headers), so a call that started
    before it may have been counted after it, and one that started after it (within h) before it: the
    gateway's level after a call lies in [model − after, model + before + refill over h]."""

    before: np.ndarray  # per event row: debits of earlier-started calls that may have come later
    after: np.ndarray  # debits of later-started calls (within h) that may have come earlier


def _window(c: _Calls, amount: np.ndarray) -> _Window:
    acc = np.flatnonzero(c.accepted)
    t, e, a = c.t[acc], (c.t + c.h)[acc], amount[acc].astype(np.float64)
    cum = np.r_[0.0, np.cumsum(a)]
    by_e = np.argsort(e, kind="stable")
    cum_e = np.r_[0.0, np.cumsum(a[by_e])]
    before = np.zeros(len(c.t))
    after = np.zeros(len(c.t))
    # accepted: earlier in start order and possibly later at the gateway (e_j >= t_i), i.e. all before it but those
    # that surely came first (e_j < t_i, which all started before it)
    pos = np.arange(acc.size)
    before[acc] = cum[pos] - cum_e[np.searchsorted(e[by_e], t, "left")]
    after[acc] = cum[np.searchsorted(t, t + (c.h[acc]), "right")] - cum[pos + 1]
    # any row (refusals): accepted calls that started at or after it, within its h
    after_any = cum[np.searchsorted(t, c.t + c.h, "right")] - cum[np.searchsorted(t, c.t, "left")]
    rest = ~c.accepted
    after[rest] = after_any[rest]
    return _Window(before, after)


class _Episodes:
    """Spells of an empty bucket (by the model) and the time from each to the first rate-limit refusal."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.answered = False
        self.arrivals = 0
        self.times: list[float] = []
        self.without = 0
        self.idle = 0

    def recover(self) -> None:
        if self.start is not None and not self.answered:
            if self.arrivals:
                self.without += 1
            else:
                self.idle += 1
        self.start = None

    def open(self, t: float) -> None:
        if self.start is None:
            self.start, self.answered, self.arrivals = t, False, 0

    def arrive(self, refused: bool, t: float) -> None:
        if self.start is None or self.answered:
            return
        self.arrivals += 1
        if refused:
            self.times.append(t - self.start)
            self.answered = True

    def summary(self) -> dict[str, Any]:
        self.recover()
        a = np.array(self.times)
        return {"episodes": len(self.times) + self.without, "with_429": len(self.times), "without_429": self.without,
                "idle": self.idle, "median_s": float(np.median(a)) if a.size else None,
                "max_s": float(a.max()) if a.size else None}


def _episodes(dim: str, accounting: str, c: _Calls, ev: _Events, lv: dict[str, np.ndarray]) -> dict[str, Any]:
    """Time from each empty bucket to the first 429: the bucket is empty when the model would refuse the next
    call (requests below 1; tokens at or below 0 after the call, or below the next call's estimate at admission)."""
    before, after = lv[f"{dim}_before"], lv[f"{dim}_after"]
    arrive = np.flatnonzero(c.accepted | c.refused)
    arr_t, arr_est = c.t[arrive], c.est[arrive].astype(np.float64)

    def need(t: float, strict: bool) -> float:
        if dim == "requests":
            return 1.0
        if accounting == "after_call":
            return math.ulp(0.0)  # above zero
        k = int(np.searchsorted(arr_t, t, "right" if strict else "left"))
        return float(arr_est[k]) if k < arr_t.size else math.ulp(0.0)

    ep = _Episodes()
    for k, (te, kind) in enumerate(zip(ev.time.tolist(), ev.kind.tolist(), strict=True)):
        if ep.start is not None and before[k] >= need(te, False):
            ep.recover()
        if kind != _FIN:
            ep.arrive(kind == _REFUSE, te)
        if after[k] < before[k] and after[k] < need(te, True):  # a debit that left the bucket empty
            ep.open(te)
    return ep.summary()


def _abs_stats(values: list[float]) -> dict[str, Any]:
    a = np.abs(np.array(values, dtype=np.float64))
    if not a.size:
        return {"n": 0, "p50_abs": None, "p95_abs": None, "max_abs": None, "mean": None}
    return {"n": int(a.size), "p50_abs": float(np.percentile(a, 50)), "p95_abs": float(np.percentile(a, 95)),
            "max_abs": float(a.max()), "mean": float(np.mean(values))}


def _reset_s(limit: float, level: float, t: float, at: float) -> float:
    """The model's seconds from `at` until a bucket at `level` at t is full (no other debit in between)."""
    b = Bucket(limit, t)
    b.level = level
    return b.reset_s(at)


def _attribute(h: Header | None, dims: dict[str, float], margin: dict[str, float], est: float,
               accounting: str) -> str | None:
    """The dimension a rate-limit refusal was for: the error's type (OpenAI's requests/tokens), else the one its
    headers show exhausted, else the model's emptiest of those they do not report (None when they show room on
    every dimension: no bucket refused it, a concurrency limit perhaps)."""
    rl, etype = h if h else (None, None)
    if etype in dims:
        return etype
    unreported = list(dims)
    if rl:
        unreported = []
        for d in dims:
            rem = (rl.get(d) or {}).get("remaining")
            if rem is None:
                unreported.append(d)
            elif rem < (est if d == "tokens" and accounting == "admission" else 1.0):
                return d
    if not unreported:
        return None
    return min(unreported, key=lambda d: margin[d] / dims[d])


def _fit(limits: dict[str, float], dim: str, accounting: str, t0: float, c: _Calls, ev: _Events,
         win: _Window, refused_rows: np.ndarray, below: bool) -> float | None:
    """The capacity the model needs on `dim` to fit what the gateway did: the largest at which every refusal on it
    came with the bucket empty (it enforces below its advertised limit), or the smallest at which no accepted call
    overdraws it (above); a bisection over replays of that dimension alone."""
    key = "rpm" if dim == "requests" else "tpm"
    adm = ev.kind == _ADMIT
    ref = (ev.kind == _REFUSE) & np.isin(ev.row, refused_rows)

    def fits(cap: float) -> bool:
        lv = _levels(Limits(**{key: cap}), accounting, t0, c, ev)
        rate = cap / 60.0
        if below:
            lb = lv[f"{dim}_before"][ref] - win.after[ev.row[ref]]
            need = 1.0 if dim == "requests" else (c.est[ev.row[ref]] if accounting == "admission" else 0.0)
            return bool(np.all(lb - need < 0.5 if dim == "requests" else lb - need <= 0.0))
        base = lv[f"{dim}_after"] if (dim == "requests" or accounting == "admission") else lv[f"{dim}_before"]
        ub = base[adm] + win.before[ev.row[adm]] + rate * c.h[ev.row[adm]]
        return bool(np.all(ub >= (-0.5 if dim == "requests" else 0.0)))

    lo, hi = (1.0, limits[dim]) if below else (limits[dim], limits[dim] * 2)
    if below and not fits(lo):
        return None
    if not below:
        while not fits(hi):
            lo, hi = hi, hi * 2
            if hi > limits[dim] * 2**20:
                return None
    for _ in range(40):  # below: fits(lo) holds; above: fits(hi) holds
        mid = (lo + hi) / 2
        if dim == "requests":
            mid = math.floor(mid) if below else math.ceil(mid)
            if mid in (lo, hi):
                break
        if fits(mid) == below:
            lo = mid
        else:
            hi = mid
        if hi - lo <= (0.5 if dim == "requests" else max(1e-3 * hi, 0.5)):
            break
    return float(lo if below else hi)


def _tenant(label: str, c: _Calls, configured: dict[str, Any], accounting: str,
            findings: list[dict[str, Any]]) -> tuple[dict[str, Any], Replay]:
    """One tenant's conformance figures; its findings appended to `findings`."""
    dims: dict[str, float] = {}
    sources: dict[str, str] = {}
    for d in DIMENSIONS:
        limit, src = _advertised(c, d, configured)
        if limit is not None and src is not None:
            dims[d], sources[d] = limit, src
    accepted_tokens = int(c.actual[c.accepted].sum())
    accepted_requests = int(c.accepted.sum())
    out: dict[str, Any] = {
        "dimensions": {}, "accepted_requests": accepted_requests, "accepted_tokens": accepted_tokens,
        "overshoot_tokens": None, "overshoot_pct": None,
        "refusals": {"rate_limit": int((c.refused & ~c.accepted).sum()), "quota": int(c.quota.sum())}}
    t0 = float(c.t.min()) if c.t.size else 0.0
    replay = Replay(label, t0, dict(dims))
    if not dims or not c.t.size:
        return out, replay
    ev = _events(c)
    lv = _levels(Limits(rpm=dims.get("requests"), tpm=dims.get("tokens")), accounting, t0, c, ev)
    span = float(max(ev.time.max(), c.t.max()) - t0) if ev.time.size else 0.0
    out["span_s"] = span
    amount = {"requests": np.ones(len(c.t)), "tokens": c.est.astype(np.float64)}
    wins = {d: _window(c, amount[d]) for d in dims}
    adm_k = np.flatnonzero(ev.kind == _ADMIT)
    ref_k = np.flatnonzero(ev.kind == _REFUSE)
    # the dimension each rate-limit refusal was for, and how much room the model had on it
    attributed: dict[str, list[int]] = {d: [] for d in dims}
    early: dict[str, int] = dict.fromkeys(dims, 0)
    for k in ref_k.tolist():
        i = int(ev.row[k])
        need = {"requests": 1.0, "tokens": float(c.est[i]) if accounting == "admission" else 0.0}
        lb = {d: lv[f"{d}_before"][k] - wins[d].after[i] - need[d] for d in dims}
        d = _attribute(c.headers[i], dims, lb, float(c.est[i]), accounting)
        if d is None:
            continue
        attributed[d].append(i)
        if lb[d] >= _tol(dims[d]):
            early[d] += 1
    for d, limit in dims.items():
        rate, tol = limit / 60.0, _tol(limit)
        after, before = lv[f"{d}_after"], lv[f"{d}_before"]
        # the gateway's level just after each admission can be as high as this (see _Window)
        base = after if (d == "requests" or accounting == "admission") else before
        rows = ev.row[adm_k]
        ub = np.minimum(base[adm_k] + wins[d].before[rows] + rate * c.h[rows], limit)
        late = int((ub < -tol).sum())
        accepted = accepted_requests if d == "requests" else accepted_tokens
        over = float(lv[f"overshoot_{d}"])
        drift_rem: list[float] = []
        drift_reset: list[float] = []
        for k, i in zip(adm_k.tolist(), rows.tolist(), strict=True):
            h = c.headers[i]
            rep = (h[0] or {}).get(d) if h else None
            if not rep:
                continue
            level = float(base[k])
            te = float(ev.time[k])
            if rep["remaining"] is not None:
                model = math.floor(max(level, 0.0))
                drift_rem.append(rep["remaining"] - model)
                if d == "requests":
                    replay.remaining.append((te, rep["remaining"], float(model)))
            if rep["reset_s"] is not None:
                drift_reset.append(rep["reset_s"] - _reset_s(limit, level, te, te + float(c.h[i])))
        judged, mismatch = limit, None
        if early[d] or late:
            refused_rows = np.array(attributed[d], dtype=np.int64)
            est_below = _fit(dims, d, accounting, t0, c, ev, wins[d], refused_rows, True) if early[d] else None
            est_above = _fit(dims, d, accounting, t0, c, ev, wins[d], refused_rows, False) if late else None
            estimate = est_below if est_below is not None else est_above
            judged = estimate if estimate is not None else limit
            mismatch = _finding("limit_mismatch", label, d, None, {
                "advertised": limit, "limit_source": sources[d],
                "enforced": "below" if not late else "above" if not early[d] else "both",
                "early_refusals": early[d], "late_acceptances": late, "tolerance": tol,
                "estimated_limit": estimate, "estimated_limit_above": est_above})
            findings.append(mismatch)
        if d == "requests":
            after_judged = after if judged == limit else _levels(Limits(rpm=judged), accounting, t0, c, ev)[
                "requests_after"]
            _judge_headers(label, c, ev, adm_k, after_judged, judged, wins[d], findings)
        if mismatch is not None:  # what the headers' remaining says of the capacity (stuck ones aside)
            stuck = {f["detail"]["attempt_id"] for f in findings if f["kind"] == "remaining_stuck"}
            rem = [h[0][d]["remaining"] for h, a in zip(c.headers, c.attempt_id, strict=True)
                   if h and h[0] and d in h[0] and h[0][d]["remaining"] is not None and a not in stuck]
            mismatch["detail"]["largest_remaining_plus_one"] = (
                (max(rem) + 1 if d == "requests" else max(rem)) if rem else None)
        out["dimensions"][d] = {
            "limit": limit, "limit_source": sources[d], "accepted": accepted, "allowed": limit + rate * span,
            "overshoot": over, "overshoot_pct": 100.0 * over / accepted if accepted else None,
            "refusals_attributed": len(attributed[d]), "early_refusals": early[d], "late_acceptances": late,
            "tolerance": tol, "empty_to_first_429": _episodes(d, accounting, c, ev, lv),
            "drift": {"remaining": _abs_stats(drift_rem), "reset_s": _abs_stats(drift_reset)}}
    if "tokens" in dims:
        over = float(lv["overshoot_tokens"])
        out["overshoot_tokens"] = over
        out["overshoot_pct"] = 100.0 * over / accepted_tokens if accepted_tokens else None
    fin = np.flatnonzero(ev.kind == _FIN)
    replay.tokens = list(zip(ev.time[fin].tolist(), np.cumsum(c.actual[ev.row[fin]]).astype(float).tolist(),
                             strict=True))
    return out, replay


def _judge_headers(label: str, c: _Calls, ev: _Events, adm_k: np.ndarray, after: np.ndarray, limit: float,
                   win: _Window, findings: list[dict[str, Any]]) -> None:
    """The planted-header findings on the requests dimension, per admitted attempt: a remaining above what the
    model (at `limit`) allows by more than the tolerance, a reset outside the model's range by more than its own."""
    rate, tol, tol_t = limit / 60.0, _tol(limit), max(2.0, 120.0 / limit)
    for k, i in zip(adm_k.tolist(), ev.row[adm_k].tolist(), strict=True):
        h = c.headers[i]
        rep = (h[0] or {}).get("requests") if h else None
        if not rep:
            continue
        level, te, hs = float(after[k]), float(ev.time[k]), float(c.h[i])
        hi_level = min(limit - 1.0, level + float(win.before[i]) + rate * hs)
        lo_level = level - float(win.after[i])
        if rep["remaining"] is not None and rep["remaining"] - math.floor(max(hi_level, 0.0)) > tol:
            findings.append(_finding("remaining_stuck", label, "requests", c.request_id[i], {
                "reported": rep["remaining"], "model": math.floor(max(level, 0.0)),
                "model_at_most": math.floor(max(hi_level, 0.0)), "tolerance": tol, "limit": limit, "t": te,
                "attempt_id": c.attempt_id[i]}))
        if rep["reset_s"] is not None:
            lo_s, hi_s = max(0.0, (limit - hi_level) / rate), max(0.0, (limit - lo_level) / rate)
            if not lo_s - tol_t <= rep["reset_s"] <= hi_s + tol_t:
                findings.append(_finding("reset_wrong", label, "requests", c.request_id[i], {
                    "reported_s": rep["reset_s"], "model_s": _reset_s(limit, level, te, te + hs),
                    "model_range_s": [lo_s, hi_s], "tolerance_s": tol_t, "limit": limit, "t": te,
                    "attempt_id": c.attempt_id[i]}))


def _tol(limit: float) -> float:
    """How far the gateway's count may stray from the model's (replicas, clocks): max(2, 10% of the limit)."""
    return max(2.0, 0.1 * limit)


def _finding(kind: str, tenant: str, dim: str, request_id: Any, detail: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "tenant": tenant, "dimension": dim,
            "request_id": request_id if isinstance(request_id, str) else None, "detail": detail}


def analyse(att: pd.DataFrame, headers: dict[str, Header],
            settings: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, dict[str, Replay]]:
    """The limit report (summary `limits`, None without rate-limit headers or limits) and each tenant's replay."""
    settings = settings or {}
    accounting = settings.get("accounting", DEFAULT_ACCOUNTING)
    if accounting not in ACCOUNTING:
        raise ValueError(f"unknown accounting {accounting!r}")
    max_output = int(settings.get("max_output_default", MAX_OUTPUT_DEFAULT))
    configured = settings.get("tenants") or {}
    if att.empty or "tenant" not in att:
        return None, {}
    frame = att.loc[att["t_start"].notna(), list(COLUMNS)]
    labels = frame["tenant"].astype(object).where(frame["tenant"].notna(), UNNAMED)
    present = sorted(set(labels.tolist()))
    with_limits = any((configured.get(lb) or {}).get(k) for lb in present for k in ("rpm", "tpm"))
    if not with_limits and not any(h[0] for h in headers.values()):
        return None, {}
    tenants: dict[str, Any] = {}
    replays: dict[str, Replay] = {}
    findings: list[dict[str, Any]] = []
    for label in present:
        c = _calls(frame[labels == label], headers, max_output)
        tenants[label], replays[label] = _tenant(label, c, configured.get(label) or {}, accounting, findings)
    counts = dict.fromkeys(FINDING_KINDS, 0)
    for f in findings:
        counts[f["kind"]] += 1
    return {"accounting": accounting, "max_output_default": max_output, "tenants": tenants, "findings": findings,
            "finding_counts": counts}, replays


def limits_report(att: pd.DataFrame, records: str | Path, settings: dict[str, Any] | None = None,
                  headers: dict[str, Header] | None = None) -> tuple[dict[str, Any] | None, dict[str, Replay]]:
    """analyse() of a run's records frame, with the rate-limit headers read from its records file (or given)."""
    settings = settings or {}
    if att.empty or "tenant" not in att:
        return None, {}
    if not att["tenant"].notna().any() and _first_version(records) in (1, 2):
        return analyse(att, {}, settings)  # records before version 3 have no rate-limit headers: no pass
    return analyse(att, read_headers(records) if headers is None else headers, settings)


def _first_version(path: str | Path) -> Any:
    """The version of a records file's first record (None when it does not parse)."""
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    d = orjson.loads(line)
                    return d.get("v") if isinstance(d, dict) else None
    except (OSError, orjson.JSONDecodeError):
        return None
    return None
