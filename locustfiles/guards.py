"""Runs that cannot succeed stop instead of hammering the gateway: refused keys and the same 4xx on every call."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from .profile import Profile

#: Exit codes of a run (README "Running a scenario").
EXIT_OK, EXIT_GATES, EXIT_BAD_INPUT, EXIT_REFUSED_MID_RUN = 0, 1, 2, 3
#: The first calls judged together: all refused, or all failing with the same 4xx, stops the run (exit 2).
FIRST_CALLS = 3
#: Mid-run: over the last WINDOW_S seconds, at least MIN_CALLS calls of which more than SHARE refused (exit 3).
WINDOW_S = 10.0
MIN_CALLS = 10
SHARE = 0.5


def describe(rec: dict[str, Any]) -> str:
    """The gateway's error of a record in one line (status, type, code; never a message text)."""
    return rec.get("error") or f"HTTP {rec.get('status')}"


class Hopeless:
    """Watches the final records of calls and says when a run must stop, with its exit code and reason."""

    def __init__(self, profile: Profile, window_s: float = WINDOW_S, min_calls: int = MIN_CALLS,
                 share: float = SHARE) -> None:
        self.profile = profile
        self.window_s = window_s
        self.min_calls = min_calls
        self.share = share
        self.first: list[dict[str, Any]] = []
        self.recent: deque[tuple[float, bool]] = deque()
        self.recent_refused = 0  # how many of `recent` were refused (kept as they come and go)
        self.refused_total = 0

    def refused(self, rec: dict[str, Any]) -> bool:
        """Whether the gateway refused the key (401/403, or an error body the profile names; an answer never)."""
        return not rec.get("ok") and self.profile.is_auth_error(rec.get("status"), rec.get("error_type"),
                                                                rec.get("error_code"), rec.get("error_reason"))

    def observe(self, rec: dict[str, Any], now: float | None = None) -> tuple[int, str] | None:
        """Fold in a call's final record; (exit code, reason) when the run must stop."""
        if rec.get("error_kind") == "cancelled" or rec.get("refusal") == "quota":
            return None  # a quota refusal ends its key's calls (the runtime's tenants), not the run by itself
        refused = self.refused(rec)
        self.refused_total += refused
        if len(self.first) < FIRST_CALLS:
            self.first.append(rec)
            if len(self.first) == FIRST_CALLS:
                verdict = self._first_verdict()
                if verdict is not None:
                    return verdict
        now = time.time() if now is None else now
        recent = self.recent
        recent.append((now, refused))
        self.recent_refused += refused
        while recent and now - recent[0][0] > self.window_s:
            self.recent_refused -= recent.popleft()[1]
        n = len(recent)
        bad = self.recent_refused
        if n >= self.min_calls and bad / n > self.share:
            return EXIT_REFUSED_MID_RUN, (f"the target refused the API key on {bad} of the last {n} calls "
                                          f"({self.window_s:g} s): {describe(rec)}")
        return None

    def _first_verdict(self) -> tuple[int, str] | None:
        first = self.first
        if all(self.refused(r) for r in first):
            return EXIT_BAD_INPUT, f"the target refused the API key on the first {len(first)} calls: {describe(first[-1])}"
        if all(r.get("error_kind") == "http_4xx" for r in first):
            sig = {(r.get("status"), r.get("error_type"), r.get("error_code")) for r in first}
            if len(sig) == 1:
                models = sorted({str(r.get("model")) for r in first})
                return EXIT_BAD_INPUT, (f"the first {len(first)} calls all failed with the same error, "
                                        f"{describe(first[-1])} (model {', '.join(models)}; a mistyped model name "
                                        "or a request the gateway does not take?)")
        return None
