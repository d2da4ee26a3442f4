"""Idempotent retries: which errors to retry, backoff with full jitter, Retry-After, a per-run budget."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

#: Retried against a gateway that honours Idempotency-Key (a retry of a billed attempt gets the replay).
RETRYABLE = frozenset({"http_429", "http_5xx", "connect", "reset", "timeout", "truncated", "protocol", "stream_error"})
#: Statuses that say the gateway did not take the call (so it cannot have billed it).
NOT_TAKEN_STATUSES = frozenset({429, 503, 529})



@dataclass(slots=True)
class RetryPolicy:
    """Attempts per call, backoff, and the run's retry budget."""

    max_attempts: int = 4
    base_s: float = 0.25
    cap_s: float = 8.0
    budget: int = 1000
    max_retry_after_s: float = 60.0

    def should_retry(self, out: Any, attempt: int, idempotent: bool) -> bool:
        """Whether this failed attempt (a transport Outcome) is worth another try (budget aside).

        Never: an answer that arrived whole (a `protocol` failure of a complete message), `x-should-retry: false`,
        a quota refusal (the profile's `refusals`).
        Against a gateway that does not honour Idempotency-Key, only what cannot have been billed: a connection
        that failed before the request was sent, 429, 503 and 529.
        """
        kind = out.error_kind
        if attempt >= self.max_attempts or kind is None or kind == "cancelled" or out.should_retry is False:
            return False
        if getattr(out, "refusal", None) == "quota":
            return False  # a spend budget or credit refusal: final whatever its status
        if kind == "protocol" and out.complete:
            return False  # the whole answer arrived: retrying cannot mend it, and it may have been billed
        if not idempotent:
            return (kind == "connect" and not out.sent) or out.status in NOT_TAKEN_STATUSES
        return kind in RETRYABLE or out.status == 409

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


class LeasedBudget(RetryBudget):
    """A worker's view of the run's one retry budget, held by the master: retries are leased in small
    batches, so the run never spends more than its budget whatever the number of workers."""

    def __init__(self, ask: Any, wait_s: float = 2.0) -> None:
        super().__init__(0)
        self._ask = ask          # ask(n): sends a lease request to the master
        self._wait_s = wait_s
        self._event: Any = None
        self.exhausted = False   # the master said the budget is spent

    def granted(self, n: int) -> None:
        """The master's answer to a lease request."""
        self.left += n
        if n <= 0:
            self.exhausted = True
        if self._event is not None:
            self._event.set()

    def take(self) -> bool:
        """Use one retry, asking the master for more when this worker's lease is empty."""
        if self.left <= 0 and not self.exhausted:
            import gevent.event

            if self._event is None:
                self._event = gevent.event.Event()
                self._ask()
            event = self._event
            event.wait(self._wait_s)
            if self._event is event:
                self._event = None
        return super().take()


class BudgetPool:
    """The master's side: the run's retry budget, leased to workers."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total
        self.granted_total = 0

    def lease(self, workers: int) -> int:
        """How many retries to grant one request: a small share of the budget, never more than is left."""
        n = min(self.left, max(1, self.total // max(8, 8 * workers)))
        self.left -= n
        self.granted_total += n
        return n
