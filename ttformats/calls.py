"""What a logical call's figures mean, defined once for Locust's rows, the live LLM tab and the report.

A call is all the attempts that share one Idempotency-Key. Its TTFT and E2E run from its first attempt's start
(so retries count against them); its TPOT and tokens/s are the successful attempt's own, and are undefined for a
replay (a replay's frames arrive in one burst), as inter-token latency is. The functions take scalars or numpy
/ pandas arrays alike (an undefined figure is NaN); this module imports only the standard library (numpy only
when it is given arrays, which means it is already loaded).
"""

from __future__ import annotations

import math
from typing import Any


def call_ttft_ms(first_t_start: Any, t_start: Any, first_content_ms: Any) -> Any:
    """TTFT of a call: from its first attempt's start (epoch s) to the first content of its final attempt (ms)."""
    return (t_start - first_t_start) * 1000.0 + first_content_ms


def call_e2e_ms(first_t_start: Any, t_start: Any, end_ms: Any) -> Any:
    """E2E of a call: from its first attempt's start to the last byte of its final attempt (ms)."""
    return (t_start - first_t_start) * 1000.0 + end_ms


def _scalar(*values: Any) -> bool:
    return all(v is None or isinstance(v, bool | int | float) for v in values)


def call_tpot_ms(first_content_ms: Any, end_ms: Any, output_tokens: Any, replayed: Any) -> Any:
    """TPOT of a call's successful attempt: (E2E - TTFT) / (output tokens - 1) in ms, which is the attempt's
    (end_ms - first_content_ms) / (output tokens - 1); NaN for a replay, with <= 1 output token or no content."""
    if _scalar(first_content_ms, end_ms, output_tokens, replayed):
        if replayed or output_tokens is None or first_content_ms is None or end_ms is None or output_tokens <= 1:
            return math.nan
        return (end_ms - first_content_ms) / (output_tokens - 1)
    import numpy as np

    out = np.asarray(output_tokens, dtype=np.float64)
    defined = (out > 1) & ~np.asarray(replayed, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (np.asarray(end_ms, dtype=np.float64) - np.asarray(first_content_ms, dtype=np.float64)) / (out - 1)
    return np.where(defined, value, np.nan)


def call_output_tps(output_tokens: Any, end_ms: Any, replayed: Any) -> Any:
    """Output tokens/s of a call's successful attempt: output tokens / the attempt's time (end_ms); NaN for a
    replay, with no output tokens or no time."""
    if _scalar(output_tokens, end_ms, replayed):
        if replayed or not output_tokens or end_ms is None or end_ms <= 0:
            return math.nan
        return output_tokens / (end_ms / 1000.0)
    import numpy as np

    out = np.asarray(output_tokens, dtype=np.float64)
    end = np.asarray(end_ms, dtype=np.float64)
    defined = (out > 0) & (end > 0) & ~np.asarray(replayed, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = out / (end / 1000.0)
    return np.where(defined, value, np.nan)


def counts_as_attempt(error_kind: Any, sent: Any) -> Any:
    """Whether a record counts among a run's attempts (and retries and errors): all but the marker a call cut by
    the run's stop while it waited to retry ends with (`cancelled`, never sent). Records without `sent`
    (version 1) count as sent."""
    if _scalar(sent) and (error_kind is None or isinstance(error_kind, str)):
        return not (error_kind == "cancelled" and sent is False)
    import numpy as np

    if hasattr(error_kind, "eq"):  # a pandas Series (its missing values compare as missing, not False)
        cancelled = error_kind.eq("cancelled").fillna(False).to_numpy(dtype=bool)
    else:
        cancelled = np.asarray(error_kind, dtype=object) == "cancelled"
    flags = np.asarray(sent)
    if flags.dtype != bool:  # missing values (version 1) count as sent
        flags = np.array([not (s is False or s is np.False_) for s in flags.tolist()], dtype=bool)
    return ~(cancelled & ~flags)
