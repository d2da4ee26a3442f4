"""Plots as PNG bytes (matplotlib, no display)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kw: Any) -> tuple[Figure, Any]:
    """A figure on its own Agg canvas and its axes, as plt.subplots gives them (pyplot is never imported: no
    global figure registry, and a quicker import)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def ttft_cdf(cdfs: dict[str, tuple[np.ndarray, np.ndarray, int]]) -> bytes | None:
    """CDF of TTFT per endpoint (successful streamed calls), from exact quantiles: {endpoint: (values, levels, n)}."""
    if not cdfs:
        return None
    fig, ax = _subplots(figsize=(7, 4))
    for label, (values, levels, n) in cdfs.items():
        ax.plot(values, levels, label=f"{label} (n={n})")
    ax.set_xlabel("time to first token (ms)")
    ax.set_ylabel("share of calls")
    ax.set_title("TTFT CDF per endpoint")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def _cdfs(series: list[tuple[str, Any]], xlabel: str, ylabel: str, title: str) -> bytes | None:
    """Empirical CDFs of several (label, values) series in one figure; None when every series is empty."""
    series = [(label, np.sort(np.asarray(v, dtype=np.float64))) for label, v in series]
    series = [(label, v) for label, v in series if v.size]
    if not series:
        return None
    fig, ax = _subplots(figsize=(7, 4))
    for label, v in series:
        ax.plot(v, np.arange(1, v.size + 1) / v.size, label=f"{label} (n={v.size})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def over_time(ts: list[dict[str, Any]]) -> bytes | None:
    """Latency and throughput per second, with the arrival rate."""
    if not ts:
        return None
    df = pd.DataFrame(ts)
    fig, (a1, a2) = _subplots(2, 1, figsize=(8, 5.5), sharex=True)
    for col, label in (("ttft_p50_ms", "TTFT p50"), ("ttft_p95_ms", "TTFT p95"), ("e2e_p50_ms", "E2E p50")):
        if df[col].notna().any():
            a1.plot(df["second"], df[col], label=label)
    a1.set_ylabel("ms")
    a1.set_title("Latency and throughput over time")
    a1.grid(alpha=0.3)
    if a1.get_legend_handles_labels()[0]:
        a1.legend()
    a2.plot(df["second"], df["calls"], label="calls started/s (arrivals)")
    a2.plot(df["second"], df["ok"], label="successful calls/s")
    a2.plot(df["second"], df["failed"], label="failed calls/s")
    a2.set_xlabel("second of the run")
    a2.set_ylabel("calls/s")
    a2.grid(alpha=0.3)
    ax3 = a2.twinx()
    ax3.plot(df["second"], df["output_tokens"], color="grey", alpha=0.5, label="output tokens/s")
    ax3.set_ylabel("output tokens/s")
    ax3.set_ylim(bottom=0)
    a2.set_ylim(bottom=0)
    h1, l1 = a2.get_legend_handles_labels()
    h2, l2 = ax3.get_legend_handles_labels()
    a2.legend(h1 + h2, l1 + l2, loc="lower left", fontsize=8)
    return _png(fig)


def tps_hist(edges: np.ndarray, counts: np.ndarray) -> bytes | None:
    """Histogram of output tokens/s per request (bin edges and counts)."""
    if counts is None or not counts.sum():
        return None
    fig, ax = _subplots(figsize=(7, 3.5))
    ax.stairs(counts, edges, fill=True)
    ax.set_xlabel("output tokens/s per request")
    ax.set_ylabel("calls")
    ax.set_title("Output tokens/s per request")
    return _png(fig)


def capacity_curve(cap: dict[str, Any] | None) -> bytes | None:
    """Offered vs achieved rate per stage, with p95 TTFT."""
    if not cap:
        return None
    df = pd.DataFrame([s for s in cap["stages"] if s.get("ran", True) and s.get("achieved_rps") is not None])
    if df.empty:
        return None
    x = df["offered_rps"].where(df["offered_rps"].notna(), df["users"]).astype(float)
    fig, ax = _subplots(figsize=(7, 4))
    ax.plot(x, df["achieved_rps"], "o-", label="achieved req/s")
    ax.plot(x, x if df["offered_rps"].notna().all() else df["achieved_rps"], ":", color="grey", label="offered")
    ax.set_xlabel("offered req/s" if df["offered_rps"].notna().all() else "users")
    ax.set_ylabel("req/s")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(x, df["ttft_p95_ms"], "s--", color="tab:red", label="TTFT p95 (ms)")
    ax2.set_ylabel("TTFT p95 (ms)")
    if cap.get("max_sustainable_rps"):
        ax.axvline(cap["max_sustainable_rps"], color="tab:green", alpha=0.5, label="max sustainable")
    ax.set_title("Capacity curve")
    ax.legend(loc="upper left")
    ax2.legend(loc="lower right")
    return _png(fig)


def billing_findings(counts: dict[str, int] | None) -> bytes | None:
    """Billing findings per kind."""
    if not counts or not any(counts.values()):
        return None
    fig, ax = _subplots(figsize=(7, 3.5))
    kinds = list(counts)
    ax.barh(kinds, [counts[k] for k in kinds])
    ax.set_xlabel("findings")
    ax.set_title("Billing findings by kind")
    return _png(fig)


def ttft_vs_input(calls: pd.DataFrame) -> bytes | None:
    """TTFT against input tokens, coloured by turn."""
    okc = calls[calls["ok"] & calls["ttft_ms"].notna() & calls["u_input"].notna()]
    if okc.empty:
        return None
    fig, ax = _subplots(figsize=(7, 4))
    turn = okc["turn"].fillna(0).astype(int)
    sc = ax.scatter(okc["u_input"], okc["ttft_ms"], c=turn, cmap="viridis", s=10)
    fig.colorbar(sc, ax=ax, label="turn")
    ax.set_xlabel("input tokens")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("TTFT against input tokens")
    ax.grid(alpha=0.3)
    return _png(fig)


_MAX_TENANT_PANELS = 6


def ratelimit_remaining(replays: dict[str, Any]) -> bytes | None:
    """Remaining requests as the headers reported them against time, with the model's, per tenant."""
    shown = [r for r in replays.values() if r.remaining][:_MAX_TENANT_PANELS]
    if not shown:
        return None
    start = min(r.t0 for r in shown)
    fig, axes = _subplots(len(shown), 1, figsize=(8, 2.6 * len(shown)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], shown, strict=True):
        t, reported, model = (np.array(v) for v in zip(*r.remaining, strict=True))
        ax.step(t - start, model, where="post", color="grey", label="model (token bucket)")
        ax.plot(t - start, reported, ".", markersize=4, label="reported (headers)")
        ax.set_ylabel("remaining requests")
        ax.set_title(f"tenant {r.label}: limit {r.limits.get('requests', 0):g} requests/min", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("seconds from the first call")
    return _png(fig)


def ratelimit_tokens(replays: dict[str, Any]) -> bytes | None:
    """Cumulative accepted tokens per tenant against what its tokens-per-minute limit allows."""
    shown = [r for r in replays.values() if r.tokens and r.limits.get("tokens")][:_MAX_TENANT_PANELS]
    if not shown:
        return None
    start = min(r.t0 for r in shown)
    fig, ax = _subplots(figsize=(8, 4))
    for r in shown:
        t, cum = (np.array(v) for v in zip(*r.tokens, strict=True))
        (line,) = ax.step(t - start, cum, where="post", label=f"{r.label}: accepted")
        limit = r.limits["tokens"]
        x = np.array([r.t0, max(float(t.max()), r.t0)])
        ax.plot(x - start, limit + limit / 60.0 * (x - r.t0), "--", color=line.get_color(),
                label=f"{r.label}: allowed ({limit:g}/min)")
    ax.set_xlabel("seconds from the first call")
    ax.set_ylabel("tokens (cumulative)")
    ax.set_title("Accepted tokens against the limit's allowance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def isolation_ttft(samples: dict[str, np.ndarray], steady: str = "", burst: str = "") -> bytes | None:
    """CDF of the steady tenant's TTFT during the burst tenant's bursts and outside them."""
    return _cdfs([(f"{side} the bursts of {burst}", v) for side, v in (samples or {}).items()],
                 "time to first token (ms)", "share of calls", f"TTFT of {steady} during and outside {burst}'s bursts")


def overhead_ttft_cdf(samples: dict[str, list[float]]) -> bytes | None:
    """CDF of the added TTFT per attempt: through the gateway against the baseline (the harness's own share)."""
    return _cdfs([(route, samples.get(route) or []) for route in ("gateway", "baseline")],
                 "added time to first token (ms)", "share of attempts", "Gateway overhead: added TTFT CDF")


def overhead_vs_load(stages: list[dict[str, Any]]) -> bytes | None:
    """Added TTFT and E2E p50 against each stage's offered load, per route."""
    pts = [s for s in stages if s.get("offered_rps") is not None]
    if not pts:
        return None
    fig, ax = _subplots(figsize=(7, 4))
    for route, marker in (("gateway", "o"), ("baseline", "s")):
        mine = sorted((s for s in pts if s.get("route") == route), key=lambda s: s["offered_rps"])
        for key, label in (("added_ttft_p50_ms", "added TTFT p50"), ("added_e2e_p50_ms", "added E2E p50")):
            xy = [(s["offered_rps"], s[key]) for s in mine if s.get(key) is not None]
            if xy:
                ax.plot([x for x, _ in xy], [y for _, y in xy], marker=marker, label=f"{route}: {label}")
    ax.set_xlabel("offered load (calls/s)")
    ax.set_ylabel("ms")
    ax.set_title("Gateway overhead against offered load")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return _png(fig)
