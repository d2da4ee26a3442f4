"""Reading attempt records (records.jsonl) into a columnar DataFrame; a big file with a helper process."""

from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
import sys
import tempfile
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from ttformats.records import FULL_KEYS, GAP_KEYS, SUMMARY_VERSION, expand, other_ids

from .helper import claim as _claim
from .helper import cpus
from .helper import finish as finish_helper
from .helper import start as start_helper
from .load import InputError, LoadReport

SCALARS = ("run_id", "worker", "attempt_id", "call_id", "attempt", "final", "idempotency_key", "request_id",
           "original_request_id", "replayed", "endpoint", "model", "stream", "stream_format", "dry_run", "pair_id",
           "session_id", "turn", "name", "t_start", "scheduled", "schedule_lag_ms", "stage", "headers_ms",
           "first_event_ms", "first_content_ms", "first_text_ms", "first_tool_ms", "first_reasoning_ms", "end_ms",
           "status", "ok", "error_kind", "retry_after_s", "finish_reason", "images_requested", "images_returned",
           "image_size", "image_quality", "prompt_tokens_target", "max_tokens")
V2_SCALARS = ("ids", "sent", "dry_run_ignored", "framing_mismatch")  # version 2 on (defaults for version 1)
V3_SCALARS = ("tenant", "refusal")  # version 3 on (null before)
SCALARS = (*SCALARS, *V2_SCALARS, *V3_SCALARS)
#: a summary-timing record's per-call gap figures (ttformats.records.GAP_KEYS; null for a full record's row)
GAP_COLUMNS = ("chunk_first_us", "gap_sum_us", "gap_p50_us", "gap_p99_us", "gap_max_us", "gap_max_at")
DERIVED = ("chunks_n", "chunks_us", *GAP_COLUMNS, "u_input", "u_output", "u_cached", "u_write", "u_reasoning", "est_amount")
COLUMNS = SCALARS + DERIVED
RECORD_VERSIONS = (1, 2, 3, 4, 5)  # 2 adds ids, request_id_header, sent, dry_run_ignored, ...; 3 tenant, refusal,
# ratelimit; 4 traceparent, route, marker; 5 summary timing (keys left out: ttformats.records.expand)


NUMERIC = ("t_start", "end_ms", "headers_ms", "first_event_ms", "first_content_ms", "first_text_ms", "first_tool_ms",
           "first_reasoning_ms", "schedule_lag_ms", "scheduled", "u_input", "u_output", "u_cached", "u_write",
           "u_reasoning", "images_returned", "images_requested", "stage", "status", *GAP_COLUMNS)
FLAGS = ("final", "ok", "stream", "dry_run", "replayed", "dry_run_ignored", "framing_mismatch")
COUNTS = {"attempt": 1, "chunks_n": 0}  # integer columns, and what a missing value becomes
#: low-cardinality text columns: one string object per distinct value instead of one per record
SHARED = ("run_id", "endpoint", "model", "stream_format", "name", "error_kind", "finish_reason", "image_size",
          "image_quality", "tenant", "refusal")
#: columns the records hold as strings (or null)
TEXTS = ("run_id", "attempt_id", "call_id", "idempotency_key", "request_id", "original_request_id", "endpoint",
         "model", "stream_format", "pair_id", "session_id", "name", "error_kind", "finish_reason", "image_size",
         "image_quality", "chunks_us", "est_amount", "tenant", "refusal")
_USAGE = ("input", "output", "cached_input", "cache_write", "reasoning")
SPLIT_BYTES = 256 << 20  # records files this big are read by two processes
_PART_BYTES = 64 << 20  # ... in parts of about this size, each taken by whichever process is free first
_HELPER_WAIT_S = 600  # a helper that takes longer is given up (its parts are then read here)
_READ_BYTES = 16 << 20  # the file is read this much at a time, never whole
_PARSE_LINES = 128  # lines parsed before their values are taken out (few: the dicts stay in the CPU cache)
_CONVERT_ROWS = 1024  # rows converted to columns at once
_NONE = type(None)
_FLOATISH = {float, int, _NONE}
_TEXTISH = {str, _NONE}
_BOOL = {bool}
_INT = {int}
_EMPTY: dict[str, Any] = {}
_NO_USAGE = (None,) * len(_USAGE)
_CALL_ID, _IDEMPOTENCY_KEY = COLUMNS.index("call_id"), COLUMNS.index("idempotency_key")
_REQUEST_ID, _IDS, _ERROR_KIND = COLUMNS.index("request_id"), COLUMNS.index("ids"), COLUMNS.index("error_kind")
assert V2_SCALARS == ("ids", "sent", "dry_run_ignored", "framing_mismatch")  # the order _columns fills them in
assert SCALARS[-len(V3_SCALARS):] == V3_SCALARS
_v_of = itemgetter("v")
_ROW_KEYS = (*SCALARS, "chunks", "usage", "estimate")
_row_of = itemgetter(*_ROW_KEYS)
_row_of_v2 = itemgetter(*SCALARS[:-len(V3_SCALARS)], "chunks", "usage", "estimate")
_row_of_v1 = itemgetter(*SCALARS[:-len(V2_SCALARS) - len(V3_SCALARS)], "chunks", "usage", "estimate")
_usage_of = itemgetter(*_USAGE)


