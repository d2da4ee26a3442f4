"""The rate-limit model the simulator enforces and the analysis replays: continuous token buckets per tenant.

Each per-minute limit is a bucket of capacity = the limit, refilled continuously at limit/60 per second (never
above its capacity). Requests cost 1 at admission. Tokens (input + output) are counted in one of two modes:

- `admission` (the OpenAI and Anthropic style): a call is admitted only when the bucket holds its estimate
  (input tokens + max_tokens); the estimate is taken at admission and reconciled to the real count when the call
  ends (the difference goes back, up to the capacity). The bucket never goes below zero.
- `after_call` (the Envoy AI Gateway, APISIX and Kong style): a call is admitted while the bucket is above zero;
  its real tokens are taken when it ends, so concurrent streams that finish together drive the bucket below zero.

The overshoot of a debit is how far it takes the bucket below zero beyond where it already was: the tokens
accepted past the limit. A concurrency limit counts calls in flight. This module imports only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

ACCOUNTING = ("admission", "after_call")
#: The dimensions a call can be refused on, in the order they are checked.
DIMENSIONS = ("budget", "concurrency", "requests", "tokens")


class Bucket:
    """A continuous token bucket: capacity `limit`, refilled at limit/60 per second; starts full at `t`."""

    __slots__ = ("limit", "rate", "level", "t")

    def __init__(self, limit: float, t: float) -> None:
        self.limit = float(limit)
        self.rate = self.limit / 60.0
        self.level = self.limit
        self.t = t

    def advance(self, t: float) -> float:
        """Refill up to time t (never backwards, never above the capacity); returns the level."""
        if t > self.t:
            self.level = min(self.limit, self.level + (t - self.t) * self.rate)
            self.t = t
        return self.level

    def take(self, amount: float, t: float) -> float:
        """Take `amount` at t (the level may go below zero); returns the overshoot of this debit."""
        before = self.advance(t)
        self.level = before - amount
        return max(0.0, amount - max(before, 0.0))

    def give(self, amount: float, t: float) -> None:
        """Give `amount` back at t, up to the capacity."""
        self.advance(t)
        self.level = min(self.limit, self.level + amount)

    def reset_s(self, t: float) -> float:
        """Seconds from t until the bucket is full again."""
        level = self.advance(t)
        return max(0.0, (self.limit - level) / self.rate) if self.rate > 0 else 0.0

    def wait_s(self, need: float, t: float) -> float:
        """Seconds from t until the bucket holds `need`."""
        level = self.advance(t)
        return max(0.0, (need - level) / self.rate) if self.rate > 0 else 0.0


@dataclass(slots=True)
class Limits:
    """One tenant's limits (None: unlimited)."""

    rpm: float | None = None
    tpm: float | None = None
    concurrency: int | None = None


class TenantLimiter:
    """One tenant's buckets and calls in flight: admits or refuses a call, settles its tokens when it ends."""

    def __init__(self, limits: Limits, accounting: str, t: float) -> None:
        if accounting not in ACCOUNTING:
            raise ValueError(f"unknown accounting {accounting!r} (known: {', '.join(ACCOUNTING)})")
        self.limits = limits
        self.accounting = accounting
        self.requests = Bucket(limits.rpm, t) if limits.rpm is not None else None
        self.tokens = Bucket(limits.tpm, t) if limits.tpm is not None else None
        self.in_flight = 0
        self.overshoot_tokens = 0.0
        self.overshoot_requests = 0.0

    def refusal(self, t: float, estimate: int) -> str | None:
        """The dimension that refuses a call at t with this token estimate, or None when it may be admitted."""
        if self.limits.concurrency is not None and self.in_flight >= self.limits.concurrency:
            return "concurrency"
        if self.requests is not None and self.requests.advance(t) < 1.0:
            return "requests"
        if self.tokens is not None:
            level = self.tokens.advance(t)
            if (self.accounting == "admission" and level < estimate) or level <= 0.0:
                return "tokens"
        return None

    def admit(self, t: float, estimate: int) -> None:
        """Count an admitted call: one request, and in `admission` mode its token estimate."""
        self.in_flight += 1
        if self.requests is not None:
            self.overshoot_requests += self.requests.take(1.0, t)
        if self.tokens is not None and self.accounting == "admission":
            self.overshoot_tokens += self.tokens.take(float(estimate), t)

    def finish(self, t: float, estimate: int, actual: int) -> float:
        """Settle an admitted call's tokens at its end; returns the overshoot of this debit."""
        self.in_flight = max(0, self.in_flight - 1)
        if self.tokens is None:
            return 0.0
        if self.accounting == "admission":
            if actual > estimate:
                over = self.tokens.take(float(actual - estimate), t)
                self.overshoot_tokens += over
                return over
            self.tokens.give(float(estimate - actual), t)
            return 0.0
        over = self.tokens.take(float(actual), t)
        self.overshoot_tokens += over
        return over

    def levels(self, t: float) -> dict[str, float | None]:
        """The buckets' levels at t (None: no such limit)."""
        return {"requests": None if self.requests is None else self.requests.advance(t),
                "tokens": None if self.tokens is None else self.tokens.advance(t)}
