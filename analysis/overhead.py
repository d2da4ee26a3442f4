"""Gateway overhead: each client attempt joined to the upstream requests it caused (the simulator's truth), and
what the gateway added to time to first byte, first token, every chunk and the last byte.

Both clocks are epoch clocks on the same host: the client's record (t_start plus offsets in ms) and the
simulator's truth (epoch seconds). Across hosts their offset adds to every figure here."""

from __future__ import annotations

import base64
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ttformats.records import FULL_KEYS, SUMMARY_VERSION, expand, is_summary_chunks

from .load import load_jsonl

METRICS = ("added_ttfb_ms", "added_ttft_ms", "added_chunk_ms", "added_e2e_ms")
#: Endpoints the overhead is measured on: a gateway answers `models` itself, with no upstream request.
SKIP_ENDPOINTS = ("models",)


def dist(values: list[float] | np.ndarray) -> dict[str, Any]:
    """n, p50, p95, p99 and max of a sample (None figures when empty)."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if not a.size:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"n": int(a.size), "p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "max": round(float(a.max()), 3)}


def read_records(path: Path) -> list[dict[str, Any]]:
    """The attempt records of a run folder (lines that do not parse are skipped: the main loader reports them)."""
    out = []
    if not path.exists():
        return out
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                if len(rec) < FULL_KEYS and isinstance(rec.get("v"), int) and rec["v"] >= SUMMARY_VERSION:
                    expand(rec)  # a summary-timing record: its left-out keys back
                out.append(rec)
    return out


def chunk_times(rec: dict[str, Any]) -> np.ndarray:
    """A record's content chunk arrival times as epoch seconds."""
    ch = rec.get("chunks") or {}
    us = ch.get("us") if isinstance(ch, dict) else None
    if not us:
        return np.empty(0)
    deltas = np.frombuffer(base64.b64decode(us), dtype="<u4")
    return float(rec["t_start"]) + np.cumsum(deltas, dtype=np.float64) / 1e6


def token_writes(entry: dict[str, Any]) -> list[float]:
    """When the upstream wrote each chunk that carried tokens (epoch seconds)."""
    return [t for t, n in zip(entry.get("chunk_times") or [], entry.get("chunk_tokens") or [], strict=False) if n]


def pair_chunks(client: np.ndarray, upstream: list[float]) -> tuple[np.ndarray, bool]:
    """Client receive minus upstream write time (ms) per client chunk: one to one when the counts match, else
    each client chunk against the upstream chunk at the same relative position (flagged rechunked)."""
    n, m = int(client.size), len(upstream)
    if not n or not m:
        return np.empty(0), False
    up = np.asarray(upstream, dtype=np.float64)
    if n == m:
        return (client - up) * 1000.0, False
    idx = np.zeros(n, dtype=np.int64) if n == 1 else np.rint(np.arange(n) * (m - 1) / (n - 1)).astype(np.int64)
    return (client - up[idx]) * 1000.0, True


def join(records: list[dict[str, Any]], truth: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None,
                                                                                       list[dict[str, Any]]]]:
    """Each attempt sent with the upstream requests it met: by X-Client-Attempt-ID, else by the prompt marker (one
    per call) and the attempt's time span."""
    by_attempt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_marker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in truth:
        if e.get("client_attempt_id"):
            by_attempt[e["client_attempt_id"]].append(e)
        if e.get("marker"):
            by_marker[e["marker"]].append(e)
    out = []
    for rec in records:
        if rec.get("sent") is False or rec.get("endpoint") in SKIP_ENDPOINTS or rec.get("dry_run"):
            continue
        ups = by_attempt.get(rec.get("attempt_id") or "")
        how: str | None = "attempt_id"
        if not ups and rec.get("marker"):
            # a call's attempts share its marker: an upstream request belongs to the attempt it arrived during
            t0 = float(rec.get("t_start") or 0.0)
            t1 = t0 + float(rec.get("end_ms") or 0.0) / 1000.0
            ups = [e for e in by_marker.get(rec["marker"], ()) if t0 <= (e.get("received") or 0.0) <= t1]
            how = "marker"
        if not ups:
            ups, how = [], None
        out.append((rec, how, sorted(ups, key=lambda e: e.get("received") or 0.0)))
    return out


def attempt_figures(rec: dict[str, Any], how: str | None, ups: list[dict[str, Any]]) -> dict[str, Any]:
    """One attempt's overhead row: the join, the upstream requests it met and what the gateway added (ms)."""
    answered = [e for e in ups if e.get("headers_sent") is not None and e.get("received") is not None]
    last = max(answered, key=lambda e: e["received"]) if answered else None
    row: dict[str, Any] = {
        "attempt_id": rec.get("attempt_id"), "call_id": rec.get("call_id"), "route": rec.get("route"),
        "endpoint": rec.get("endpoint"), "model": rec.get("model"), "stream": bool(rec.get("stream")),
        "stage": rec.get("stage"), "ok": bool(rec.get("ok")), "join": how, "upstream_requests": len(ups),
        "hidden_retries": max(0, len(ups) - 1), "upstream_statuses": [e.get("status") for e in ups],
        "upstream_request_id": last.get("request_id") if last else None,
        "cache_answer": bool(rec.get("ok")) and not ups,
        "added_ttfb_ms": None, "added_ttft_ms": None, "added_e2e_ms": None,
        "chunk_p50_ms": None, "chunk_max_ms": None, "chunks_paired": 0, "rechunked": False, "chunk_ms": [],
        "summary_timing": bool(rec.get("stream")) and is_summary_chunks(rec.get("chunks")),
    }
    if last is None or not rec.get("ok"):
        return row
    received = float(last["received"])
    if rec.get("headers_ms") is not None:
        row["added_ttfb_ms"] = round(rec["headers_ms"] - (last["headers_sent"] - received) * 1000.0, 3)
    if last.get("last_byte") is not None and rec.get("end_ms") is not None:
        row["added_e2e_ms"] = round(rec["end_ms"] - (last["last_byte"] - received) * 1000.0, 3)
    writes = token_writes(last)
    if rec.get("stream") and writes:
        if rec.get("first_content_ms") is not None:
            row["added_ttft_ms"] = round(rec["first_content_ms"] - (writes[0] - received) * 1000.0, 3)
        diffs, rechunked = pair_chunks(chunk_times(rec), writes)
        if diffs.size:
            row.update(chunk_p50_ms=round(float(np.percentile(diffs, 50)), 3), chunk_max_ms=round(float(diffs.max()), 3),
                       chunks_paired=int(diffs.size), rechunked=rechunked,
                       chunk_ms=[round(float(d), 3) for d in diffs])
    return row


