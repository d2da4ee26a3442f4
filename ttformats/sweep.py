"""When a capacity sweep is past saturation: the early-stop rule, shared by the load generator (which stops the
sweep) and the report (which says where and why).

A stage is *saturated* when its served share (successful calls over offered arrivals) is below
`served_share_below`, or when its TTFT p95 grew by more than `ttft_p95_growth` times over the previous stage's.
The sweep stops after `consecutive` saturated stages in a row: every later stage would only add queueing and 429s.
"""

from __future__ import annotations

from typing import Any

DEFAULT_RULE = {"served_share_below": 0.9, "ttft_p95_growth": 2.0, "consecutive": 2}


def rule_of(raw: Any) -> dict[str, float] | None:
    """The rule from a scenario's `analysis.early_stop` (true: the defaults; false or absent: off)."""
    if raw is None or raw is False:
        return None
    rule = dict(DEFAULT_RULE)
    if isinstance(raw, dict):
        rule.update(raw)
    return rule


def saturated(stage: dict[str, Any], previous: dict[str, Any] | None, rule: dict[str, Any]) -> str | None:
    """Why one stage counts as saturated (None: it does not)."""
    share = stage.get("served_share")
    limit = rule.get("served_share_below")
    if share is not None and limit is not None and share < limit:
        return f"served share {share:.2f} < {limit:g}"
    growth = rule.get("ttft_p95_growth")
    now = stage.get("ttft_p95_ms")
    before = previous.get("ttft_p95_ms") if previous else None
    if growth is not None and now is not None and before and now > growth * before:
        return f"TTFT p95 grew {now / before:.1f}x ({before:.0f} -> {now:.0f} ms)"
    return None


def early_stop_verdict(stages: list[dict[str, Any]], rule: dict[str, Any] | None) -> tuple[int, str] | None:
    """(the stage at which the sweep stops, why) once `consecutive` stages in a row are saturated; else None.

    `stages` are in order, each {"served_share": float | None, "ttft_p95_ms": float | None}.
    """
    if not rule:
        return None
    need = int(rule.get("consecutive", 2))
    run: list[str] = []
    for i, st in enumerate(stages):
        why = saturated(st, stages[i - 1] if i else None, rule)
        run = [*run, f"stage {i}: {why}"] if why else []
        if len(run) >= need:
            return i, "; ".join(run[-need:])
    return None