def _amount(est: Any) -> Any:
    if not isinstance(est, dict):
        return None
    inner = est.get("estimate")
    return inner.get("amount") if isinstance(inner, dict) else est.get("amount")


def _extra_ids(ids: Any, request_id: Any) -> dict[str, str] | None:
    """A record's `ids` when they hold a join id besides its request_id (else None: nothing to keep)."""
    return ids if other_ids(ids, request_id) else None


def _columns(ds: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The COLUMNS of parsed records, column by column."""
    ds = [expand(d) if len(d) < FULL_KEYS and d["v"] >= SUMMARY_VERSION else d for d in ds]
    version = 3
    try:
        rows = list(map(_row_of, ds))  # the harness writes every key
    except KeyError:
        rows = []
        versions = set(map(_v_of, ds))  # one version only: a record of a later one must keep its own fields
        for version, getter in ((2, _row_of_v2), (1, _row_of_v1)):
            if versions == {version}:
                try:
                    rows = list(map(getter, ds))  # every key of its version
                    break
                except KeyError:
                    pass
        else:
            version = 3
        if not rows:
            rows = [tuple(map(d.get, _ROW_KEYS)) for d in ds]
    cols = list(zip(*rows, strict=False))
    estimates, usages, chunks = cols.pop(), cols.pop(), cols.pop()
    n = len(ds)
    if version == 1:  # the version-1 defaults: no other ids, sent unless the connection failed, no dry run ignored
        cols.extend([(None,) * n, tuple([k != "connect" for k in cols[_ERROR_KIND]]), (False,) * n, (False,) * n])
    elif any(cols[_IDS]):
        cols[_IDS] = tuple(map(_extra_ids, cols[_IDS], cols[_REQUEST_ID]))
    if version < 3:  # no tenant, no refusal
        cols.extend([(None,) * n] * len(V3_SCALARS))
    cs = [c or _EMPTY for c in chunks]
    cols.append(tuple([c.get("n", 0) for c in cs]))
    cols.append(tuple([c.get("us") for c in cs]))
    for k in GAP_KEYS:
        cols.append(tuple([c.get(k) for c in cs]))
    try:
        urows = [_usage_of(u) if u else _NO_USAGE for u in usages]
    except (KeyError, TypeError):
        us = [u or _EMPTY for u in usages]
        urows = [(u.get("input"), u.get("output"), u.get("cached_input"), u.get("cache_write"), u.get("reasoning"))
                 for u in us]
    cols.extend(zip(*urows, strict=False))
    cols.append(tuple([None if e is None else _amount(e) for e in estimates]))
    return cols


def _text_dtype() -> Any:
    """The dtype pandas gives a column of strings and nulls (str on pandas 3, object before)."""
    return pd.Series(["a", None]).dtype


class _Column:
    """One column's values as they are read, in a compact form that loses nothing.

    Numbers, flags, counts and texts go into one growing array each (texts as objects, low-cardinality ones with a
    shared string per distinct value); other columns keep ints and floats (with their nulls) as arrays per block.
    A value that does not fit turns the column into the raw values, which then get pandas' own inference and the
    old rules, exactly as before."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = ("number" if name in NUMERIC else "flag" if name in FLAGS or name == "sent"
                     else "count" if name in COUNTS else "text" if name in TEXTS else "other")
        self.dtype = {"number": np.float64, "flag": bool, "count": np.int64, "text": object}.get(self.kind)
        self.capacity = 1024  # rows; the reader sets it from the file's size before the first rows come
        self.array: np.ndarray | None = None
        self.n = 0
        self.blocks: list[tuple[str, Any, Any]] = []  # other columns: (form, values, null mask)
        self.raw: list[Any] | None = None  # the values as read, once one did not fit
        self.has_str = False
        self.shared: dict[str, str] | None = {} if name in SHARED else None

    def add(self, vals: list[Any]) -> None:
        if self.raw is not None:
            self.raw.extend(vals)
            return
        types = set(map(type, vals))
        kind = self.kind
        if kind == "text":
            if types <= _TEXTISH:
                if str in types:
                    self.has_str = True
                    if self.shared is not None:
                        vals = list(map(self.shared.setdefault, vals, vals))
                self._put(vals)  # references taken now, while the strings are still in the CPU cache
                return
        elif self.dtype is not None:
            if (types <= _FLOATISH if kind == "number" else types == (_BOOL if kind == "flag" else _INT)):
                try:
                    self._put(np.array(vals, dtype=self.dtype))
                    return
                except OverflowError:
                    pass
        elif types <= _FLOATISH and not (int in types and float in types):
            f = np.array(vals, dtype=np.float64)  # nulls become NaN (a record holds no NaN of its own)
            null = np.isnan(f) if _NONE in types else None
            if float in types:
                self.blocks.append(("f", f, null))
                return
            if int not in types:  # nulls only
                self.blocks.append(("i", np.zeros(len(vals), dtype=np.int64), null))
                return
            if np.abs(f[~null] if null is not None else f).max() < 2.0**53:  # ints that floats hold exactly
                self.blocks.append(("i", np.where(null, 0.0, f).astype(np.int64) if null is not None
                                    else f.astype(np.int64), null))
                return
            try:
                self.blocks.append(("i", np.array([0 if v is None else v for v in vals], dtype=np.int64), null))
                return
            except OverflowError:
                pass
        self.raw = self.values()
        self.raw.extend(vals)
        self.array, self.blocks = None, []

    def _put(self, block: Any) -> None:
        k = len(block)
        if self.array is None:
            self.array = np.empty(max(self.capacity, k), dtype=self.dtype)
        elif self.n + k > self.array.size:  # more rows than the file's size promised: twice the room
            grown = np.empty(max(2 * self.array.size, self.n + k), dtype=self.dtype)
            grown[:self.n] = self.array[:self.n]
            self.array = grown
        self.array[self.n:self.n + k] = block
        self.n += k

    def values(self) -> list[Any]:
        """The values as the records held them."""
        if self.raw is not None:
            return self.raw
        if self.array is not None:
            return self.array[:self.n].tolist()
        out: list[Any] = []
        for _, vals, null in self.blocks:
            if null is None:
                out.extend(vals.tolist())
            else:
                out.extend(None if n else v for v, n in zip(vals.tolist(), null.tolist(), strict=True))
        return out

    def trim(self) -> None:
        """Only the rows read (before pickling)."""
        if self.array is not None:
            self.array = self.array[:self.n]

    def merge(self, later: _Column) -> None:
        """Append the values of the same column read from later bytes."""
        if self.raw is not None or later.raw is not None:
            self.raw = self.values() + later.values()
            self.array, self.blocks = None, []
        elif self.dtype is not None:
            if later.array is not None:
                vals = later.array[:later.n]
                if self.shared is not None and later.has_str:
                    vals = list(map(self.shared.setdefault, vals, vals))
                self._put(vals)
            self.has_str = self.has_str or later.has_str
        else:
            self.blocks.extend(later.blocks)

    def column(self) -> tuple[Any, bool]:
        """(the column's data, whether pandas must still infer its type and the old rules apply)."""
        if self.raw is not None:
            return self.raw, True
        if self.dtype is not None:
            if self.array is None:
                return [], True
            arr, self.array = self.array[:self.n], None
            if self.kind != "text":
                return arr, False
            dtype = _text_dtype()
            if self.has_str and dtype != np.dtype(object):
                return pd.array(arr, dtype=dtype, copy=False), False  # checked: strings and nulls only
            return arr, False
        blocks, self.blocks = self.blocks, []
        if not blocks:
            return [], True
        # ints and floats with their nulls: what pandas infers for such a list
        null = np.concatenate([n if n is not None else np.zeros(len(v), dtype=bool) for _, v, n in blocks])
        if null.all():
            return np.full(len(null), None, dtype=object), False
        if all(form == "i" for form, _, _ in blocks) and not null.any():
            return np.concatenate([v for _, v, _ in blocks]), False
        arr = np.concatenate([v.astype(np.float64) for _, v, _ in blocks])
        arr[null] = np.nan
        return arr, False