#: why added_chunk_ms is missing
NO_CHUNK_TIMES = ("the run kept summary timing (records.timing: summary): without every chunk's arrival time the "
                  "gateway's added time per chunk cannot be measured")


def _group_dists(rows: list[dict[str, Any]]) -> dict[str, Any]:
    chunks = [d for r in rows for d in r["chunk_ms"]]
    summary = any(r.get("summary_timing") for r in rows)
    return {"added_ttfb_ms": dist([r["added_ttfb_ms"] for r in rows if r["added_ttfb_ms"] is not None]),
            "added_ttft_ms": dist([r["added_ttft_ms"] for r in rows if r["added_ttft_ms"] is not None]),
            "added_chunk_ms": None if summary else dist(chunks),
            **({"added_chunk_ms_missing": NO_CHUNK_TIMES} if summary else {}),
            "added_e2e_ms": dist([r["added_e2e_ms"] for r in rows if r["added_e2e_ms"] is not None]),
            "rechunked": sum(r["rechunked"] for r in rows)}


def _p50(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 50)), 3) if values else None


def analyse(run_dir: str | Path, scenario: dict[str, Any], write: bool = True) -> dict[str, Any] | None:
    """The summary's `overhead` section (None without an overhead section or a truth file); writes the per-attempt
    rows to overhead.jsonl in the run folder."""
    run_dir = Path(run_dir)
    if not isinstance(scenario.get("overhead"), dict) or not (run_dir / "truth.jsonl").exists():
        return None
    truth = load_jsonl(run_dir / "truth.jsonl")
    joined = join(read_records(run_dir / "records.jsonl"), truth)
    rows = [attempt_figures(rec, how, ups) for rec, how, ups in joined]
    stages_cfg = scenario.get("stages") or []
    groups: dict[str, Any] = {}
    by_group: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_group[(f"{r['endpoint']} {'stream' if r['stream'] else 'plain'}", r["route"] or "gateway")].append(r)
    for key in sorted({k for k, _ in by_group}):
        gw = _group_dists(by_group.get((key, "gateway"), []))
        bl = _group_dists(by_group.get((key, "baseline"), []))
        net = {m: (round(gw[m]["p50"] - bl[m]["p50"], 3) if gw[m] is not None and bl[m] is not None
                   and gw[m]["p50"] is not None and bl[m]["p50"] is not None else None) for m in METRICS}
        groups[key] = {**gw, "baseline": bl, "net_p50": net}
    stages = []
    by_stage: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["stage"] is not None:
            by_stage[(int(r["stage"]), r["route"] or "gateway")].append(r)
    for (stage, route), rs in sorted(by_stage.items()):
        st = stages_cfg[stage] if stage < len(stages_cfg) and isinstance(stages_cfg[stage], dict) else {}
        stages.append({"stage": stage, "offered_rps": st.get("rate"), "route": route, "attempts": len(rs),
                       "added_ttft_p50_ms": _p50([r["added_ttft_ms"] for r in rs if r["added_ttft_ms"] is not None]),
                       "added_e2e_p50_ms": _p50([r["added_e2e_ms"] for r in rs if r["added_e2e_ms"] is not None])})
    path = run_dir / "overhead.jsonl"
    if write:
        with open(path, "wb") as f:
            for r in rows:
                f.write(orjson.dumps(r) + b"\n")
    return {
        "join": {"by_attempt_id": sum(r["join"] == "attempt_id" for r in rows),
                 "by_marker": sum(r["join"] == "marker" for r in rows),
                 "unjoined": sum(r["join"] is None for r in rows)},
        "attempts": len(rows),
        "upstream_requests": sum(r["upstream_requests"] for r in rows),
        "hidden_retries": sum(r["hidden_retries"] for r in rows),
        "cache_answers": sum(r["cache_answer"] for r in rows),
        "groups": groups, "stages": stages,
        "per_attempt": path.name if write else None,
        "clocks": "client and upstream epoch clocks on the same host; across hosts their offset adds to every "
                  "added figure",
    }


def samples(run_dir: str | Path) -> dict[str, list[float]]:
    """Added TTFT per attempt by route (from overhead.jsonl), for the report's CDF."""
    out: dict[str, list[float]] = defaultdict(list)
    for r in load_jsonl(Path(run_dir) / "overhead.jsonl"):
        if r.get("added_ttft_ms") is not None:
            out[r.get("route") or "gateway"].append(float(r["added_ttft_ms"]))
    return dict(out)
