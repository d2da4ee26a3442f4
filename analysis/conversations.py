"""Multi-turn conversations: TTFT by turn and by context length, cached input by turn."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .metrics import dist


def by_turn(calls: pd.DataFrame) -> dict[str, Any] | None:
    """Per turn: calls, TTFT, input and cached input tokens (sessions only); and TTFT by context length."""
    if calls.empty or "turn" not in calls or calls["turn"].isna().all():
        return None
    okc = calls[calls["ok"] & ~calls["cancelled"] & calls["turn"].notna()]
    if okc.empty:
        return None
    turns = []
    for turn, sub in okc.groupby(okc["turn"].astype(int)):
        cached = sub["u_cached"].fillna(0)
        inp = sub["u_input"].fillna(0)
        turns.append({"turn": int(turn), "calls": int(len(sub)), "ttft_ms": dist(sub["ttft_ms"]),
                      "input_tokens_mean": float(inp.mean()), "cached_input_tokens_mean": float(cached.mean()),
                      "cached_share": float(cached.sum() / inp.sum()) if inp.sum() else 0.0})
    streamed = okc[okc["ttft_ms"].notna() & okc["u_input"].notna()]
    ctx: list[dict[str, Any]] = []
    if len(streamed) >= 4:
        edges = np.unique(np.quantile(streamed["u_input"], [0, 0.25, 0.5, 0.75, 1.0]))
        if len(edges) >= 2:
            bins = pd.cut(streamed["u_input"], edges, include_lowest=True)
            for interval, sub in streamed.groupby(bins, observed=True):
                ctx.append({"input_tokens": f"{int(interval.left)}-{int(interval.right)}",
                            "calls": int(len(sub)), "ttft_ms": dist(sub["ttft_ms"])})
    return {"sessions": int(okc["session_id"].nunique()), "by_turn": turns, "by_context_length": ctx}