class _Reader:
    """Records line by line into columns as the file is read, converted a thousand rows at a time."""

    def __init__(self, path: Path, report: LoadReport, size: int) -> None:
        self.path = path
        self.report = report
        self.size = size  # bytes this reader is to read
        self.columns = [_Column(c) for c in COLUMNS]
        self.pending: list[list[Any]] = [[] for _ in COLUMNS]
        self.rows = 0
        self.failed = False  # the last non-blank line seen did not parse (torn, if nothing follows)
        self.seen = False  # any non-blank line

    def read(self, start: int = 0, end: int | None = None) -> None:
        """The lines of bytes start..end (start at a line's start)."""
        left = (self.path.stat().st_size if end is None else end) - start
        rest = b""
        with open(self.path, "rb") as f:
            f.seek(start)
            while left > 0 and (block := f.read(min(_READ_BYTES, left))):
                left -= len(block)
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                if not self.columns[0].n and lines:  # rows to expect, from the first block's lines (+10%)
                    rows = int(self.size / (len(block) / len(lines)) * 1.1) + 1024
                    for col in self.columns:
                        col.capacity = rows
                for i in range(0, len(lines), _PARSE_LINES):
                    self.lines(lines[i:i + _PARSE_LINES])
        self.lines([rest])
        self.convert()

    def lines(self, lines: list[bytes]) -> None:
        loads = orjson.loads
        try:
            ds = list(map(loads, lines))
            vs = list(map(_v_of, ds))
            clean = vs.count(1) + vs.count(2) + vs.count(3) == len(vs)
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
            clean = False
        if clean:
            if ds:
                self.seen = True
                if self.failed:
                    self.report.bad_lines += 1
                    self.failed = False
        else:  # blank, torn or foreign lines among them: one by one
            ds = []
            for line in lines:
                if not line or line.isspace():
                    continue
                self.seen = True
                if self.failed:
                    self.report.bad_lines += 1
                    self.failed = False
                try:
                    d = loads(line)
                except orjson.JSONDecodeError:
                    self.failed = True
                    continue
                v = d.get("v") if isinstance(d, dict) else None
                if v not in RECORD_VERSIONS or isinstance(v, bool):
                    self.report.bad_lines += 1
                    continue
                ds.append(d)
        if ds:
            for acc, col in zip(self.pending, _columns(ds), strict=True):
                acc.extend(col)
            self.rows += len(ds)
            if self.rows >= _CONVERT_ROWS:
                self.convert()

    def convert(self) -> None:
        """The pending rows into their columns (while their values are still in the CPU cache)."""
        if not self.rows:
            return
        p = self.pending
        ids, keys = p[_CALL_ID], p[_IDEMPOTENCY_KEY]  # the key is usually the call id: share its string
        p[_IDEMPOTENCY_KEY] = [c if k == c and k.__class__ is str and c.__class__ is str else k
                               for k, c in zip(keys, ids, strict=True)]
        for i, col in enumerate(self.columns):
            col.add(p[i])
            p[i] = []
        self.rows = 0

    def merge(self, later: _Reader) -> None:
        """Append what another reader read from the bytes that follow this one's."""
        self.convert()
        if later.seen:
            if self.failed:  # not the last line after all
                self.report.bad_lines += 1
            self.failed, self.seen = later.failed, True
        self.report.bad_lines += later.report.bad_lines
        for mine, theirs in zip(self.columns, later.columns, strict=True):
            mine.merge(theirs)

    def frame(self) -> pd.DataFrame:
        if self.failed:
            self.report.torn_lines += 1
            self.report.warnings.append(f"{self.path}: the last line is torn (a run cut mid-write); read up to it")
        data: dict[str, Any] = {}
        slow: list[str] = []
        for col in self.columns:
            data[col.name], infer = col.column()
            if infer:
                slow.append(col.name)
        self.columns = []
        if all(isinstance(v, list) and not v for v in data.values()):  # no records: object columns, as ever
            df = pd.DataFrame.from_records([], columns=list(COLUMNS))
        else:
            df = pd.DataFrame(data, columns=list(COLUMNS), copy=False)  # no copies of the columns
        for col in slow:  # a missing or foreign value somewhere: the general rules
            if col in FLAGS:
                df[col] = df[col].fillna(False).astype(bool)
            elif col in NUMERIC:
                df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
            elif col in COUNTS:
                df[col] = pd.to_numeric(df[col], errors="coerce").fillna(COUNTS[col]).astype("int64")
        if df["sent"].dtype != bool:  # version 1 records have no `sent`: all but connect failures were sent
            sent = df["sent"]
            df["sent"] = sent.where(sent.notna(), df["error_kind"].ne("connect")).astype(bool)
        return df


