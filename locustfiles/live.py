"""Live LLM figures computed from records as they come in (local process, or the master)."""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

from .records import decode_chunks


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of the values, None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class Live:
    """Rolling aggregates over the records seen so far."""

    def __init__(self, window: int = 20000) -> None:
        self.started = time.time()
        self.calls = 0
        self.attempts = 0
        self.ok_calls = 0
        self.failed_calls = 0
        self.cancelled = 0
        self.retries = 0
        self.errors: Counter[tuple[str, str]] = Counter()
        self.ttft: deque[float] = deque(maxlen=window)
        self.itl: deque[float] = deque(maxlen=window)
        self.tokens_out = 0
        self.estimate_total = 0.0
        self.recent: deque[float] = deque(maxlen=window)  # end times of finished calls

    def add(self, rec: dict[str, Any]) -> None:
        """Fold one attempt record in."""
        self.attempts += 1
        if rec["attempt"] > 1:
            self.retries += 1
        kind = rec.get("error_kind")
        if kind == "cancelled":
            self.cancelled += 1
        elif kind:
            self.errors[(rec["endpoint"], kind)] += 1
        if not rec.get("final"):
            return
        if kind == "cancelled":
            return
        self.calls += 1
        self.recent.append(rec["t_start"] + rec["end_ms"] / 1000.0)
        if not rec.get("ok"):
            self.failed_calls += 1
            return
        self.ok_calls += 1
        if rec.get("estimate"):
            amount = (rec["estimate"].get("estimate") or {}).get("amount")
            try:
                self.estimate_total += float(amount)
            except (TypeError, ValueError):
                pass
        if rec.get("stream") and rec.get("first_content_ms") is not None:
            self.ttft.append(rec["first_content_ms"])
            times = decode_chunks(rec.get("chunks"))
            self.itl.extend(b - a for a, b in zip(times, times[1:], strict=False))
        usage = rec.get("usage") or {}
        self.tokens_out += int(usage.get("output") or 0)

    def rate(self, seconds: float = 10.0) -> float:
        """Calls finished per second over the last `seconds`."""
        now = time.time()
        n = sum(1 for t in self.recent if now - t <= seconds)
        return n / min(seconds, max(0.001, now - self.started))

    def snapshot(self) -> dict[str, Any]:
        """The figures the progress line and the web UI show."""
        ttft = list(self.ttft)
        return {
            "calls": self.calls, "ok": self.ok_calls, "failed": self.failed_calls, "retries": self.retries,
            "cancelled": self.cancelled, "rps": self.rate(), "ttft_p50": percentile(ttft, 50),
            "ttft_p95": percentile(ttft, 95), "itl_p50": percentile(list(self.itl), 50),
            "tokens_out": self.tokens_out, "tokens_per_s": self.tokens_out / max(0.001, time.time() - self.started),
            "errors": {f"{e} {k}": n for (e, k), n in sorted(self.errors.items())},
            "estimate_total": self.estimate_total,
        }
