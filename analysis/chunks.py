"""Chunk arrival times: decoding a record's encoded chunk column, and the gaps between chunks."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import pandas as pd

from ttformats.records import GAP_KEYS, gap_figures


def decode_chunk_column(values: pd.Series) -> list[np.ndarray]:
    """Chunk arrival times (ms from the attempt's start) for each encoded cell."""
    out = []
    for us in values:
        if not us:
            out.append(np.empty(0))
            continue
        deltas = np.frombuffer(base64.b64decode(us), dtype="<u4")
        out.append(np.cumsum(deltas, dtype=np.float64) / 1000.0)
    return out


def chunk_gap_stats(values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaps between consecutive chunks of each encoded cell, pooled in order; how many each cell gave; and the
    mean gap of each cell that gave any. The same numbers as np.diff and .mean() over each of
    decode_chunk_column(values), computed for cells of as many chunks together, not one array per cell."""
    values = list(values)
    try:
        raw = [binascii.a2b_base64(us) if us else b"" for us in values]
    except (TypeError, ValueError):
        raw = []
    size = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    if len(raw) < len(values) or (size % 4).any():  # a cell that cannot be decoded: the same error, first first
        decode_chunk_column(values)
    n = size // 4
    counts = np.maximum(n - 1, 0)
    first = np.cumsum(counts) - counts
    pooled = np.empty(int(counts.sum()), dtype=np.float64)
    means = np.zeros(len(raw), dtype=np.float64)
    order = np.argsort(n, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(n[order]) != 0, True]).tolist() if n.size else []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        m = int(n[order[lo]])
        if m < 2:
            continue
        step = max(1, (1 << 20) // m)
        for s in range(lo, hi, step):
            at = order[s:min(hi, s + step)]
            deltas = np.frombuffer(b"".join([raw[i] for i in at.tolist()]), dtype="<u4").reshape(len(at), m)
            # each row as decode_chunk_column computes a cell: np.cumsum(dtype=float64) / 1000, then np.diff
            gaps = np.diff(np.cumsum(deltas, axis=1, dtype=np.float64) / 1000.0, axis=1)
            means[at] = np.add.reduce(gaps, axis=1) / (m - 1)  # summed pairwise per row, as ndarray.mean
            pooled[first[at, None] + np.arange(m - 1)] = gaps
    return pooled, counts, means[counts > 0]


def chunk_gaps(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Gaps between consecutive chunks of each encoded cell, pooled in order, and how many each cell gave.

    The same numbers as np.diff over each of decode_chunk_column(values), without an array per cell."""
    pooled, counts, _ = chunk_gap_stats(values)
    return pooled, counts


def call_gap_figures(values: Any) -> dict[str, np.ndarray]:
    """Per-call gap figures of each encoded cell (ttformats.records.gap_figures: what a summary-timing record keeps),
    NaN for a cell of fewer than two chunks."""
    raw = [base64.b64decode(us) if us else b"" for us in values]
    n = np.fromiter((len(r) // 4 for r in raw), dtype=np.int64, count=len(raw))
    out = {k: np.full(len(raw), np.nan) for k in GAP_KEYS}
    for m in np.unique(n[n >= 2]).tolist():  # cells of as many chunks together, as the worker's one row
        at = np.flatnonzero(n == m)
        deltas = np.frombuffer(b"".join([raw[i] for i in at.tolist()]), dtype="<u4").reshape(len(at), m)
        for k, v in gap_figures(deltas).items():
            out[k][at] = v
    return out
