"""Live LLM figures computed from records as they come in (in a local process, or on the master)."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from ttformats.calls import call_ttft_ms, counts_as_attempt

from .dialects import TEXT_ENDPOINTS
from .records import chunk_gaps_us


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of the values, None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


class Bucket:
    """Aggregates for one stats name (or for all of them)."""

    def __init__(self, window: int) -> None:
        self.calls = 0
        self.ok = 0
        self.failed = 0
        self.retries = 0
        self.cancelled = 0
        self.errors: Counter[str] = Counter()
        self.ttft: deque[float] = deque(maxlen=window)
        self.itl: deque[int] = deque(maxlen=window * 4)  # chunk gaps, whole µs
        self.tokens_out = 0
        self.estimate_total = 0.0
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.recent: deque[float] = deque(maxlen=window)

    def add(self, rec: dict[str, Any], first_t_start: float | None = None,
            gaps: Iterable[int] | None = None) -> None:
        """Fold one attempt record in; `first_t_start`: the start of its call's first attempt (default: its own);
        `gaps`: its chunk gaps in whole µs when already decoded."""
        kind = rec.get("error_kind")
        if rec["attempt"] > 1 and counts_as_attempt(kind, rec.get("sent")):
            self.retries += 1
        if kind == "cancelled":
            self.cancelled += 1
        elif kind:
            self.errors[kind] += 1
        if not rec.get("final") or kind == "cancelled":
            return
        end = rec["t_start"] + rec["end_ms"] / 1000.0
        self.first_start = rec["t_start"] if self.first_start is None else min(self.first_start, rec["t_start"])
        self.last_end = end if self.last_end is None else max(self.last_end, end)
        self.calls += 1
        self.recent.append(end)
        if not rec.get("ok"):
            self.failed += 1
            return
        self.ok += 1
        est = rec.get("estimate")
        if est:
            try:
                self.estimate_total += float((est.get("estimate") or {}).get("amount"))
            except (TypeError, ValueError):
                pass
        if rec.get("stream") and not rec.get("dry_run") and rec.get("first_content_ms") is not None:
            first = rec["t_start"] if first_t_start is None else first_t_start
            self.ttft.append(call_ttft_ms(first, rec["t_start"], rec["first_content_ms"]))  # replays too
            if not rec.get("replayed"):  # a replay's frames arrive in one burst
                self.itl.extend(chunk_gaps_us(rec.get("chunks")) if gaps is None else gaps)
        if rec.get("endpoint") in TEXT_ENDPOINTS:
            self.tokens_out += int((rec.get("usage") or {}).get("output") or 0)

    def snapshot(self, now: float, started: float) -> dict[str, Any]:
        """The figures shown for this bucket."""
        ttft = list(self.ttft)
        span = max(1e-3, now - started)
        recent = sum(1 for t in self.recent if now - t <= 10.0) / min(10.0, span)
        return {
            "calls": self.calls, "ok": self.ok, "failed": self.failed, "retries": self.retries,
            "cancelled": self.cancelled, "rps": recent, "ttft_p50": percentile(ttft, 50),
            "ttft_p95": percentile(ttft, 95), "itl_p50": _ms(percentile(list(self.itl), 50)),
            "tokens_out": self.tokens_out, "tokens_per_s": self.tokens_out / span,
            "errors": dict(sorted(self.errors.items())), "estimate_total": self.estimate_total,
        }


class Live:
    """Rolling aggregates over the records seen so far, overall and per stats name."""

    def __init__(self, window: int = 20000) -> None:
        self.started = time.time()
        self.window = window
        self.overall = Bucket(window)
        self.by_name: dict[str, Bucket] = {}
        self.attempts = 0
        self.open_calls: dict[str, float] = {}  # call id -> its first attempt's start, until its final record

    def add(self, rec: dict[str, Any]) -> None:
        """Fold one attempt record in."""
        call = rec.get("call_id")
        if call is None:
            first = None
        elif rec.get("final"):
            first = self.open_calls.pop(call, rec["t_start"])
        else:
            first = self.open_calls.setdefault(call, rec["t_start"])
        if counts_as_attempt(rec.get("error_kind"), rec.get("sent")):
            self.attempts += 1
        gaps = chunk_gaps_us(rec.get("chunks"))  # decoded once for both buckets
        self.overall.add(rec, first, gaps)
        bucket = self.by_name.get(rec["name"])
        if bucket is None:
            bucket = self.by_name[rec["name"]] = Bucket(self.window)
        bucket.add(rec, first, gaps)

    def reset(self) -> None:
        """Start over (a new run from the web UI)."""
        self.__init__(self.window)  # type: ignore[misc]

    def snapshot(self) -> dict[str, Any]:
        """Overall figures (the progress line uses these)."""
        snap = self.overall.snapshot(time.time(), self.started)
        snap["errors"] = dict(snap["errors"])
        return snap

    def rows(self, in_flight: int | None = None) -> list[dict[str, Any]]:
        """One row per stats name plus an overall row, formatted for the web UI's LLM table."""
        now = time.time()

        def fmt(v: float | None, digits: int = 1) -> str:
            return "" if v is None else f"{v:.{digits}f}"

        out = []
        for name, b in [("All", self.overall), *sorted(self.by_name.items())]:
            s = b.snapshot(now, self.started)
            out.append({
                "name": name, "calls": s["calls"], "failed": s["failed"], "retries": s["retries"],
                "errors": ", ".join(f"{k} {v}" for k, v in s["errors"].items()),
                "ttft_p50": fmt(s["ttft_p50"]), "ttft_p95": fmt(s["ttft_p95"]), "itl_p50": fmt(s["itl_p50"]),
                "tokens_per_s": fmt(s["tokens_per_s"]), "rps": fmt(s["rps"], 2),
                "estimate_total": f"{s['estimate_total']:.6f}" if s["estimate_total"] else "",
                "in_flight": "" if name != "All" or in_flight is None else str(in_flight),
            })
        return out
