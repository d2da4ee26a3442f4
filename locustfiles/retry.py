"""Idempotent retries: which errors to retry, backoff with full jitter, Retry-After, a per-run budget."""

from __future__ import annotations

import random
from dataclasses import dataclass

RETRYABLE = frozenset({"http_429", "http_5xx", "connect", "reset", "timeout", "truncated", "protocol", "stream_error"})


@dataclass(slots=True)
class RetryPolicy:
    """Attempts per call, backoff, and the run's retry budget."""

    max_attempts: int = 4
    base_s: float = 0.25
    cap_s: float = 8.0
    budget: int = 1000
    max_retry_after_s: float = 60.0

    def should_retry(self, error_kind: str | None, status: int | None, attempt: int) -> bool:
        """Whether this failed attempt is worth another try (budget aside)."""
        if attempt >= self.max_attempts or error_kind is None:
            return False
        return error_kind in RETRYABLE or status == 409

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds to wait before the next attempt: full jitter, at least Retry-After when given."""
        jitter = rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s) + rng.uniform(0.0, self.base_s)
        return jitter


class RetryBudget:
    """Retries left in this process's share of the run's budget."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.spent = 0
        self.denied = 0

    def take(self) -> bool:
        """Use one retry if any is left."""
        if self.left <= 0:
            self.denied += 1
            return False
        self.left -= 1
        self.spent += 1
        return True
