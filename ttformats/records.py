"""Attempt records in summary timing: which keys a record may leave out, and what each then stands for.

A version-5 record written with `records: {timing: summary}` (locustfiles.records.summarise) leaves out every key
whose value is its default (DEFAULTS) or follows from the record's other keys (DERIVED), drops the keys no figure
reads (DROPPED) and the usage counts that are 0, and keeps, instead of every chunk's time, the per-call gap
figures of `gap_figures`. `expand` puts every left-out key back. This module imports only the standard library
(numpy only in `gap_figures`, which is given arrays)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SUMMARY_VERSION = 5  # the first record version that may be a summary-timing record

#: keys a summary record leaves out when they hold this value
DEFAULTS: dict[str, Any] = {
    "tenant": None, "traceparent": None, "route": None, "marker": None, "attempt": 1, "final": True,
    "request_id": None, "original_request_id": None, "replayed": False, "stream": False, "dry_run": False,
    "pair_id": None, "session_id": None, "turn": None, "scheduled": None, "schedule_lag_ms": None, "stage": None,
    "arrival": None, "prompt_tokens_target": None, "max_tokens": None, "images_requested": None,
    "image_size": None, "image_quality": None, "request_id_header": None, "error_kind": None,
    "error": None, "error_type": None, "error_code": None, "error_reason": None, "sent": True,
    "dry_run_ignored": False, "framing_mismatch": False, "retry_after_s": None, "retry_after_header": None,
    "ratelimit_reset_s": None, "ratelimit": None, "refusal": None, "headers_ms": None, "end_ms": 0.0,
    "first_event_ms": None, "first_content_ms": None, "first_tool_ms": None,
    "first_reasoning_ms": None, "chunks": None, "usage": None, "usage_raw": None, "finish_reason": None,
    "output_chars": None, "estimate": None, "images_returned": None, "embeddings": None,
}

#: the summary record's chunk figures, besides n: all whole microseconds but the two percentiles
GAP_KEYS = ("first_us", "sum_us", "p50_us", "p99_us", "max_us", "max_at")


def call_name(endpoint: str, model: str, stream: bool, stream_format: str | None, dry_run: bool) -> str:
    """The Locust stats name of a call: endpoint, mode, model; never a secret."""
    if endpoint == "models":
        return "models list"
    mode = "stream" if stream else "plain"
    if endpoint == "gemini" and stream:
        mode = "stream-array" if stream_format == "json_array" else "stream"
    name = f"{endpoint} {mode} {model}"
    return name + " dry-run" if dry_run else name


def _run_id(r: dict[str, Any]) -> str | None:
    """The run id a call id starts with (call ids are `<run id>-w<worker>-<sequence>`)."""
    cid, mark = r.get("call_id"), f"-w{r.get('worker')}-"
    if not isinstance(cid, str) or mark not in cid:
        return None
    head, _, seq = cid.rpartition(mark)
    return head if seq.isdigit() else None


def other_ids(ids: Any, request_id: Any) -> bool:
    """Whether a record's `ids` name a join id besides its request_id."""
    return isinstance(ids, dict) and any(isinstance(v, str) and v != request_id for v in ids.values())


#: keys a summary record leaves out when the other keys give them (in this order: later ones read earlier ones)
DERIVED: dict[str, Callable[[dict[str, Any]], Any]] = {
    "run_id": _run_id,
    "idempotency_key": lambda r: r.get("call_id"),
    "attempt_id": lambda r: f"{r.get('call_id')}-a{r.get('attempt')}",
    "stream_format": lambda r: "sse" if r.get("stream") else None,
    "name": lambda r: call_name(str(r.get("endpoint")), str(r.get("model")), bool(r.get("stream")),
                                r.get("stream_format"), bool(r.get("dry_run"))),
    "ok": lambda r: r.get("error_kind") is None,
    "status": lambda r: 200 if r.get("error_kind") is None else None,
    "first_text_ms": lambda r: r.get("first_content_ms"),
    "ids": lambda r: None,  # left out only when it names no id besides request_id (summarise checks)
}

#: keys a summary record drops: nothing in the analysis reads them (the trace context, the raw usage, which
#: header the request id came from, the answer's length)
DROPPED = ("usage_raw", "traceparent", "request_id_header", "output_chars")
#: the normalised usage's counts; a summary record leaves out the ones that are 0
USAGE_KEYS = ("input", "output", "cached_input", "cache_write", "reasoning")

#: keys every record keeps
KEPT = ("v", "worker", "call_id", "endpoint", "model", "t_start")
#: how many keys a full record of the latest version has (a record with fewer left some out)
FULL_KEYS = len(KEPT) + len(DEFAULTS) + len(DERIVED)  # DROPPED are in DEFAULTS


def expand(rec: dict[str, Any]) -> dict[str, Any]:
    """A summary-timing record with every left-out key put back (the same dict, filled in)."""
    for k, v in DEFAULTS.items():
        if k not in rec:
            rec[k] = v
    for k, derive in DERIVED.items():
        if k not in rec:
            rec[k] = derive(rec)
    usage = rec["usage"]
    if isinstance(usage, dict) and len(usage) < len(USAGE_KEYS):
        rec["usage"] = {k: usage.get(k, 0) for k in USAGE_KEYS}
    return rec


def is_summary_chunks(chunks: Any) -> bool:
    """Whether a record's `chunks` holds per-call gap figures instead of every chunk's time."""
    return isinstance(chunks, dict) and "us" not in chunks


def gap_figures(deltas: Any) -> dict[str, Any]:
    """Per-call gap figures of equally long rows of chunk deltas (µs; the first from the attempt's start):
    arrays first_us, sum_us, p50_us, p99_us (numpy's linear percentiles), max_us and max_at (the first largest gap's
    index, 0 for the gap between the first two chunks)."""
    import numpy as np

    d = np.asarray(deltas, dtype=np.int64)
    gaps = d[:, 1:]
    return {"first_us": d[:, 0], "sum_us": gaps.sum(axis=1), **sorted_gap_figures(np.sort(gaps, axis=1)),
            "max_at": gaps.argmax(axis=1)}


def numpy_lerp(a: Any, b: Any, t: Any) -> Any:
    """numpy's own interpolation between neighbouring order statistics (numpy.lib._function_base_impl._lerp), so
    percentiles computed from selected or sorted values are numpy.percentile's to the bit."""
    import numpy as np

    diff = b - a
    out = np.asarray(a + diff * t)
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5)
    return out


def sorted_gap_figures(ordered: Any) -> dict[str, Any]:
    """p50_us, p99_us (numpy.percentile's linear method, its own arithmetic) and max_us of rows of gaps, each row
    sorted (np.sort(gaps, axis=1): the order statistics, sorted with SIMD rather than selected)."""
    import numpy as np

    m = ordered.shape[1]
    out = {}
    for name, q in (("p50_us", 0.5), ("p99_us", 0.99)):
        virtual = np.float64((m - 1) * q)
        lo = int(np.floor(virtual))
        t = np.full(len(ordered), virtual - lo)
        out[name] = numpy_lerp(ordered[:, lo].astype(np.int64), ordered[:, min(lo + 1, m - 1)].astype(np.int64), t)
    out["max_us"] = ordered[:, -1].astype(np.int64)
    return out