def _parts(path: Path, size: int) -> list[tuple[int, int]] | None:
    """Byte ranges (each starting at a line's start) of a big file that two processes should read; else None."""
    if size < SPLIT_BYTES or cpus() < 2 or not sys.executable:
        return None
    count = max(2, size // _PART_BYTES)
    bounds = [0]
    with open(path, "rb") as f:
        for k in range(1, count):
            pos = max(size * k // count, bounds[-1])
            f.seek(pos)
            while chunk := f.read(1 << 20):
                i = chunk.find(b"\n")
                if i >= 0:
                    pos += i + 1
                    break
                pos += len(chunk)
            if bounds[-1] < pos < size:
                bounds.append(pos)
    bounds.append(size)
    return list(zip(bounds[:-1], bounds[1:], strict=True)) if len(bounds) > 2 else None


def _read_parts(argv: list[str]) -> None:
    """The helper process: take parts from the end of the file until they meet ours; pickle a reader for each."""
    path, folder, parts = Path(argv[0]), argv[1], json.loads(argv[2])
    gc.disable()
    for k in reversed(range(len(parts))):
        if not _claim(folder, k):
            return
        start, end = parts[k]
        reader = _Reader(path, LoadReport(), end - start)
        reader.read(start, end)
        for col in reader.columns:
            col.trim()
        with open(os.path.join(folder, f"part-{k}.tmp"), "wb") as f:
            pickle.dump(reader, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(os.path.join(folder, f"part-{k}.tmp"), os.path.join(folder, f"part-{k}.pickle"))


def _read(p: Path, report: LoadReport) -> pd.DataFrame:
    size = p.stat().st_size
    reader = _Reader(p, report, size)
    parts = _parts(p, size)
    if parts is None:
        reader.read()
        return reader.frame()
    # A big file: a helper process reads parts from the end while we read them from the start, each taking the
    # next part while the other has not (so a busy core just leaves more parts to the other); then we add its
    # parts in order: the same result as reading them all here. Whatever goes wrong with the helper (no
    # interpreter, killed, unreadable result), the parts it leaves are read here.
    folder = tempfile.mkdtemp(prefix="ttbench-records-")
    helper = None
    try:
        helper = start_helper("records", "_read_parts", str(p), folder, json.dumps(parts))
        k = 0
        while k < len(parts) and _claim(folder, k):
            reader.read(*parts[k])
            k += 1
        finish_helper(helper, _HELPER_WAIT_S)
        for j in range(k, len(parts)):
            try:  # a part the helper finished (written whole, then renamed), in our own private folder (mkdtemp)
                with open(os.path.join(folder, f"part-{j}.pickle"), "rb") as f:
                    later = pickle.load(f)
            except Exception:  # not there, or unreadable: the part is read here
                later = None
            if later is None:
                later = _Reader(p, LoadReport(), parts[j][1] - parts[j][0])
                later.read(*parts[j])
            reader.merge(later)
            del later
    finally:
        if helper is not None and helper.poll() is None:
            helper.kill()
            helper.wait()
        shutil.rmtree(folder, ignore_errors=True)
    return reader.frame()


def load_records(path: str | Path, report: LoadReport | None = None, batch: int = 200_000) -> pd.DataFrame:
    """All attempt records as a DataFrame; a torn last line is skipped with a warning.

    The file is read a block at a time and its values go straight into columns, so a big run needs about the
    memory of its DataFrame, not of its file; a file of SPLIT_BYTES or more is read by two processes, ours and a
    helper, on two CPUs (`batch` is kept for callers; blocks are sized internally)."""
    report = report or LoadReport()
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no records file")
    gc_on = gc.isenabled()
    gc.disable()  # millions of short-lived dicts, no cycles: the collector would only rescan them
    try:
        df = _read(p, report)
    finally:
        if gc_on:
            gc.enable()
    if report.bad_lines:
        report.warnings.append(f"{p}: skipped {report.bad_lines} lines that are not version-1 to -5 records")
    return df
