"""Reading a run's files: attempt records, a billing ledger (any mapping), the price sheet, the truth."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

SCALARS = ("run_id", "worker", "attempt_id", "call_id", "attempt", "final", "idempotency_key", "request_id",
           "original_request_id", "replayed", "endpoint", "model", "stream", "stream_format", "dry_run", "pair_id",
           "session_id", "turn", "name", "t_start", "scheduled", "schedule_lag_ms", "stage", "headers_ms",
           "first_event_ms", "first_content_ms", "first_text_ms", "first_tool_ms", "first_reasoning_ms", "end_ms",
           "status", "ok", "error_kind", "retry_after_s", "finish_reason", "images_requested", "images_returned",
           "image_size", "image_quality", "prompt_tokens_target", "max_tokens")
DERIVED = ("chunks_n", "chunks_us", "u_input", "u_output", "u_cached", "u_write", "u_reasoning", "est_amount")
COLUMNS = SCALARS + DERIVED
LEDGER_COLUMNS = ("time", "type", "request_id", "idempotency_key", "endpoint", "model", "input_tokens",
                  "output_tokens", "cached_input_tokens", "cache_write_tokens", "images", "amount", "currency")
LEDGER_REQUIRED = ("request_id", "amount")


class InputError(ValueError):
    """Bad analysis input: one line naming the file, column or value."""


@dataclass
class LoadReport:
    """What loading noticed: skipped lines and why."""

    torn_lines: int = 0
    bad_lines: int = 0
    warnings: list[str] = field(default_factory=list)


def _row(d: dict[str, Any]) -> tuple[Any, ...]:
    get = d.get
    u = get("usage") or {}
    c = get("chunks") or {}
    est = get("estimate")
    amount = None
    if isinstance(est, dict):
        inner = est.get("estimate")
        amount = inner.get("amount") if isinstance(inner, dict) else est.get("amount")
    return tuple(get(k) for k in SCALARS) + (
        c.get("n", 0), c.get("us"), u.get("input"), u.get("output"), u.get("cached_input"), u.get("cache_write"),
        u.get("reasoning"), amount)


def load_records(path: str | Path, report: LoadReport | None = None, batch: int = 200_000) -> pd.DataFrame:
    """All attempt records as a DataFrame; a torn last line is skipped with a warning."""
    report = report or LoadReport()
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no records file")
    frames: list[pd.DataFrame] = []
    rows: list[tuple[Any, ...]] = []
    with open(p, "rb") as f:
        lines = f.read().split(b"\n")
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    loads = orjson.loads
    for i, line in enumerate(lines[: last + 1]):
        if not line.strip():
            continue
        try:
            d = loads(line)
        except orjson.JSONDecodeError:
            if i == last:
                report.torn_lines += 1
                report.warnings.append(f"{p}: the last line is torn (a run cut mid-write); read up to it")
            else:
                report.bad_lines += 1
            continue
        if not isinstance(d, dict) or d.get("v") != 1:
            report.bad_lines += 1
            continue
        rows.append(_row(d))
        if len(rows) >= batch:
            frames.append(pd.DataFrame.from_records(rows, columns=COLUMNS))
            rows = []
    if report.bad_lines:
        report.warnings.append(f"{p}: skipped {report.bad_lines} lines that are not version-1 records")
    frames.append(pd.DataFrame.from_records(rows, columns=COLUMNS))
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for col in ("final", "ok", "stream", "dry_run", "replayed"):
        df[col] = df[col].fillna(False).astype(bool)
    for col in ("t_start", "end_ms", "headers_ms", "first_event_ms", "first_content_ms", "first_text_ms",
                "first_tool_ms", "first_reasoning_ms", "schedule_lag_ms", "scheduled", "u_input", "u_output",
                "u_cached", "u_write", "u_reasoning", "images_returned", "images_requested", "stage", "status"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["attempt"] = pd.to_numeric(df["attempt"], errors="coerce").fillna(1).astype("int64")
    df["chunks_n"] = pd.to_numeric(df["chunks_n"], errors="coerce").fillna(0).astype("int64")
    return df


def decode_chunk_column(values: pd.Series) -> list[np.ndarray]:
    """Chunk arrival times (ms from the attempt's start) for each encoded cell."""
    import base64

    out = []
    for us in values:
        if not us:
            out.append(np.empty(0))
            continue
        deltas = np.frombuffer(base64.b64decode(us), dtype="<u4")
        out.append(np.cumsum(deltas, dtype=np.float64) / 1000.0)
    return out


def _dec(value: Any, where: str) -> Decimal:
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InputError(f"{where}: not an amount: {value!r}") from None


def load_ledger(source: str | Path, fmt: str | None = None, columns: dict[str, str] | None = None,
                charge_type: str = "charge", text: str | None = None) -> pd.DataFrame:
    """A billing ledger (JSONL or CSV, columns renamed by `columns`: canonical -> source) as charge rows."""
    name = str(source)
    if text is None:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{name}: cannot read the ledger: {getattr(exc, 'strerror', None) or exc}") from None
    fmt = fmt or ("csv" if name.endswith(".csv") or (text[:1] not in "{[" and "," in text.split("\n", 1)[0]) else "jsonl")
    mapping = dict(columns or {})
    for canon in mapping:
        if canon not in LEDGER_COLUMNS:
            raise InputError(f"{name}: ledger column mapping: unknown column {canon!r} "
                             f"(known: {', '.join(LEDGER_COLUMNS)})")
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        raw_rows = list(reader)
        header = reader.fieldnames or []
    elif fmt == "jsonl":
        raw_rows = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise InputError(f"{name}: line {i + 1}: not JSON") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{name}: line {i + 1}: expected a JSON object")
                raw_rows.append(obj)
        header = sorted({k for r in raw_rows for k in r})
    else:
        raise InputError(f"{name}: ledger format: expected csv or jsonl, got {fmt!r}")
    source_of = {c: mapping.get(c, c) for c in LEDGER_COLUMNS}
    for canon in LEDGER_REQUIRED:
        if raw_rows and source_of[canon] not in header:
            raise InputError(f"{name}: the ledger has no column {source_of[canon]!r} (for {canon})")
    for canon, src in mapping.items():
        if raw_rows and src not in header:
            raise InputError(f"{name}: the ledger has no column {src!r} (mapped to {canon})")
    rows = []
    for i, r in enumerate(raw_rows):
        row = {c: r.get(source_of[c]) for c in LEDGER_COLUMNS}
        if row["type"] is not None and str(row["type"]) != charge_type:
            continue
        row["amount"] = _dec(row["amount"], f"{name}: row {i + 1}: {source_of['amount']}")
        for c in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "images"):
            v = row[c]
            row[c] = None if v in (None, "") else int(float(v))
        for c in ("request_id", "idempotency_key"):
            row[c] = None if row[c] in (None, "") else str(row[c])
        rows.append(row)
    return pd.DataFrame(rows, columns=LEDGER_COLUMNS)


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """A JSON Lines file (empty list if absent)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def warn(message: str) -> None:
    """A warning on stderr."""
    print(f"ttbench: warning: {message}", file=sys.stderr)
