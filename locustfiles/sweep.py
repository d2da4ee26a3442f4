"""A capacity sweep that stops once the gateway is past saturation: each open-loop stage's figures, judged live.

Each stage is judged once it is over and its calls had time to finish: its served share (successful calls over
the arrivals the schedule offered, both counted after the stage's settle window) and its TTFT p95 (per call,
from its first attempt). The rule is `ttformats.sweep.early_stop_verdict`, the one the report cites.
"""

from __future__ import annotations

import time
from typing import Any

from ttformats.calls import call_ttft_ms
from ttformats.sweep import early_stop_verdict

from .scenario import Scenario


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * 0.95
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class SweepWatch:
    """Collects each stage's final records and says when the rule stops the sweep."""

    def __init__(self, scenario: Scenario, rule: dict[str, Any], settle_s: float, schedule: list[float]) -> None:
        self.scenario = scenario
        self.rule = rule
        self.settle_s = settle_s
        self.bounds: list[tuple[float, float]] = []  # each stage's (start, end), seconds into the run
        t = 0.0
        for st in scenario.stages:
            self.bounds.append((t, t + st.duration_s))
            t += st.duration_s
        self.offered = [sum(1 for a in schedule if lo + settle_s <= a < hi) for lo, hi in self.bounds]
        self.ok = [0] * len(self.bounds)
        self.ttft: list[list[float]] = [[] for _ in self.bounds]
        self.first_start: dict[str, float] = {}
        self.start_epoch: float | None = None
        self.figures: list[dict[str, Any]] = []

    def add(self, rec: dict[str, Any]) -> None:
        """Fold in one attempt record."""
        if self.start_epoch is None:
            return
        call = rec["call_id"]
        first = self.first_start.setdefault(call, rec["t_start"])
        if not rec.get("final"):
            return
        self.first_start.pop(call, None)
        stage = rec.get("stage")
        if stage is None or not rec.get("ok") or rec.get("dry_run") or not 0 <= stage < len(self.bounds):
            return
        if first - self.start_epoch < self.bounds[stage][0] + self.settle_s:
            return  # in the stage's settle window
        self.ok[stage] += 1
        if rec.get("first_content_ms") is not None:
            self.ttft[stage].append(call_ttft_ms(first, rec["t_start"], rec["first_content_ms"]))

    def judge(self, stage: int) -> tuple[int, str] | None:
        """The figures of stages 0..stage, and the rule's verdict on them (None: go on)."""
        while len(self.figures) <= stage:
            i = len(self.figures)
            offered = self.offered[i]
            self.figures.append({"stage": i, "offered": offered, "served": self.ok[i],
                                 "served_share": self.ok[i] / offered if offered else None,
                                 "ttft_p95_ms": _p95(self.ttft[i])})
        return early_stop_verdict(self.figures, self.rule)

    def wait_times(self, grace_s: float) -> list[float]:
        """Seconds into the run at which each stage is judged (its end plus time for its calls to finish)."""
        return [hi + grace_s for _, hi in self.bounds]

    def run(self, start_epoch: float, grace_s: float, stop: Any, sleep: Any) -> None:
        """Judge each stage in turn; `stop(stage, reason)` when the rule fires (in a greenlet)."""
        self.start_epoch = start_epoch
        for i, when in enumerate(self.wait_times(grace_s)[:-1]):  # the last stage ends the run anyway
            delay = start_epoch + when - time.time()
            if delay > 0:
                sleep(delay)
            verdict = self.judge(i)
            if verdict is not None:
                stop(*verdict)
                return
