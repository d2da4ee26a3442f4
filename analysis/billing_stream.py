"""The billing audit at scale: analysis.billing.audit over attempt records and a ledger read in pieces.

`audit_batches(attempt_batches, ledger, prices, policy, lost_workers)` returns exactly what `audit()` returns for
the same records and charges (every key, findings in the same order, the same Decimal strings), with memory that
does not grow with the run:

* the ledger is read once, in batches (`LedgerStream`: load_ledger's rows and its one-line errors, CSV and JSON
  Lines streamed, a JSON list read whole; a plain CSV chunk is split with numpy, anything else with the csv
  module); a big ledger file is read by a helper process on the second CPU while the records are read here;
* the records are read once (`attempt_batches()` is called again only to redo the audit after a hash collision, or
  for audit() on the whole input); each call goes to one of K partitions by a hash of its call id: K = 1 in memory
  up to RAW_ROWS records, else about PART_ROWS records a partition, in temporary files. A string column backed by
  Arrow is read as bytes straight from its buffers (no Python string per value);
* a charge joins by its request id through a table of the records' request ids and response ids (64-bit hashes,
  sorted, with the winning row: 13 bytes a record); the hit is checked against the record's own id in its
  partition (a collision of two ids is detected there and the audit redone with another salt, at most twice,
  then audit() runs on the whole input). The few charges that join otherwise (attempt id, Idempotency-Key, a call
  id, a lost worker's key) or whose request id several rows share are resolved with the strings themselves, from
  the rows whose hashes they probe;
* per partition, a successful call with exactly one charge under its billing request id, whose counts are the
  response's and whose amount is the price sheet's within the tolerance (a float check; a case near the tolerance
  is left to the exact comparison) is correct, with numpy; every other call goes through audit()'s own per-call
  logic (billing.audit_call), and findings, sums and pair ratios are merged in audit()'s order.
  With K > 1 a helper process audits partitions from the last one down while this one goes up.

Input it cannot take exactly (a call id that is not a string, an id ending with a NUL) makes it run audit() on
the whole input instead (memory then grows with the run).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import shutil
import tempfile
import time
from collections import deque, namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ttformats.prices import PriceSheet

from . import trim
from .billing import (
    FINDING_KINDS,
    JOINS,
    Policy,
    _Charge,
    _lost_worker,
    audit,
    audit_call,
)
from .firstlook import FirstLook
from .helper import claim as _claim
from .helper import cpus
from .helper import start as start_helper
from .ledger import (
    LEDGER_ALIASES,
    LEDGER_COLUMNS,
    LEDGER_JOIN_COLUMNS,
    LEDGER_TOKEN_COLUMNS,
    _count,
    _dec,
    load_ledger,
)
from .load import InputError

#: the attempt record columns the audit reads (ids, sent and dry_run_ignored may be absent: audit's defaults)
AUDIT_COLUMNS = ("run_id", "call_id", "attempt", "attempt_id", "idempotency_key", "request_id", "original_request_id",
                 "ids", "replayed", "endpoint", "model", "stream", "dry_run", "dry_run_ignored", "pair_id",
                 "est_amount", "ok", "status", "sent", "error_kind", "finish_reason", "images_returned", "image_size",
                 "image_quality", "u_input", "u_output", "u_cached", "u_write")
_OPTIONAL = {"ids": None, "sent": True, "dry_run_ignored": False}
_FIELDS = AUDIT_COLUMNS[1:]  # an attempt row on the per-call path
_AttRow = namedtuple("_AttRow", _FIELDS)  # type: ignore[misc]
_ChargeRow = namedtuple("_ChargeRow", ("request_id", "idempotency_key", "attempt_id", "upstream_request_id",  # type: ignore[misc]
                                       "amount", "input_tokens", "output_tokens", "cached_input_tokens", "images"))
_LOW_CARD = ("endpoint", "model", "error_kind", "finish_reason", "image_size", "image_quality")

BATCH_ROWS = 1 << 16  # ledger rows per batch (about; a CSV chunk is CHUNK_BYTES)
CHUNK_BYTES = 8 << 20  # ledger bytes read at a time
PART_ROWS = 400_000  # attempt records per partition (when there is more than one)
RAW_ROWS = 1_500_000  # up to this many records: one partition, kept in memory
MIN_BLOCK = 32_768  # smaller attempt batches are joined up to this many rows
_BIG = float(2 ** 53)  # counts from here on are not exact in a float: the per-call path takes them
_SALT = 0x5EEDB1110C0FFEE5
ROUTE_ROWS = 16_384  # charges held per partition before they are written
PREFETCH_BYTES = 512 << 20  # a ledger file this big is read by a helper process while the records are read here
_COMMON_ROWS = 1 << 15  # calls checked at once (the arrays stay in the CPU's cache)
_MISSING = b""
_DONE = object()


class _Unsupported(Exception):
    """Input the partitioned audit cannot take exactly (audit() then runs on the whole input)."""


class _Collision(Exception):
    """Two different join ids with the same 64-bit hash met: the audit is redone with another salt."""


# ---------------------------------------------------------------------------------------------------------------
# byte strings and their hashes

_P1 = np.uint64(0x9E3779B97F4A7C15)
_P2 = np.uint64(0xBF58476D1CE4E5B9)
_P3 = np.uint64(0x94D049BB133111EB)


def _hash_s(a: np.ndarray, salt: int) -> np.ndarray:
    """A 64-bit hash of each byte string of an S array, whatever the array's width (the strings hold no NUL)."""
    n = len(a)
    w = a.dtype.itemsize
    w8 = -(-w // 8) * 8
    a = a.astype(f"S{w8}") if w8 != w else np.ascontiguousarray(a)
    words = a.view(np.uint64).reshape(n, w8 // 8)
    h = np.full(n, salt & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(w8 // 8):
            x = words[:, k]
            m = (h ^ x) * _P1
            m ^= m >> np.uint64(29)
            h = np.where(x != 0, m, h)  # a zero word is padding: a string's own words hold a non-NUL byte
        h ^= h >> np.uint64(30)
        h *= _P2
        h ^= h >> np.uint64(27)
        h *= _P3
        h ^= h >> np.uint64(31)
    return h


def _encode(vals: np.ndarray) -> np.ndarray:
    """Python strings as UTF-8 byte strings (an S array); a NUL cannot be kept in one: _Unsupported."""
    if not len(vals):
        return np.zeros(0, "S1")
    try:
        out = vals.astype("S")
        if int(np.char.str_len(out).sum()) != sum(map(len, vals)):  # a string ended with a NUL, which S drops
            raise _Unsupported("a text value ends with a NUL character")
    except UnicodeEncodeError:
        raw = [v.encode("utf-8", "surrogatepass") for v in vals.tolist()]
        if any(b.endswith(b"\x00") for b in raw):
            raise _Unsupported("a text value ends with a NUL character") from None
        out = np.array(raw, dtype="S")
    return out


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "surrogatepass")


def _is_str_array(arr: np.ndarray) -> np.ndarray:
    """Which values are strings (audit's isinstance(v, str))."""
    if set(map(type, arr)) <= {str}:
        return np.ones(len(arr), bool)
    return np.fromiter((isinstance(v, str) for v in arr), bool, len(arr))


def _join_texts(arr: np.ndarray) -> np.ndarray:
    """The join ids of a column (S array): a non-empty string's bytes, b"" for anything else."""
    is_str = _is_str_array(arr)
    present = is_str & (arr != "") if is_str.any() else is_str
    vals = arr if present.all() else np.where(present, arr, "")
    return _encode(vals)


def _arrow_texts(s: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """An Arrow-backed string column's UTF-8 bytes as an S array (b"" where missing) and which values are present,
    straight from its buffers; None for any other column."""
    pa_arr = getattr(s.array, "_pa_array", None)
    if pa_arr is None:
        return None
    outs, valids = [], []
    for chunk in pa_arr.chunks:
        large = pa.types.is_large_string(chunk.type)
        if not (large or pa.types.is_string(chunk.type)):
            return None
        n = len(chunk)
        bufs = chunk.buffers()
        ot = np.dtype(np.int64 if large else np.int32)
        offsets = np.frombuffer(bufs[1], dtype=ot, count=n + 1, offset=chunk.offset * ot.itemsize).astype(np.int64)
        data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        valid = np.ones(n, bool) if chunk.null_count == 0 else \
            np.asarray(pc.is_valid(chunk).to_numpy(zero_copy_only=False), dtype=bool)
        st, en = offsets[:-1], np.where(valid, offsets[1:], offsets[:-1])
        lo = int(st.min()) if n else 0
        hi = int(en.max()) if n else 0
        pad = np.zeros(hi - lo + _PAD, np.uint8)
        pad[:hi - lo] = data[lo:hi]
        m, length = _gather(pad, st - lo, en - lo)
        full = length > 0
        if full.any() and (pad[(en - lo - 1)[full]] == 0).any():
            raise _Unsupported("a text value ends with a NUL character")
        outs.append(_as_s(m))
        valids.append(valid)
    if not outs:
        return np.zeros(0, "S1"), np.zeros(0, bool)
    return (np.concatenate(outs) if len(outs) > 1 else outs[0]), (np.concatenate(valids) if len(valids) > 1
                                                                  else valids[0])


def _texts(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A text column as UTF-8 bytes (b"" for anything not a string) and which values are strings."""
    got = _arrow_texts(s)
    if got is not None:
        return got
    arr = s.to_numpy(dtype=object)
    is_str = ~s.isna().to_numpy() if isinstance(s.dtype, pd.StringDtype) else _is_str_array(arr)
    return _encode(arr if is_str.all() else np.where(is_str, arr, "")), is_str


def _isin(s: pd.Series, want: set[str], sets: dict[int, pa.Array]) -> np.ndarray:
    """Which values are in `want` (a missing one is not): Arrow's is_in for an Arrow-backed string column, with
    `want` as an Arrow array made once per set (kept in `sets`); Series.isin otherwise."""
    pa_arr = getattr(s.array, "_pa_array", None)
    if pa_arr is None or not (pa.types.is_string(pa_arr.type) or pa.types.is_large_string(pa_arr.type)):
        return s.isin(want).to_numpy(dtype=bool)
    values = sets.get(id(want))
    if values is None or values.type != pa_arr.type:
        values = sets[id(want)] = pa.array(sorted(want), type=pa_arr.type)
    got = pc.is_in(pa_arr, value_set=values, skip_nulls=True)
    return np.asarray(got.to_numpy(zero_copy_only=False), dtype=bool)


def _equals(s: pd.Series, value: str) -> np.ndarray:
    """Which values equal this string (a missing one does not)."""
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.na_value is np.nan:
        return (s == value).to_numpy(dtype=bool)
    return np.asarray(s.to_numpy(dtype=object) == value, dtype=bool)


def _series_truthy(s: pd.Series) -> np.ndarray:
    """bool(v) of each value of a column."""
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.na_value is np.nan:
        return ~(s == "").to_numpy(dtype=bool)  # NaN is true, "" false
    return _truthy(s.to_numpy(dtype=object) if s.dtype.kind not in "biuf" else s.to_numpy())


def _truthy(arr: np.ndarray) -> np.ndarray:
    """bool(v) of each value."""
    if arr.dtype == bool:
        return arr
    if arr.dtype != object:
        return arr.astype(bool)
    if len(arr) and (arr == None).all():  # noqa: E711  (an all-null text column)
        return np.zeros(len(arr), bool)
    return np.fromiter(map(bool, arr), bool, len(arr))


# ---------------------------------------------------------------------------------------------------------------
# the ledger, read in batches

@dataclass
class _Charges:
    """Charge rows in columns: the audit's form of a ledger batch (what load_ledger gives, row for row)."""

    rid: np.ndarray  # S: request_id (b"": none)
    up: np.ndarray  # S: upstream_request_id
    aid: np.ndarray  # S: attempt_id
    key: np.ndarray  # S: idempotency_key
    txt: np.ndarray  # S: the amount is Decimal(txt), times `scale` when that is not None
    scale: Decimal | None
    f: np.ndarray  # float64: the amount (close)
    c: np.ndarray | None  # int64 coefficients of the amounts, exponents `e`, where `simple` (else Decimals: dec)
    e: np.ndarray | None
    simple: np.ndarray | None
    dec: list[Decimal] | None  # every amount, when the batch came as Decimals
    tin: np.ndarray  # float64 counts (NaN: none)
    tout: np.ndarray
    tcached: np.ndarray
    timg: np.ndarray
    twrite: np.ndarray
    na_rid: np.ndarray  # int8: what a missing request_id / idempotency_key is in the frame: 0 None, 1 NaN, 2 the
    na_key: np.ndarray  # ledger's rule (NaN when the column has a string anywhere, else None), 3 ""
    extra: dict[str, list[Any]] | None = None  # time, type, endpoint, model, currency (frames() only)
    final: set[int] | None = None  # rows whose txt is already the final amount (load_ledger's code read them)

    @property
    def n(self) -> int:
        return len(self.rid)

    def amounts(self, idx: Iterable[int] | None = None) -> list[Decimal]:
        """The Decimal amounts of these rows (all when idx is None)."""
        rows = range(self.n) if idx is None else idx
        if self.dec is not None:
            return [self.dec[i] for i in rows]
        txt = self.txt
        if self.scale is None:
            return [Decimal(_decode(txt[i])) for i in rows]
        return [Decimal(_decode(txt[i])) * self.scale for i in rows]


@dataclass
class _Ctx:
    """How a ledger's rows read: its name, columns, charge types and scale (load_ledger's arguments, resolved)."""

    name: str
    source_of: dict[str, str]
    kinds: set[str] | None
    charge_if_amount: bool
    scale: Decimal
    full: bool


def _where_msg(ctx: _Ctx, where: str, canon: str) -> str:
    return f"{ctx.name}: {where}: {ctx.source_of[canon]}"


def _scalar_row(vals: dict[str, Any], where: str, ctx: _Ctx) -> dict[str, Any] | None:
    """load_ledger's handling of one row (None: not a charge); its errors."""
    row = dict(vals)
    typed = row["type"] is not None and row["type"] != "" and ctx.kinds is not None
    is_charge = not typed or str(row["type"]) in ctx.kinds  # type: ignore[operator]
    if not is_charge and not ctx.charge_if_amount:
        return None
    if not is_charge and row["amount"] in (None, ""):
        return None
    row["amount"] = _dec(row["amount"], _where_msg(ctx, where, "amount")) * ctx.scale
    if not is_charge and row["amount"] == 0:
        return None
    for c in LEDGER_TOKEN_COLUMNS:
        row[c] = _count(row[c], _where_msg(ctx, where, c))
    for c in ("request_id", "idempotency_key", "attempt_id", "upstream_request_id"):
        row[c] = None if row[c] in (None, "") else str(row[c])
    return row


_EXTRA = ("time", "type", "endpoint", "model", "currency")
_IDS = ("request_id", "upstream_request_id", "attempt_id", "idempotency_key")


def _subset(ch: _Charges, idx: np.ndarray) -> _Charges:
    """These rows of a batch only (so that the batch itself can go)."""
    arrays = ("rid", "up", "aid", "key", "txt", "f", "c", "e", "simple", "tin", "tout", "tcached", "timg", "twrite",
              "na_rid", "na_key")
    out = replace(ch, **{k: getattr(ch, k)[idx] for k in arrays if getattr(ch, k) is not None}, extra=None)
    if ch.dec is not None:
        out.dec = [ch.dec[i] for i in idx.tolist()]
    return out


def _from_rows(rows: list[dict[str, Any]], ctx: _Ctx) -> _Charges:
    """Charges from load_ledger's rows (ids str or None, amounts Decimal, counts int or None)."""
    n = len(rows)

    def ids(c: str) -> np.ndarray:
        return _encode(np.array(["" if r[c] is None else r[c] for r in rows] if n else [], dtype=object))

    def counts(c: str) -> np.ndarray:
        return np.array([np.nan if r[c] is None else float(r[c]) for r in rows], dtype=np.float64)

    dec = [r["amount"] for r in rows]
    out = _Charges(ids("request_id"), ids("upstream_request_id"), ids("attempt_id"), ids("idempotency_key"),
                   _encode(np.array([str(d) for d in dec], dtype=object)), None,
                   np.array([float(d) for d in dec], dtype=np.float64), None, None, None, dec,
                   counts("input_tokens"), counts("output_tokens"), counts("cached_input_tokens"), counts("images"),
                   counts("cache_write_tokens"), np.full(n, 2, np.int8), np.full(n, 2, np.int8))
    if ctx.full:
        out.extra = {c: [r[c] for r in rows] for c in _EXTRA}
        out.extra["_counts"] = [tuple(r[c] for c in LEDGER_TOKEN_COLUMNS) for r in rows]  # type: ignore[misc]
    return out


def _charges_from_frame(df: pd.DataFrame) -> _Charges:
    """Charges from a frame of canonical rows (load_ledger's, or pieces of one)."""
    n = len(df)

    def col(c: str) -> np.ndarray:
        return df[c].to_numpy(dtype=object) if c in df else np.full(n, None, dtype=object)

    def ids(c: str) -> tuple[np.ndarray, np.ndarray]:
        arr = col(c)
        s = _join_texts(arr)
        na = np.full(n, 0, np.int8)
        for i in np.flatnonzero(s == _MISSING).tolist():
            v = arr[i]
            if v is None:
                na[i] = 0
            elif isinstance(v, float) and v != v:
                na[i] = 1
            elif v == "":
                na[i] = 3
            elif c in ("request_id", "idempotency_key"):
                raise _Unsupported(f"a ledger {c} that is not a string: {v!r}")
        return s, na

    def counts(c: str) -> np.ndarray:
        arr = col(c)
        try:
            return np.array([np.nan if v is None else float(v) for v in arr.tolist()], dtype=np.float64)
        except (TypeError, ValueError):
            raise _Unsupported(f"a ledger {c} that is not a number") from None

    dec = col("amount").tolist()
    if not all(isinstance(d, Decimal) for d in dec):
        raise _Unsupported("a ledger amount that is not a Decimal")
    rid, na_rid = ids("request_id")
    key, na_key = ids("idempotency_key")
    return _Charges(rid, ids("upstream_request_id")[0], ids("attempt_id")[0], key,
                    _encode(np.array([str(d) for d in dec], dtype=object)), None,
                    np.array([float(d) for d in dec], dtype=np.float64), None, None, None, dec,
                    counts("input_tokens"), counts("output_tokens"), counts("cached_input_tokens"), counts("images"),
                    counts("cache_write_tokens"), na_rid, na_key)


def _frame_of(ch: _Charges) -> pd.DataFrame:
    """The canonical rows of a batch, as load_ledger builds them."""
    n = ch.n
    extra = ch.extra or {}
    if "_frame" in extra:
        return extra["_frame"]  # type: ignore[return-value]
    cols: dict[str, list[Any]] = {}
    for c in _EXTRA:
        cols[c] = extra.get(c, [None] * n)
    for c, arr in (("request_id", ch.rid), ("idempotency_key", ch.key), ("attempt_id", ch.aid),
                   ("upstream_request_id", ch.up)):
        cols[c] = [None if b == _MISSING else _decode(b) for b in arr.tolist()]
    counts = extra.get("_counts")
    for k, c in enumerate(LEDGER_TOKEN_COLUMNS):
        if counts is not None:
            cols[c] = [t[k] for t in counts]
        else:
            arr = {"input_tokens": ch.tin, "output_tokens": ch.tout, "cached_input_tokens": ch.tcached,
                   "cache_write_tokens": ch.twrite, "images": ch.timg}[c]
            cols[c] = [None if v != v else int(v) for v in arr.tolist()]
    cols["amount"] = ch.amounts()
    rows = [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)] if n else []
    return pd.DataFrame(rows, columns=LEDGER_COLUMNS)


# --- CSV, a chunk at a time ---

def _split_lines(text: str) -> list[str]:
    """Lines as io.StringIO yields them (split at "\\n" only, ends kept)."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def _decode_error(name: str, exc: UnicodeDecodeError, offset: int) -> InputError:
    """The error load_ledger gives for a file that is not UTF-8 (positions in the whole file)."""
    start, end = exc.start + offset, exc.end + offset
    if exc.end == exc.start + 1:
        what = f"can't decode byte 0x{exc.object[exc.start]:02x} in position {start}"
    else:
        what = f"can't decode bytes in position {start}-{end - 1}"
    return InputError(f"{name}: cannot read the ledger: '{exc.encoding}' codec {what}: {exc.reason}")


class _Bytes:
    """A ledger's bytes, a chunk ending at a newline at a time, decoded with load_ledger's rules (UTF-8, and for a
    file universal newlines)."""

    def __init__(self, f: BinaryIO, name: str, translate: bool, errors: str) -> None:
        self.f, self.name, self.translate, self.errors = f, name, translate, errors
        self.buf = b""
        self.off = 0  # the file offset of buf[0]
        self.eof = False

    def _fill(self) -> bool:
        more = self.f.read(CHUNK_BYTES)
        if not more:
            self.eof = True
            return False
        self.buf += more
        return True

    def chunk(self, first_line: bool = False) -> tuple[bytes, int] | None:
        """The next bytes up to and including a newline (or to the end), and their offset."""
        while True:
            i = self.buf.find(b"\n") if first_line else self.buf.rfind(b"\n")
            if i >= 0 and (first_line or self.eof or len(self.buf) >= CHUNK_BYTES // 2):
                out, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                break
            if self.eof or not self._fill():
                if not self.buf:
                    return None
                out, self.buf = self.buf, b""
                break
        off = self.off
        self.off += len(out)
        return out, off

    def decode(self, b: bytes, off: int) -> str:
        """Bytes of the file as load_ledger reads them."""
        try:
            text = b.decode("utf-8", self.errors)
        except UnicodeDecodeError as exc:
            raise _decode_error(self.name, exc, off) from None
        if self.translate and "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    def peek(self) -> tuple[str, str]:
        """(the first non-space character of the text, its first line), reading nothing away."""
        pos = 0
        first_line: str | None = None
        while True:
            i = self.buf.find(b"\n", pos)
            if i < 0 and not self.eof:
                self._fill()
                continue
            end = len(self.buf) if i < 0 else i + 1
            text = self.decode(self.buf[pos:end], self.off + pos)
            if first_line is None:
                first_line = text.split("\n", 1)[0]
            s = text.lstrip()
            if s:
                return s[0], first_line
            if i < 0:
                return "", first_line
            pos = end

    def decode_rest(self) -> None:
        """Raise the decoding error of the rest of the file, if any (it comes before every other error)."""
        while (c := self.chunk()) is not None:
            if not c[0].isascii():
                self.decode(*c)


_FAST_BAD = (b'"', b"\r", b"\x00")


_PAD = 264  # zero bytes after a chunk: every field's window of up to 256 bytes stays inside


def _csv_offsets(buf: bytes, nf: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int] | None:
    """A chunk of plain CSV lines (no quote, carriage return or NUL): (its bytes with _PAD zero bytes after them,
    field starts and ends (rows x nf), each row's line index in the chunk, the number of lines); None when a
    non-empty line has another number of fields than the header, or a field is too long for the csv module."""
    a = np.frombuffer(buf, np.uint8)
    pad = np.zeros(len(a) + _PAD, np.uint8)
    pad[:len(a)] = a
    got = None
    # every line a row: with several fields, the pattern check below fails on a blank line (its newline takes a
    # comma's place); a single field needs the search
    if nf > 1 or (not buf.startswith(b"\n") and b"\n\n" not in buf):
        seps = np.flatnonzero((a == 44) | (a == 10))
        if not buf.endswith(b"\n"):
            seps = np.append(seps, len(a))
        if len(seps) % nf == 0:
            sp = seps.reshape(-1, nf)
            ends = sp[:, -1]
            if (pad[ends[:-1]] == 10).all() and (len(ends) == 0 or pad[ends[-1]] in (10, 0)) \
                    and (pad[sp[:, :-1]] == 44).all():
                fs = np.empty_like(sp)
                fs[:1, 0] = 0
                fs[1:, 0] = ends[:-1] + 1
                fs[:, 1:] = sp[:, :-1] + 1
                got = fs, sp, np.arange(len(sp)), len(sp)
    if got is None:
        nl = np.flatnonzero(a == 10)
        ends = nl if buf.endswith(b"\n") else np.append(nl, len(a))
        starts = np.zeros(len(ends), np.int64)
        starts[1:] = ends[:-1] + 1
        full = ends > starts
        rows = np.flatnonzero(full)
        commas = np.flatnonzero(a == 44)
        if nf > 1:
            per = np.bincount(np.searchsorted(ends, commas), minlength=len(ends))
            if not (per[full] == nf - 1).all():
                return None
            cm = commas.reshape(len(rows), nf - 1)
        elif len(commas):
            return None
        fs = np.empty((len(rows), nf), np.int64)
        fe = np.empty((len(rows), nf), np.int64)
        fs[:, 0] = starts[rows]
        fe[:, -1] = ends[rows]
        if nf > 1:
            fs[:, 1:] = cm + 1
            fe[:, :-1] = cm
        got = fs, fe, rows, len(ends)
    fs, fe, rows, nlines = got
    if len(rows) and int((fe - fs).max()) >= csv.field_size_limit():
        return None
    return pad, fs, fe, rows, nlines


def _gather(pad: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fields pad[s:e] as a matrix of bytes (rows x width, NUL-padded) and their lengths."""
    n = len(s)
    length = e - s
    w = max(int(length.max()) if n else 0, 1)
    if w > _PAD - 8:
        m = np.zeros((n, w), np.uint8)
        for i, (x, y) in enumerate(zip(s.tolist(), e.tolist(), strict=True)):
            m[i, :y - x] = pad[x:y]
        return m, length
    # w bytes from each start (a view of pad as w-byte items at every offset), then the bytes past each end zeroed
    m = np.ndarray((len(pad) - w + 1,), dtype=f"S{w}", buffer=pad, strides=(1,))[s].view(np.uint8).reshape(n, w)
    short = np.flatnonzero(length < w)
    if short.size * 4 > n:
        m *= (np.arange(w) < length[:, None]).view(np.uint8)
    elif short.size:
        m[short] *= (np.arange(w) < length[short, None]).view(np.uint8)
    return m, length


def _as_s(m: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(m).view(f"S{m.shape[1]}").ravel()


def _parse_counts(m: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells of digits only (at most 15): (their values, NaN where empty; which cells are that simple)."""
    w = m.shape[1]
    k = np.arange(w)
    inside = k < length[:, None]
    digit = (m >= 48) & (m <= 57)
    simple = (digit | ~inside).all(axis=1) & (length <= 15)
    v = np.zeros(len(m), np.int64)
    for i in range(w):
        v = np.where(i < length, v * 10 + (m[:, i].astype(np.int64) - 48), v)
    out = v.astype(np.float64)
    out[length == 0] = np.nan
    return out, simple


def _parse_amounts(m: np.ndarray, length: np.ndarray, scale: Decimal) -> tuple[np.ndarray, ...]:
    """Cells like -12.345 (at most 18 digits): (coefficient, exponent, float value of cell x scale, simple)."""
    n, w = m.shape
    k = np.arange(w)
    inside = k < length[:, None]
    digit = (m >= 48) & (m <= 57) & inside
    dot = (m == 46) & inside
    sign = ((m[:, 0] == 45) | (m[:, 0] == 43)) & (length > 0)
    other = inside & ~digit & ~dot
    other[:, 0] &= ~sign
    nd = digit.sum(axis=1)
    ndot = dot.sum(axis=1)
    simple = ~other.any(axis=1) & (ndot <= 1) & (nd >= 1) & (nd <= 18)
    c = np.zeros(n, np.int64)
    for i in range(w):
        c = np.where(digit[:, i], c * 10 + (m[:, i].astype(np.int64) - 48), c)
    dpos = np.where(ndot == 1, dot.argmax(axis=1), w)
    frac = (digit & (k > dpos[:, None])).sum(axis=1)
    c = np.where(sign & (m[:, 0] == 45), -c, c)
    e = -frac.astype(np.int64)
    sc = scale.as_tuple()
    sc_c = int("".join(map(str, sc.digits))) * (-1 if sc.sign else 1)
    sc_e = int(sc.exponent)
    if sc_c != 1 or sc_e != 0:
        lim = (2 ** 63 - 1) // abs(sc_c)
        simple &= np.abs(c) <= lim
        c = np.where(simple, c * sc_c, 0)
        e = e + sc_e
    f = c.astype(np.float64) * np.power(10.0, e.astype(np.float64))
    return c, e, f, simple


class _CsvRows:
    """A CSV ledger as csv.DictReader reads it (the same rows, `line N` and errors), a chunk of plain lines at a time
    with numpy, other lines with the csv module."""

    def __init__(self, src: _Bytes) -> None:
        self.src = src
        self.lines = 0  # lines read so far
        self.last_end = 0  # the line the last record ended on
        self.dict_line = 0  # DictReader.line_num: a record's last line; an error keeps the one before (or the
        # first blank line read since)
        self.pending: deque[str] = deque()
        self.header: list[str] | None = None

    def _feed(self, first: bool) -> Iterator[str]:
        while True:
            while self.pending:
                yield self.pending.popleft()
            c = self.src.chunk(first_line=first)
            first = False
            if c is None:
                return
            self.pending.extend(_split_lines(self.src.decode(*c)))

    def _error(self, exc: csv.Error) -> InputError:
        self.src.decode_rest()
        return InputError(f"{self.src.name}: line {self.dict_line}: not CSV: {exc}")

    def read_header(self) -> list[str] | None:
        """The field names (DictReader.fieldnames): the first row, even an empty one; None for an empty file."""
        reader = csv.reader(self._feed(first=True))
        try:
            row: list[str] | None = next(reader)
        except StopIteration:
            row = None
        except csv.Error as exc:
            raise self._error(exc) from None
        self.lines = self.dict_line = self.last_end = reader.line_num
        self.header = row
        return row

    def _slow(self, out: list[tuple[int, list[str]]], limit: int) -> bool:
        """Records until the lines read end at a record boundary (or `limit` records); False at the end."""
        base = self.lines
        reader = csv.reader(self._feed(first=False))

        def step() -> list[str]:
            try:
                row = next(reader)
            except csv.Error as exc:
                raise self._error(exc) from None
            self.lines = base + reader.line_num
            return row

        try:
            while True:
                if self.lines > self.last_end:  # blank lines read already: DictReader's first read was one
                    self.dict_line = self.last_end + 1
                    row: list[str] = []
                else:
                    row = step()
                    self.dict_line = self.lines
                while row == []:
                    row = step()
                self.dict_line = self.last_end = self.lines  # DictReader's fieldnames sets it again: the record's end
                out.append((self.dict_line, row))
                if not self.pending or len(out) >= limit:
                    return True
        except StopIteration:
            return False

    def pieces(self, nf: int) -> Iterator[tuple[str, Any]]:
        """("fast", (bytes, starts, ends, where)) chunks and ("rows", [(where, fields)]) lists, in order."""
        while True:
            if self.pending:
                out: list[tuple[int, list[str]]] = []
                more = self._slow(out, BATCH_ROWS)
                if out:
                    yield "rows", out
                if not more:
                    return
                continue
            c = self.src.chunk()
            if c is None:
                return
            buf, off = c
            if nf >= 1 and buf.isascii() and not any(b in buf for b in _FAST_BAD):
                got = _csv_offsets(buf, nf)
                if got is not None:
                    a, fs, fe, rows, nlines = got
                    where = self.lines + 1 + rows  # the line of each record
                    if len(rows):
                        self.last_end = self.dict_line = int(where[-1])
                    self.lines += nlines
                    if len(rows):
                        yield "fast", (a, fs, fe, where)
                    continue
            self.pending.extend(_split_lines(self.src.decode(buf, off)))


def _dict_row(header: list[str], row: list[str]) -> dict[Any, Any]:
    """csv.DictReader's dict of a row."""
    d: dict[Any, Any] = dict(zip(header, row, strict=False))
    lf, lr = len(header), len(row)
    if lf < lr:
        d[None] = row[lf:]
    elif lf > lr:
        for key in header[lr:]:
            d[key] = None
    return d


def _fast_charges(a: np.ndarray, fs: np.ndarray, fe: np.ndarray, where: np.ndarray, index: dict[str, int],
                  header: list[str], ctx: _Ctx) -> _Charges | None:
    """The charges of a chunk of plain CSV lines (numpy for the usual cells, load_ledger's code for the others)."""
    n = len(where)

    def field(canon: str) -> tuple[np.ndarray, np.ndarray] | None:
        i = index.get(ctx.source_of[canon])
        if i is None:
            return None
        return _gather(a, fs[:, i], fe[:, i])

    def s_of(canon: str) -> np.ndarray:
        got = field(canon)
        return np.zeros(n, "S1") if got is None else _as_s(got[0])

    typ = field("type")
    if typ is None or ctx.kinds is None:
        charge = np.ones(n, bool)
    else:
        ts = _as_s(typ[0])
        kinds = np.array([k.encode("utf-8", "surrogatepass") for k in ctx.kinds] or [b"\x00"], dtype="S")
        charge = (ts == _MISSING) | np.isin(ts, kinds)
    amt = field("amount")
    if amt is None:
        present = np.zeros(n, bool)
        c = np.zeros(n, np.int64)
        e = np.zeros(n, np.int64)
        f = np.zeros(n)
        simple = np.zeros(n, bool)
        amt_s = np.zeros(n, "S1")
    else:
        present = amt[1] > 0
        c, e, f, simple = _parse_amounts(amt[0], amt[1], ctx.scale)
        amt_s = _as_s(amt[0])
    counts = {}
    for col in LEDGER_TOKEN_COLUMNS:
        got = field(col)
        if got is None:
            counts[col] = (np.full(n, np.nan), np.ones(n, bool))
        else:
            counts[col] = _parse_counts(*got)
    if ctx.charge_if_amount:
        kept = charge | (present & simple & (c != 0))
        maybe = ~charge & present & ~simple  # a non-charge with an amount to check: load_ledger's code
    else:
        kept = charge.copy()
        maybe = np.zeros(n, bool)
    odd = (charge & ~(present & simple)) | maybe
    for col in LEDGER_TOKEN_COLUMNS:
        odd |= (kept | maybe) & ~counts[col][1]
    dec_rows: dict[int, dict[str, Any]] = {}
    if odd.any():  # in order: the first of them that fails is the ledger's first bad row
        for i in np.flatnonzero(odd).tolist():
            vals = {}
            for canon in ("type", "amount", *LEDGER_TOKEN_COLUMNS, *_IDS):
                j = index.get(ctx.source_of[canon])
                vals[canon] = None if j is None else _decode(a[fs[i, j]:fe[i, j]].tobytes())
            got_row = _scalar_row(vals, f"line {where[i]}", ctx)
            kept[i] = got_row is not None
            if got_row is not None:
                dec_rows[i] = got_row
    keep = np.flatnonzero(kept)
    if not len(keep):
        return None
    out = _Charges(s_of("request_id")[keep], s_of("upstream_request_id")[keep], s_of("attempt_id")[keep],
                   s_of("idempotency_key")[keep], amt_s[keep], ctx.scale, f[keep], c[keep], e[keep], simple[keep],
                   None, counts["input_tokens"][0][keep], counts["output_tokens"][0][keep],
                   counts["cached_input_tokens"][0][keep], counts["images"][0][keep],
                   counts["cache_write_tokens"][0][keep], np.full(len(keep), 2, np.int8), np.full(len(keep), 2, np.int8))
    if dec_rows:  # rows load_ledger's code read: their values as it gives them
        pos = {int(i): k for k, i in enumerate(keep.tolist())}
        txt = out.txt.astype(object)
        for i, row in dec_rows.items():
            k = pos[i]
            d = row["amount"]
            txt[k] = str(d).encode()
            out.f[k] = float(d)
            out.simple[k] = False  # type: ignore[index]
            for col, arr in (("input_tokens", out.tin), ("output_tokens", out.tout), ("cached_input_tokens", out.tcached),
                             ("images", out.timg), ("cache_write_tokens", out.twrite)):
                arr[k] = np.nan if row[col] is None else float(row[col])
        out.txt = txt.astype("S")
        out.dec = None
        out.final = {pos[i] for i in dec_rows}
    if ctx.full:
        ex: dict[str, Any] = {}
        for canon in _EXTRA:
            j = index.get(ctx.source_of[canon])
            ex[canon] = [None if j is None else _decode(a[fs[i, j]:fe[i, j]].tobytes()) for i in keep.tolist()]
        rows_counts = []
        for i in keep.tolist():
            if i in dec_rows:
                rows_counts.append(tuple(dec_rows[i][col] for col in LEDGER_TOKEN_COLUMNS))
            else:
                rows_counts.append(tuple(None if counts[col][0][i] != counts[col][0][i] else int(counts[col][0][i])
                                         for col in LEDGER_TOKEN_COLUMNS))
        ex["_counts"] = rows_counts
        out.extra = ex
    return _fix_scaled(out)


_NONE = type(None)


def _json_charges(numbers: Sequence[int], objs: list[dict[str, Any]], ctx: _Ctx) -> _Charges | None:
    """The charges of parsed JSON objects (from these lines): with lists and numpy for the usual values (strings,
    whole numbers); a batch holding anything else goes through load_ledger's code row by row (which raises its
    first error)."""
    src = ctx.source_of
    wanted = ("type", "amount", *LEDGER_TOKEN_COLUMNS, *_IDS, *(_EXTRA if ctx.full else ()))
    keys = list(dict.fromkeys(src[c] for c in wanted))
    try:  # every object has every key: one call each, then columns
        columns = list(zip(*map(itemgetter(*keys), objs), strict=True)) if len(keys) > 1 else \
            [list(map(itemgetter(keys[0]), objs))]
    except KeyError:
        columns = [[o.get(k) for o in objs] for k in keys]
    if not objs:
        columns = [[] for _ in keys]
    at = {k: i for i, k in enumerate(keys)}

    def col(c: str) -> list[Any]:
        return list(columns[at[src[c]]])

    def scalar() -> _Charges | None:
        rows = []
        for line, o in zip(numbers, objs, strict=True):
            got = _scalar_row({c: o.get(src[c]) for c in LEDGER_COLUMNS}, f"line {line}", ctx)
            if got is not None:
                rows.append(got)
        return _from_rows(rows, ctx) if rows else None

    types = col("type")
    if not set(map(type, types)) <= {str, _NONE}:
        return scalar()
    kinds = ctx.kinds
    charge = np.ones(len(objs), bool) if kinds is None else \
        np.fromiter((t is None or t == "" or t in kinds for t in types), bool, len(objs))
    amounts = col("amount")
    if ctx.charge_if_amount:
        parse = charge | np.fromiter((a is not None and a != "" for a in amounts), bool, len(objs))
    else:
        parse = charge
    idx = np.flatnonzero(parse)
    vals = [amounts[i] for i in idx.tolist()]
    if not set(map(type, vals)) <= {str, int, float}:
        return scalar()
    try:
        dec = [Decimal(v) if v.__class__ is str else Decimal(str(v)) for v in vals]
    except (ArithmeticError, ValueError):
        return scalar()
    if not all(map(Decimal.is_finite, dec)):
        return scalar()
    scale = ctx.scale
    dec = [d * scale for d in dec]
    if ctx.charge_if_amount:
        keep_mask = charge[idx] | np.fromiter((d != 0 for d in dec), bool, len(dec))
        dec = [d for d, k in zip(dec, keep_mask.tolist(), strict=True) if k]
        idx = idx[keep_mask]
    n = len(idx)
    if not n:
        return None
    keep = idx.tolist()
    counts = {}
    for c in LEDGER_TOKEN_COLUMNS:
        cv = col(c)
        cv = [cv[i] for i in keep]
        if not set(map(type, cv)) <= {int, float, _NONE}:
            return scalar()
        try:
            arr = np.array([np.nan if v is None else v for v in cv], dtype=np.float64)
        except OverflowError:
            return scalar()
        bad = ~np.isnan(arr) & ((arr < 0) | ~np.isfinite(arr) | (arr != np.trunc(arr)))
        if bad.any():
            return scalar()
        counts[c] = arr

    def ids(c: str) -> np.ndarray:
        cv = col(c)
        return _encode(np.array(["" if cv[i] is None or cv[i] == "" else str(cv[i]) for i in keep], dtype=object))

    out = _Charges(ids("request_id"), ids("upstream_request_id"), ids("attempt_id"), ids("idempotency_key"),
                   _encode(np.array([str(d) for d in dec], dtype=object)), None,
                   np.array([float(d) for d in dec], dtype=np.float64), None, None, None, dec,
                   counts["input_tokens"], counts["output_tokens"], counts["cached_input_tokens"], counts["images"],
                   counts["cache_write_tokens"], np.full(n, 2, np.int8), np.full(n, 2, np.int8))
    if ctx.full:
        out.extra = {c: [col(c)[i] for i in keep] for c in _EXTRA}
        out.extra["_counts"] = [tuple(None if v != v else int(v) for v in t)  # type: ignore[misc]
                                for t in zip(*(counts[c].tolist() for c in LEDGER_TOKEN_COLUMNS), strict=True)]
    return out


def _fix_scaled(ch: _Charges) -> _Charges:
    """A batch whose amounts partly are final Decimals (load_ledger's code read them): all as final Decimals."""
    final = ch.final
    if not final:
        return ch
    dec = []
    for k in range(ch.n):
        d = Decimal(_decode(ch.txt[k]))
        dec.append(d if k in final or ch.scale is None else d * ch.scale)
    ch.dec, ch.scale, ch.c, ch.e, ch.simple, ch.final = dec, None, None, None, None, None
    ch.txt = _encode(np.array([str(d) for d in dec], dtype=object))
    return ch


class LedgerStream:
    """A billing ledger read in batches of charge rows: load_ledger's rows (same columns, mapping, Decimal amounts
    and counts) and its one-line errors, without holding the file (CSV and JSON Lines stream; a JSON list or a
    {"data": [...]} document is read whole, as load_ledger reads it)."""

    def __init__(self, source: str | Path, fmt: str | None = None, columns: dict[str, str] | None = None,
                 charge_type: str | list[str] | tuple[str, ...] | None = "charge", text: str | None = None, *,
                 default_columns: dict[str, str] | None = None, charge_if_amount: bool = False,
                 amount_scale: Decimal = Decimal(1), name: str | None = None, translate_newlines: bool | None = None,
                 path: str | Path | None = None) -> None:
        """The arguments of load_ledger (`path`: read this file but name it `name`, as a downloaded URL's)."""
        self.source = source
        self.name = name if name is not None else str(source)
        self.fmt = fmt
        self.columns = columns
        self.charge_type = charge_type
        self.text = text
        self.default_columns = default_columns
        self.charge_if_amount = charge_if_amount
        self.amount_scale = amount_scale
        self.path = Path(path) if path is not None else None
        self.translate = translate_newlines if translate_newlines is not None else (text is None and path is None)
        self.mode: str | None = None  # how it was read: csv, jsonl or whole
        self.folder: str | None = None  # a temporary folder this stream owns (a downloaded ledger's)

    def close(self) -> None:
        """Remove the temporary copy of a downloaded ledger, if any."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> LedgerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def size(self) -> int | None:
        """The ledger's size in bytes, when known."""
        if self.text is not None:
            return len(self.text)
        try:
            return os.path.getsize(self.path or self.source)
        except OSError:
            return None

    def frames(self) -> Iterator[pd.DataFrame]:
        """The charges, a frame of LEDGER_COLUMNS rows at a time."""
        done = 0
        try:
            for ch in self._batches(full=True):
                df = _frame_of(ch)
                done += len(df)
                yield df
        except _Unsupported:  # a NUL in an id: the rest as load_ledger reads the whole file
            yield self.load().iloc[done:]

    def load(self) -> pd.DataFrame:
        """The whole ledger as load_ledger gives it (for audit() on the whole input)."""
        kw = {"default_columns": self.default_columns, "charge_if_amount": self.charge_if_amount,
              "amount_scale": self.amount_scale}
        if self.path is not None:
            text = self.path.read_bytes().decode("utf-8", "surrogatepass")
            return load_ledger(self.name, self.fmt, self.columns, self.charge_type, text=text, **kw)
        return load_ledger(self.source, self.fmt, self.columns, self.charge_type, text=self.text, **kw)

    def _open(self) -> tuple[BinaryIO, str]:
        if self.text is not None:
            return io.BytesIO(self.text.encode("utf-8", "surrogatepass")), "surrogatepass"
        try:
            return open(self.path or self.source, "rb"), ("surrogatepass" if self.path is not None else "strict")
        except OSError as exc:
            raise InputError(f"{self.name}: cannot read the ledger: {getattr(exc, 'strerror', None) or exc}") from None

    def _batches(self, full: bool = False) -> Iterator[_Charges]:
        """The charges in batches (the audit's form)."""
        f, errors = self._open()
        try:
            src = _Bytes(f, self.name, self.translate, errors)
            yield from self._read(src, full)
        finally:
            f.close()

    def _read(self, src: _Bytes, full: bool) -> Iterator[_Charges]:
        name = self.name
        first, first_line = src.peek()
        fmt = self.fmt
        if fmt in (None, "auto"):
            fmt = "csv" if name.endswith(".csv") or (first not in "{[" and "," in first_line) else "jsonl"
        if fmt not in ("csv", "jsonl", "json"):
            src.decode_rest()
            raise InputError(f"{name}: ledger format: expected csv, jsonl or json, got {fmt!r}")
        mapping = {LEDGER_ALIASES.get(k, k): v for k, v in (self.columns or {}).items()}
        defaults = {LEDGER_ALIASES.get(k, k): v for k, v in (self.default_columns or {}).items()}
        for canon in [*mapping, *defaults]:
            if canon not in LEDGER_COLUMNS:
                src.decode_rest()
                raise InputError(f"{name}: ledger column mapping: unknown column {canon!r} "
                                 f"(known: {', '.join(LEDGER_COLUMNS)})")
        ct = self.charge_type
        kinds = None if ct is None else {str(ct)} if isinstance(ct, str) else {str(k) for k in ct}
        ctx = _Ctx(name, {}, kinds, self.charge_if_amount, self.amount_scale, full)
        if fmt == "csv":
            self.mode = "csv"
            yield from self._csv(src, mapping, defaults, ctx)
        elif fmt == "jsonl" and first not in "[" and (first != "{" or self._jsonl_certain(src)):
            self.mode = "jsonl"
            yield from self._jsonl(src, mapping, defaults, ctx)
        else:
            self.mode = "whole"
            df = self.load()
            for i in range(0, len(df), BATCH_ROWS):
                part = df.iloc[i:i + BATCH_ROWS]
                ch = _charges_from_frame(part)  # missing ids as the whole frame holds them
                if full:
                    ch.extra = {"_frame": part}  # type: ignore[dict-item]
                yield ch

    @staticmethod
    def _source_of(mapping: dict[str, str], defaults: dict[str, str], have: set[str]) -> dict[str, str]:
        out = {}
        for c in LEDGER_COLUMNS:
            default = defaults.get(c)
            if c in mapping:
                out[c] = mapping[c]
            elif default is not None and (default in have or c not in have):
                out[c] = default
            else:
                out[c] = c
        return out

    @staticmethod
    def _header_error(name: str, source_of: dict[str, str], mapping: dict[str, str], have: set[str]) -> InputError | None:
        if source_of["amount"] not in have:
            return InputError(f"{name}: the ledger has no column {source_of['amount']!r} (for amount)")
        for canon, src in mapping.items():
            if src not in have:
                return InputError(f"{name}: the ledger has no column {src!r} (mapped to {canon})")
        if not any(source_of[c] in have for c in LEDGER_JOIN_COLUMNS):
            return InputError(f"{name}: the ledger has none of the columns "
                              + ", ".join(f"{source_of[c]!r} (for {c})" for c in LEDGER_JOIN_COLUMNS)
                              + ": a charge needs one to join a call")
        return None

    def _csv(self, src: _Bytes, mapping: dict[str, str], defaults: dict[str, str], ctx: _Ctx) -> Iterator[_Charges]:
        reader = _CsvRows(src)
        header = reader.read_header()
        fields = list(header or [])
        have = set(fields)
        ctx.source_of = self._source_of(mapping, defaults, have)
        index = {name: i for i, name in enumerate(fields)}  # the last of equal names, as DictReader keeps it
        header_error = self._header_error(ctx.name, ctx.source_of, mapping, have)
        pieces = reader.pieces(len(fields) if header is not None else 0)
        for kind, piece in pieces:
            if header_error is not None:  # there are rows: after any parse or decoding error of the rest
                for _ in pieces:
                    pass
                raise header_error
            try:
                if kind == "fast":
                    ch = _fast_charges(*piece, index, fields, ctx)
                else:
                    rows = []
                    for where, row in piece:
                        d = _dict_row(fields, row)
                        got = _scalar_row({c: d.get(ctx.source_of[c]) for c in LEDGER_COLUMNS}, f"line {where}", ctx)
                        if got is not None:
                            rows.append(got)
                    ch = _from_rows(rows, ctx) if rows else None
            except InputError:
                for _ in pieces:  # a parse or decoding error further on comes first
                    pass
                raise
            if ch is not None and ch.n:
                yield ch

    def _jsonl_certain(self, src: _Bytes) -> bool:
        """Whether a text starting with "{" is JSON Lines for sure: its first line with content is a whole JSON
        value and more than JSON whitespace follows, so load_ledger's json.loads of the whole text fails (else it
        reads the text whole, as load_ledger does)."""
        pos = 0
        while True:  # the first line with more than JSON whitespace
            i = src.buf.find(b"\n", pos)
            if i < 0 and not src.eof:
                src._fill()
                continue
            end = len(src.buf) if i < 0 else i + 1
            line = src.buf[pos:end]
            if line.strip(b" \t\r\n"):
                break
            if i < 0:
                return False
            pos = end
        try:
            json.loads(src.decode(line, src.off + pos))
        except ValueError:
            return False
        pos = end
        while True:  # anything but JSON whitespace after it?
            if src.buf[pos:].strip(b" \t\r\n"):
                return True
            if src.eof:
                return False
            pos = len(src.buf)
            src._fill()

    def _json_lines(self, src: _Bytes, keys: set[str]) -> Iterator[tuple[Sequence[int], list[dict[str, Any]]]]:
        """(line numbers as load_ledger counts them (text.splitlines()), objects) a batch at a time; `keys`
        gathers every key."""
        n = 0
        loads = orjson.loads
        while (c := src.chunk()) is not None:
            buf, off = c
            plain = buf.isascii() and not any(b in buf for b in (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d",
                                                                   b"\x1e", b"\x1f"))
            if plain:
                lines: list[Any] = buf.split(b"\n")
                if buf.endswith(b"\n"):
                    lines.pop()
                try:  # every line an object: one pass (a blank or odd line: line by line below)
                    objs = list(map(loads, lines))
                    ok = set(map(type, objs)) <= {dict}
                except orjson.JSONDecodeError:
                    ok = False
                if ok:
                    keys.update(*objs)
                    for i in range(0, len(objs), BATCH_ROWS):
                        yield range(n + 1 + i, n + 1 + min(i + BATCH_ROWS, len(objs))), objs[i:i + BATCH_ROWS]
                    n += len(lines)
                    continue
            else:
                lines = src.decode(buf, off).splitlines()
            numbers: list[int] = []
            out: list[dict[str, Any]] = []
            for line in lines:
                n += 1
                if not line.strip():
                    continue
                try:
                    obj = loads(line)
                except orjson.JSONDecodeError:
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        src.decode_rest()
                        raise InputError(f"{src.name}: line {n}: not JSON") from None
                if not isinstance(obj, dict):
                    src.decode_rest()
                    raise InputError(f"{src.name}: line {n}: expected a JSON object")
                keys.update(obj)
                numbers.append(n)
                out.append(obj)
                if len(out) >= BATCH_ROWS:
                    yield numbers, out
                    numbers, out = [], []
            if out:
                yield numbers, out

    def _jsonl(self, src: _Bytes, mapping: dict[str, str], defaults: dict[str, str], ctx: _Ctx) -> Iterator[_Charges]:
        keys: set[str] = set()
        lines = self._json_lines(src, keys)
        first = next(lines, None)
        if first is None:
            return
        open_defaults = [c for c, d in defaults.items() if c not in mapping and d not in keys]
        have = keys
        if open_defaults:  # whether a default column applies depends on every row's keys: read them first
            f2, errors = self._open()
            with f2:
                have = set()
                for _ in self._json_lines(_Bytes(f2, self.name, self.translate, errors), have):
                    pass
        ctx.source_of = self._source_of(mapping, defaults, have)

        def finish(err: InputError | None) -> None:
            for _ in lines:  # the rest: parse and decoding errors come first, and every key counts
                pass
            header = self._header_error(ctx.name, ctx.source_of, mapping, keys)
            if header is not None:
                raise header
            if err is not None:
                raise err

        batch: tuple[Sequence[int], list[dict[str, Any]]] | None = first
        while batch is not None:
            try:
                ch = _json_charges(*batch, ctx)
            except InputError as exc:
                finish(exc)
                raise
            if ch is not None and ch.n:
                yield ch
            batch = next(lines, None)
        finish(None)


# ---------------------------------------------------------------------------------------------------------------
# the attempt records

_NA = (None, np.nan, pd.NA)  # what a missing text value is: codes 0, 1, 2


def _na_code(series: pd.Series) -> int | None:
    """The code of a text column's missing value (None for object columns, the dtype's own for str ones)."""
    dt = series.dtype
    if isinstance(dt, pd.StringDtype):
        na = dt.na_value
        return 1 if na is np.nan or (isinstance(na, float) and na != na) else 2
    return None


@dataclass
class _Block:
    """Attempt rows: what the vectorised audit reads, and (in `cols`) every field the per-call path reads."""

    g: np.ndarray  # int64 row number in the records
    hc: np.ndarray  # uint64 hash of the call id
    attempt: np.ndarray
    ok: np.ndarray
    dry: np.ndarray
    dri: np.ndarray
    rep: np.ndarray
    models: np.ndarray
    images: np.ndarray
    pair_t: np.ndarray
    est_t: np.ndarray
    vec: np.ndarray  # the row's numbers can be read as floats (else its call takes the per-call path)
    mcode: np.ndarray  # int32 model (-1: none)
    icode: np.ndarray  # int32 image price (-1: not an images row)
    u_in: np.ndarray
    u_out: np.ndarray
    u_cached: np.ndarray
    u_write: np.ndarray
    img: np.ndarray
    rid: np.ndarray  # S: the request id as a join id
    cid: np.ndarray  # call ids to compare (objects or S)
    cols: dict[str, tuple[Any, ...]]

    _ARRAYS = ("g", "hc", "attempt", "ok", "dry", "dri", "rep", "models", "images", "pair_t", "est_t", "vec",
               "mcode", "icode", "u_in", "u_out", "u_cached", "u_write", "img", "rid", "cid")

    def slice(self, a: int, b: int) -> _Block:
        """Rows a..b (views of this block's arrays; an array two fields share stays shared)."""
        memo: dict[int, np.ndarray] = {}

        def sl(x: np.ndarray) -> np.ndarray:
            got = memo.get(id(x))
            if got is None:
                got = memo[id(x)] = x[a:b]
            return got

        out = {k: sl(getattr(self, k)) for k in self._ARRAYS}
        cols = {}
        for name, col in self.cols.items():
            kind = col[0]
            if kind in ("a", "o", "k"):
                cols[name] = (kind, sl(col[1]), *col[2:])
            elif kind == "s":
                cols[name] = ("s", sl(col[1]), sl(col[2]), col[3])
            elif kind == "p":
                before = int(np.count_nonzero(col[1][:a]))
                present = col[1][a:b]
                cols[name] = ("p", present, col[2][before:before + int(np.count_nonzero(present))], col[3])
            elif kind == "x":
                cols[name] = ("x", col[1][a:b])
            elif kind == "z":
                cols[name] = ("z", b - a, col[2])
            else:
                cols[name] = col
        return _Block(**out, cols=cols)

    def take(self, idx: np.ndarray) -> _Block:
        """These rows only (an array two fields share stays shared)."""
        memo: dict[int, np.ndarray] = {}

        def tk(x: np.ndarray) -> np.ndarray:
            got = memo.get(id(x))
            if got is None:
                got = memo[id(x)] = x[idx]
            return got

        out = {k: tk(getattr(self, k)) for k in self._ARRAYS}
        cols = {}
        for name, col in self.cols.items():
            kind = col[0]
            if kind in ("a", "o"):
                cols[name] = (kind, tk(col[1]))
            elif kind == "x":
                cols[name] = ("x", col[1].take(idx))
            elif kind == "s":
                cols[name] = ("s", tk(col[1]), tk(col[2]), col[3])
            elif kind == "p":
                present = col[1][idx]
                pos = (np.cumsum(col[1]) - 1)[idx][present]
                cols[name] = ("p", present, col[2][pos], col[3])
            elif kind == "k":
                cols[name] = ("k", tk(col[1]), col[2])
            elif kind == "z":
                cols[name] = ("z", len(idx), col[2])
            else:
                cols[name] = col
        return _Block(**out, cols=cols)


def _values(block: _Block, name: str, idx: np.ndarray, cats: dict[str, list[Any]]) -> list[Any]:
    """A field's values at these rows, as the records' frame holds them."""
    col = block.cols[name]
    kind = col[0]
    if kind in ("a", "o"):
        return col[1][idx].tolist()
    if kind == "x":  # a column of the batch itself: its values as itertuples gives them
        return list(col[1].take(idx))
    if kind == "s":
        na = _NA[col[3]]
        return [_decode(b) if p else na for b, p in zip(col[1][idx].tolist(), col[2][idx].tolist(), strict=True)]
    if kind == "p":
        na = _NA[col[3]]
        pos = np.cumsum(col[1]) - 1
        return [_decode(col[2][pos[i]]) if col[1][i] else na for i in idx.tolist()]
    if kind == "k":
        values, na = cats[name], _NA[col[2]]
        return [values[c] if c >= 0 else na for c in col[1][idx].tolist()]
    if kind == "z":
        return [_NA[col[2]]] * len(idx)
    if kind == "cid":
        return _values(block, "call_id", idx, cats)
    return [col[1]] * len(idx)  # "const": a column the records lack (audit's getattr default)


class _RidTable:
    """The records' request ids (and the other ids of their responses) as sorted 64-bit hashes with the row each
    joins: for each hash, the winning row (a request_id before an id of `ids`, then audit's order), or ambiguous."""

    BUCKETS = 16

    def __init__(self) -> None:
        self.parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(self.BUCKETS)]
        self.table: tuple[np.ndarray, ...] | None = None
        self.n = 0

    def add(self, h: np.ndarray, g: np.ndarray, level: int) -> None:
        if not len(h):
            return
        b = (h >> np.uint64(60)).astype(np.uint8)
        lv = np.full(len(h), level, np.uint8)
        if len(g) and int(g[-1]) < 2 ** 32:  # row numbers in 4 bytes while they fit
            g = g.astype(np.uint32)
        o = np.argsort(b, kind="stable")  # a radix sort for one-byte keys
        cnt = np.bincount(b, minlength=self.BUCKETS)
        at = 0
        for k in range(self.BUCKETS):
            if cnt[k]:
                sel = o[at:at + cnt[k]]
                self.parts[k].append((h[sel], g[sel], lv[sel]))
                at += cnt[k]
        self.n += len(h)

    def build(self) -> None:
        """One sorted table (bucket after bucket: a bucket is the hash's top bits), filled in place."""
        total = sum(len(p[0]) for parts in self.parts for p in parts)
        wide = any(p[1].dtype != np.uint32 for parts in self.parts for p in parts)
        uh_all = np.empty(total, np.uint64)
        tg_all = np.empty(total, np.int64 if wide else np.uint32)
        tl_all = np.empty(total, np.uint8)
        amb_all = np.zeros(total, bool)
        at = 0
        for k in range(self.BUCKETS):
            parts = self.parts[k]
            self.parts[k] = []
            if not parts:
                continue
            h = np.concatenate([p[0] for p in parts])
            g = np.concatenate([p[1] for p in parts])
            lv = np.concatenate([p[2] for p in parts])
            del parts
            o = np.argsort(h)
            h, g, lv = h[o], g[o], lv[o]
            del o
            new = np.ones(len(h), bool)
            new[1:] = h[1:] != h[:-1]
            starts = np.flatnonzero(new)
            m = len(starts)
            uh, tg, tl = uh_all[at:at + m], tg_all[at:at + m], tl_all[at:at + m]
            amb = amb_all[at:at + m]
            uh[:], tg[:], tl[:] = h[starts], g[starts], lv[starts]
            size = np.diff(np.append(starts, len(h)))
            multi = np.flatnonzero(size > 1)
            if len(multi):  # several rows under one hash: the lowest level, then a single row, wins
                rows = np.flatnonzero(np.repeat(size > 1, size))
                grp = np.repeat(np.arange(len(starts)), size)[rows]
                sub = np.lexsort((g[rows], lv[rows], grp))
                rows, grp = rows[sub], grp[sub]
                first = np.ones(len(rows), bool)
                first[1:] = grp[1:] != grp[:-1]
                fpos = np.flatnonzero(first)
                fg = np.repeat(fpos, np.diff(np.append(fpos, len(rows))))
                lead_lv, lead_g = lv[rows[fg]], g[rows[fg]]
                clash = (lv[rows] == lead_lv) & (g[rows] != lead_g)
                gi = grp[fpos]
                tg[gi] = g[rows[fpos]]
                tl[gi] = lv[rows[fpos]]
                amb[np.unique(grp[clash])] = True
            at += m
        self.table = (uh_all[:at], tg_all[:at], tl_all[:at], amb_all[:at])

    def lookup(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(found, row, level, ambiguous) of each hash."""
        if self.table is None:
            self.build()
        uh, tg, tl, ta = self.table  # type: ignore[misc]
        n = len(q)
        found = np.zeros(n, bool)
        g = np.full(n, -1, np.int64)
        lv = np.zeros(n, np.uint8)
        amb = np.zeros(n, bool)
        if not len(uh) or not n:
            return found, g, lv, amb
        o = np.argsort(q)  # sorted queries: searchsorted walks the table once
        qs = q[o]
        i = np.minimum(np.searchsorted(uh, qs), len(uh) - 1)
        hit = uh[i] == qs
        s, i = o[hit], i[hit]
        found[s], g[s], lv[s], amb[s] = True, tg[i], tl[i], ta[i]
        return found, g, lv, amb


def _coalesce(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The record batches with only the audit's columns, small ones joined up."""
    held: list[pd.DataFrame] = []
    rows = 0
    for df in frames:
        if not len(df):
            continue
        missing = [c for c in AUDIT_COLUMNS if c not in df.columns and c not in _OPTIONAL and c != "run_id"]
        if missing:
            raise _Unsupported(f"the records have no column {missing[0]}")
        held.append(df[[c for c in AUDIT_COLUMNS if c in df.columns]])
        rows += len(df)
        if rows >= MIN_BLOCK:
            yield held[0] if len(held) == 1 else pd.concat(held, ignore_index=True)
            held, rows = [], 0
    if held:
        yield held[0] if len(held) == 1 else pd.concat(held, ignore_index=True)


def _floats(series: pd.Series) -> tuple[np.ndarray, bool]:
    """A numeric column as floats, and whether that is exactly what audit reads (else: the per-call path)."""
    if series.dtype.kind in "fiu":
        return series.to_numpy(dtype=np.float64, na_value=np.nan), series.dtype.kind == "f"
    return np.zeros(len(series)), False


# ---------------------------------------------------------------------------------------------------------------
# the audit

class _Sum:
    """The exact Decimal sum of every amount in ledger order, as audit's sum() makes it."""

    def __init__(self) -> None:
        self.total = Decimal(0)

    def add(self, ch: _Charges) -> None:
        if ch.dec is not None or ch.c is None or ch.simple is None or not ch.simple.all():
            self.total = sum(ch.amounts(), self.total)
            return
        t = self.total.as_tuple()
        tc = int("".join(map(str, t.digits))) * (-1 if t.sign else 1)
        te = int(t.exponent)
        c, e = ch.c, ch.e
        assert e is not None
        es = np.unique(e).tolist()
        emin = min([te, *es])
        total = tc * 10 ** (te - emin)
        bound = abs(tc) * 10 ** (te - emin)
        for u in es:
            cs = c[e == u]
            big = int(np.abs(cs).max(initial=0)) * len(cs) >= 2 ** 62
            s = sum(cs.tolist()) if big else int(cs.sum())
            a = sum(np.abs(cs).tolist()) if big else int(np.abs(cs).sum())
            total += s * 10 ** (u - emin)
            bound += a * 10 ** (u - emin)
        if bound < 10 ** 28:  # no partial sum has more digits than Decimal keeps: adding in any order is exact
            self.total = Decimal((0 if total >= 0 else 1, tuple(map(int, str(abs(total)))), emin))
        else:
            self.total = sum(ch.amounts(), self.total)


_VIA = ("request_id", "attempt_id", "idempotency_key")
_CH_KEYS = ("j", "g", "via", "chk", "rid", "up", "aid", "key", "txt", "scaled", "f", "tin", "tout", "tcached", "timg",
            "big", "na_rid", "na_key")


def _charge_rows(ch: _Charges, idx: np.ndarray, j: np.ndarray, g: np.ndarray, via: np.ndarray,
                 chk: np.ndarray) -> dict[str, np.ndarray]:
    """Charges bound for a partition, with the row and the way each joins."""
    big = np.zeros(len(idx), bool)
    for t in (ch.tin, ch.tout, ch.tcached, ch.timg):
        big |= np.abs(t[idx]) >= _BIG
    return {"j": j, "g": g, "via": via, "chk": chk, "rid": ch.rid[idx], "up": ch.up[idx], "aid": ch.aid[idx],
            "key": ch.key[idx], "txt": ch.txt[idx], "scaled": np.full(len(idx), ch.scale is not None),
            "f": ch.f[idx], "tin": ch.tin[idx], "tout": ch.tout[idx], "tcached": ch.tcached[idx],
            "timg": ch.timg[idx], "big": big, "na_rid": ch.na_rid[idx], "na_key": ch.na_key[idx]}


class _Store:
    """K partitions of attempt blocks and charge rows: lists in memory (K = 1) or temporary files."""

    def __init__(self, k: int, tmp_dir: str | None) -> None:
        self.k = k
        self.mem: list[list[list[Any]]] | None = None
        self.folder: str | None = None
        if k == 1:
            self.mem = [[[]], [[]]]
        else:
            self.folder = tempfile.mkdtemp(prefix="ttbench-billing-", dir=tmp_dir)
            self.files = [[open(os.path.join(self.folder, f"{kind}-{p}.pickle"), "wb") for p in range(k)]
                          for kind in ("att", "ch")]

    def put(self, kind: int, p: int, item: Any) -> None:
        if self.mem is not None:
            self.mem[kind][p].append(item)
        else:
            pickle.dump(item, self.files[kind][p], protocol=pickle.HIGHEST_PROTOCOL)

    def peek(self, kind: int, p: int) -> Iterator[Any]:
        """A partition's items, left in place."""
        if self.mem is not None:
            yield from self.mem[kind][p]
            return
        self.files[kind][p].flush()
        with open(self.files[kind][p].name, "rb") as r:
            while True:
                try:
                    yield pickle.load(r)
                except EOFError:
                    return

    def get(self, kind: int, p: int, keep: bool = False) -> list[Any]:
        """A partition's items, taken (the file removed unless `keep`)."""
        if self.mem is not None:
            out, self.mem[kind][p] = self.mem[kind][p], []
            return out
        f = self.files[kind][p]
        f.close()
        items = _load_items(f.name)
        if not keep:
            os.unlink(f.name)
        return items

    def finish(self) -> None:
        """Every file written out (another process reads them)."""
        if self.mem is None:
            for files in self.files:
                for f in files:
                    f.close()

    def close(self) -> None:
        if self.folder is not None:
            for files in self.files:
                for f in files:
                    f.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def _prefetch_main(argv: list[str]) -> None:
    """The helper process: read a ledger (a pickled LedgerStream, argv[0]) into framed batches (argv[1])."""
    global CHUNK_BYTES, BATCH_ROWS
    with open(argv[0], "rb") as f:
        spec = pickle.load(f)
    CHUNK_BYTES, BATCH_ROWS = spec["chunk"], spec["rows"]
    with open(argv[1], "ab", buffering=0) as out:
        def frame(kind: bytes, payload: bytes) -> None:
            out.write(kind + len(payload).to_bytes(8, "little") + payload)

        try:
            for ch in spec["stream"]._batches():
                frame(b"B", pickle.dumps(ch, protocol=pickle.HIGHEST_PROTOCOL))
            frame(b"D", b"")
        except InputError as exc:
            frame(b"E", str(exc).encode("utf-8", "surrogatepass"))
        except BaseException as exc:  # noqa: BLE001  (any other failure: the audit reads the ledger itself)
            frame(b"X", repr(exc).encode("utf-8", "replace"))


class _Prefetch:
    """A ledger file read by a helper process (the second CPU) while the records are read here; its batches come
    back through a temporary file. If the helper fails, the ledger is read here (from where it stopped)."""

    def __init__(self, stream: LedgerStream, tmp_dir: str | None) -> None:
        self.stream = stream
        self.folder = tempfile.mkdtemp(prefix="ttbench-ledger-", dir=tmp_dir)
        spec = os.path.join(self.folder, "spec.pickle")
        self.out = os.path.join(self.folder, "batches")
        with open(spec, "wb") as f:
            pickle.dump({"stream": stream, "chunk": CHUNK_BYTES, "rows": BATCH_ROWS}, f)
        open(self.out, "wb").close()
        self.proc = start_helper("billing_stream", "_prefetch_main", spec, self.out)

    def _read(self, f: BinaryIO, size: int) -> bytes | None:
        buf = b""
        while len(buf) < size:
            more = f.read(size - len(buf))
            if more:
                buf += more
                continue
            if self.proc is None or self.proc.poll() is not None:
                more = f.read(size - len(buf))
                if not more:
                    return None
                buf += more
                continue
            time.sleep(0.002)
        return buf

    def batches(self) -> Iterator[_Charges]:
        """The ledger's batches, as LedgerStream._batches() gives them."""
        done = 0
        if self.proc is not None:
            with open(self.out, "rb") as f:
                while True:
                    head = self._read(f, 9)
                    payload = self._read(f, int.from_bytes(head[1:], "little")) if head is not None else None
                    if head is None or payload is None or head[:1] == b"X":
                        break  # the helper failed: the rest is read here
                    if head[:1] == b"D":
                        return
                    if head[:1] == b"E":
                        raise InputError(payload.decode("utf-8", "surrogatepass"))
                    done += 1
                    yield pickle.loads(payload)
        for i, ch in enumerate(self.stream._batches()):
            if i >= done:
                yield ch

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


PARALLEL_ROWS = 2_000_000  # from this many records, a helper process audits some of the partitions
_WAIT_FOR_HELPER = False  # tests: the main process starts once the helper has taken a partition


def _load_items(path: str) -> list[Any]:
    items = []
    with open(path, "rb") as r:
        while True:
            try:
                items.append(pickle.load(r))
            except EOFError:
                return items


_STATE = ("prices", "policy", "tol", "rates", "img_price", "cats", "has_str", "scale", "salt", "k")


def _partitions_main(argv: list[str]) -> None:
    """The helper process: audit partitions from the last one down, while the main process goes up."""
    folder = argv[0]
    with open(os.path.join(folder, "state.pickle"), "rb") as f:
        state = pickle.load(f)
    run = _Run.__new__(_Run)
    for k, v in state.items():
        setattr(run, k, v)
    run.stats = {}
    run._t, run._c = time.perf_counter(), time.process_time()
    for p in reversed(range(run.k)):
        if not _claim(folder, p):
            return
        run.calls_found, run.pair_est, run.pair_charge = [], [], []
        run.n_calls = run.free = run.exact = 0
        try:
            blocks = _load_items(state["files"][0][p])
            if blocks:
                run._partition(blocks, _load_items(state["files"][1][p]))
            out: Any = {k: getattr(run, k) for k in ("calls_found", "n_calls", "free", "exact")}
            for k in ("pair_est", "pair_charge"):  # a pair key that is numpy's NaN must stay that very object
                out[k] = [(c, None if key is np.nan else key, v, key is np.nan) for c, key, v in getattr(run, k)]
        except _Collision:
            out = "collision"
        tmp = os.path.join(folder, f"result-{p}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, os.path.join(folder, f"result-{p}.pickle"))
        if out == "collision":
            return


class _PartHelper:
    """A helper process that audits partitions from the last one down (the second CPU); what it leaves, or fails
    to finish, the main process does."""

    def __init__(self, run: _Run) -> None:
        assert run.store is not None and run.store.folder is not None
        run.store.finish()
        self.run = run
        self.folder = tempfile.mkdtemp(prefix="ttbench-parts-", dir=run.tmp_dir)
        self.mine: list[int] = []
        state = {k: getattr(run, k) for k in _STATE}
        state["files"] = [[f.name for f in files] for files in run.store.files]
        with open(os.path.join(self.folder, "state.pickle"), "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc = start_helper("billing_stream", "_partitions_main", self.folder)

    def claim(self, p: int) -> bool:
        if _WAIT_FOR_HELPER and self.proc is not None and not self.mine:
            deadline = time.monotonic() + 60
            while (self.proc.poll() is None and time.monotonic() < deadline
                   and not os.path.exists(os.path.join(self.folder, f"claim-{self.run.k - 1}"))):
                time.sleep(0.01)
        if self.proc is None or _claim(self.folder, p):
            self.mine.append(p)
            return True
        return False

    def finish(self) -> None:
        """Wait for the helper, take its results; audit here what it did not finish."""
        if self.proc is not None:
            self.proc.wait()
        run = self.run
        assert run.store is not None
        for p in range(run.k):
            if p in self.mine:
                continue
            path = os.path.join(self.folder, f"result-{p}.pickle")
            try:
                with open(path, "rb") as f:
                    out = pickle.load(f)
            except Exception:  # noqa: BLE001  (not there: it is done here)
                out = None
            if out == "collision":
                raise _Collision()
            if out is None:
                blocks = run.store.get(0, p, keep=True)
                if blocks:
                    run._partition(blocks, run.store.get(1, p, keep=True))
            else:
                run.merge(out)
                run.stats["helper_partitions"] = run.stats.get("helper_partitions", 0) + 1

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


class _Run:
    """One audit over the batches (redone with another salt if two join ids' hashes collide)."""

    def __init__(self, attempt_batches: Callable[[], Iterable[pd.DataFrame]], ledger: Any, prices: PriceSheet,
                 policy: Policy, lost: set[int], partitions: int | None, tmp_dir: str | None, salt: int,
                 stats: dict[str, Any], prefetch: _Prefetch | None = None, workers: int | None = None) -> None:
        self.prefetch = prefetch
        self.workers = workers
        self.pending: dict[int, list[dict[str, np.ndarray]]] = {}
        self.attempt_batches = attempt_batches
        self.ledger = ledger
        self.prices = prices
        self.policy = policy
        self.lost = lost
        self.forced = partitions
        self.tmp_dir = tmp_dir
        self.salt = salt
        self.stats = stats
        self.store: _Store | None = None
        self.k = 1
        self.held: list[pd.DataFrame] | None = []  # the batches, while in memory
        self.rid_table = _RidTable()
        self.att_part: list[np.ndarray] = []
        self.n_att = 0
        self.run_id: Any = _DONE
        self.cats: dict[str, list[Any]] = {c: [] for c in _LOW_CARD}
        self.cat_codes: dict[str, dict[Any, int]] = {c: {} for c in _LOW_CARD}
        self.models: list[Any] = []
        self.model_codes: dict[Any, int] = {}
        self.img_keys: list[tuple[Any, Any, Any]] = []
        self.img_codes: dict[tuple[Any, Any, Any], int] = {}

    # --- pass 1 ---

    def _ledger_batches(self) -> Iterator[_Charges]:
        led = self.ledger
        if self.prefetch is not None:
            yield from self.prefetch.batches()
            return
        if isinstance(led, LedgerStream):
            yield from led._batches()
            return
        if isinstance(led, pd.DataFrame):
            frames: Iterable[pd.DataFrame] = [led]
        elif callable(led):
            frames = led()
        else:
            frames = led
        for df in frames:
            if len(df):
                yield _charges_from_frame(df)

    def _estimate(self) -> int | None:
        if isinstance(self.ledger, LedgerStream):
            size = self.ledger.size()
            return None if size is None else size // 100
        if isinstance(self.ledger, pd.DataFrame):
            return len(self.ledger)
        return None

    def _block(self, df: pd.DataFrame, g0: int, encode: bool) -> tuple[_Block, np.ndarray | None]:
        """A batch's rows as a block: the arrays the vectorised audit reads, and every field for the per-call
        path (kept as the batch's own arrays in memory, or encoded for a partition file)."""
        n = len(df)
        get = df.__getitem__
        cid_s = df["call_id"]
        if cid_s.dtype == object:
            if set(map(type, cid_s.to_numpy())) != {str}:
                raise _Unsupported("a call id that is not a string")
        elif not isinstance(cid_s.dtype, pd.StringDtype) or cid_s.isna().any():
            raise _Unsupported("a call id that is not a string")
        attempt = df["attempt"]
        if attempt.dtype.kind not in "iu":
            raise _Unsupported("an attempt number that is not an integer")
        g = np.arange(g0, g0 + n, dtype=np.int64)
        texts = {c: _texts(get(c)) for c in ("call_id", "request_id")}
        cid_b = texts["call_id"][0]
        hc = _hash_s(cid_b, self.salt)
        rid = texts["request_id"][0]  # b"" for a missing or empty id: the join ids
        present = np.flatnonzero(rid != _MISSING)
        self.rid_table.add(_hash_s(rid[present], self.salt), g[present], 1)
        if "ids" in df.columns:
            ids = get("ids").to_numpy(dtype=object)
            extra_v, extra_g = [], []
            for i in np.flatnonzero(pd.notna(ids)).tolist():
                d = ids[i]
                if isinstance(d, dict):
                    for v in d.values():
                        if isinstance(v, str) and v:
                            extra_v.append(v)
                            extra_g.append(g0 + i)
            if extra_v:
                self.rid_table.add(_hash_s(_encode(np.array(extra_v, dtype=object)), self.salt),
                                   np.array(extra_g, np.int64), 2)
        ep = get("endpoint")
        models = _equals(ep, "models")
        images = _equals(ep, "images")
        mcode = self._code(get("model"), self.model_codes, self.models)
        icode = np.full(n, -1, np.int32)
        if images.any():
            sel = np.flatnonzero(images)
            for i, m, sz, q in zip(sel.tolist(), *(list(get(c).array.take(sel)) for c in
                                                    ("model", "image_size", "image_quality")), strict=True):
                key = (m, sz or "auto", q or "auto")
                code = self.img_codes.get(key)
                if code is None:
                    code = self.img_codes[key] = len(self.img_keys)
                    self.img_keys.append(key)
                icode[i] = code
        vec = np.ones(n, bool)
        us = []
        for c in ("u_input", "u_output", "u_cached", "u_write", "images_returned"):
            arr, exact = _floats(get(c))
            us.append(arr)
            if not exact:
                vec[:] = False
        flags = {c: _series_truthy(get(c)) if c in df.columns else np.zeros(n, bool)
                 for c in ("ok", "dry_run", "replayed", "dry_run_ignored")}
        cols: dict[str, tuple[Any, ...]] = {}
        att_arr = attempt.to_numpy(dtype=np.int64)
        shared = {"attempt": att_arr, "u_input": us[0], "u_output": us[1], "u_cached": us[2], "u_write": us[3],
                  "images_returned": us[4], "ok": flags["ok"], "dry_run": flags["dry_run"],
                  "replayed": flags["replayed"], "dry_run_ignored": flags["dry_run_ignored"]}
        for c in _FIELDS:
            if c not in df.columns:
                cols[c] = ("const", _OPTIONAL[c])
                continue
            col = get(c)
            if col.dtype.kind in "biuf":
                same = shared.get(c)  # the very array the vectorised audit reads, when it holds the same values
                cols[c] = ("a", same if same is not None and same.dtype == col.dtype else col.to_numpy())
            elif not encode:
                cols[c] = ("x", col.array)  # objects made only for the rows the per-call path reads
            elif c == "idempotency_key" and col.dtype == cid_s.dtype and not col.isna().any() \
                    and bool((col == cid_s).all()):
                cols[c] = ("cid",)  # the harness's key is the call id
            else:
                cols[c] = self._text_codec(c, col, texts.get(c))
                if c in ("call_id", "request_id") and cols[c][0] == "s":  # the same bytes as the block's own
                    cols[c] = ("s", cid_b if c == "call_id" else rid, *cols[c][2:])
        blk = _Block(g, hc, att_arr, flags["ok"], flags["dry_run"], flags["dry_run_ignored"],
                     flags["replayed"], models, images, _series_truthy(get("pair_id")),
                     _series_truthy(get("est_amount")), vec, mcode, icode, *us, rid, cid_b, cols)
        part = (hc % np.uint64(self.k)).astype(np.int64) if encode else None
        return blk, part

    def _code(self, values: pd.Series, table: dict[Any, int], out: list[Any]) -> np.ndarray:
        """Codes of a low-cardinality column's values, the same across batches (-1: missing)."""
        codes, uniq = pd.factorize(values, use_na_sentinel=True)
        lut = np.empty(len(uniq) + 1, np.int32)
        lut[-1] = -1
        for i, v in enumerate(list(uniq)):
            code = table.get(v)
            if code is None:
                code = table[v] = len(out)
                out.append(v)
            lut[i] = code
        return lut[codes]

    def _text_codec(self, name: str, s: pd.Series, got: tuple[np.ndarray, np.ndarray] | None) -> tuple[Any, ...]:
        """A text column for a partition file: bytes and which are present ("s"; "p": only the present ones),
        codes ("k"), all missing ("z"), or the objects ("o": values that are not all strings)."""
        na = _na_code(s)
        if na is None:
            arr = s.to_numpy(dtype=object)
            types = set(map(type, arr))
            if types <= {type(None)}:
                return ("z", len(arr), 0)
            if not types <= {str, type(None)}:
                return ("o", arr)
            na = 0
        if name in _LOW_CARD:
            codes = self._code(s, self.cat_codes[name], self.cats[name])
            return ("k", codes, na) if (codes >= 0).any() else ("z", len(s), na)
        if got is None and na != 0 and s.isna().mean() > 0.5:  # mostly missing: the bytes of the others only
            is_str = ~s.isna().to_numpy()
            return ("p", is_str, _texts(s[is_str])[0], na) if is_str.any() else ("z", len(s), na)
        b, is_str = got if got is not None else _texts(s)
        if not is_str.any():
            return ("z", len(s), na)
        if is_str.mean() < 0.5:
            return ("p", is_str, b[is_str], na)
        return ("s", b, is_str, na)

    def pass1(self) -> None:
        est = self._estimate()
        if self.forced is not None:
            self.k = max(1, int(self.forced))
        elif est is not None and est > RAW_ROWS:
            self.k = max(2, math.ceil(est / PART_ROWS))
        encode = self.k > 1
        if encode:
            self.held = None
            self.store = _Store(self.k, self.tmp_dir)
        for df in _coalesce(self.attempt_batches()):
            if self.run_id is _DONE:
                self.run_id = str(df["run_id"].iloc[0]) if "run_id" in df.columns else None
            g0 = self.n_att
            self.n_att += len(df)
            if not encode:
                assert self.held is not None
                self.held.append(df)
                if self.forced is None and self.n_att > RAW_ROWS:  # more than memory should hold: partitions
                    self.k = max(2, math.ceil(max(self.n_att * 4, est or 0) / PART_ROWS))
                    encode = True
                    self.store = _Store(self.k, self.tmp_dir)
                    self.rid_table = _RidTable()
                    held, self.held, g = self.held, None, 0
                    for old in held:
                        self._put(old, g)
                        g += len(old)
                continue
            self._put(df, g0)
        if self.store is None:  # one partition in memory: its records as one frame, one block
            self.store = _Store(1, self.tmp_dir)
            assert self.held is not None
            if len(self.held) > 1:
                self.held = [pd.concat(self.held, ignore_index=True)]
            for df in self.held:
                blk, _ = self._block(df, 0, encode=False)
                self.store.put(0, 0, blk)
        self.rid_table.build()
        self.att_rows = np.concatenate(self.att_part) if self.att_part else np.zeros(0, np.int64)
        self.att_part = []
        self.stats.update(partitions=self.k, records=self.n_att)

    def _put(self, df: pd.DataFrame, g0: int) -> None:
        blk, part = self._block(df, g0, encode=True)
        assert part is not None and self.store is not None
        self.att_part.append(part.astype(np.uint16 if self.k < 65536 else np.int64))
        o = np.argsort(part.astype(np.uint16), kind="stable")
        ordered = blk.take(o)  # once, then a slice per partition
        cnt = np.bincount(part, minlength=self.k)
        at = 0
        for p in range(self.k):
            if cnt[p]:
                self.store.put(0, p, ordered.slice(at, at + cnt[p]))
                at += cnt[p]

    def _part_of(self, g: np.ndarray) -> np.ndarray:
        if self.k == 1:
            return np.zeros(len(g), np.int64)
        return self.att_rows[g].astype(np.int64)

    # --- the ledger ---

    def ledger_pass(self) -> None:
        total = _Sum()
        self.n_charges = 0
        self.has_str = [False, False]
        self.joined = dict.fromkeys(JOINS, 0)
        self.side: list[tuple[_Charges, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        need: dict[str, set[str]] = {"rid": set(), "aid": set(), "key": set()}
        assert self.store is not None
        for ch in self._ledger_batches():
            n = ch.n
            if not n:
                continue
            j = np.arange(self.n_charges, self.n_charges + n, dtype=np.int64)
            self.n_charges += n
            total.add(ch)
            glob = ch.na_rid == 2
            self.has_str[0] |= bool((ch.rid[glob] != _MISSING).any())
            glob = ch.na_key == 2
            self.has_str[1] |= bool((ch.key[glob] != _MISSING).any())
            if not self.n_att:
                continue
            # by request id: 0 none, 1 no record has it, 2 one row, 3 ambiguous
            st_r, g_r, lv_r = self._probe(ch.rid)
            st_u = np.zeros(n, np.int8)
            g_u = np.full(n, -1, np.int64)
            lv_u = np.zeros(n, np.uint8)
            rest = np.flatnonzero(st_r != 2)
            if len(rest):
                s, gg, lv = self._probe(ch.up[rest])
                st_u[rest], g_u[rest], lv_u[rest] = s, gg, lv
            by_r = st_r == 2
            by_u = (st_r <= 1) & (st_u == 2)
            main = np.flatnonzero(by_r | by_u)
            if len(main):
                g = np.where(by_r, g_r, g_u)[main]
                chk = np.where(by_r, lv_r, 2 + lv_u)[main].astype(np.int8)
                self.joined["request_id"] += len(main)
                self._route(ch, main, j[main], g, np.zeros(len(main), np.int8), chk)
            side = np.flatnonzero(~(by_r | by_u))
            if len(side):
                self.side.append((_subset(ch, side), np.arange(len(side)), j[side], st_r[side], st_u[side]))
                need["rid"].update(map(_decode, ch.rid[side[st_r[side] == 3]].tolist()))
                need["rid"].update(map(_decode, ch.up[side[st_u[side] >= 2]].tolist()))
                need["aid"].update(map(_decode, ch.aid[side[ch.aid[side] != _MISSING]].tolist()))
                need["key"].update(map(_decode, ch.key[side[ch.key[side] != _MISSING]].tolist()))
        self.total = total.total
        self.rid_table = _RidTable()  # done with: its memory goes
        self.need = need
        self.stats.update(charges=self.n_charges, side_charges=sum(len(s[1]) for s in self.side))

    def _probe(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(ids)
        st = np.zeros(n, np.int8)
        g = np.full(n, -1, np.int64)
        lv = np.zeros(n, np.uint8)
        present = np.flatnonzero(ids != _MISSING)
        if len(present):
            found, gg, ll, amb = self.rid_table.lookup(_hash_s(ids[present], self.salt))
            st[present] = np.where(found, np.where(amb, 3, 2), 1)
            g[present], lv[present] = gg, ll
        return st, g, lv

    def _route(self, ch: _Charges, idx: np.ndarray, j: np.ndarray, g: np.ndarray, via: np.ndarray,
               chk: np.ndarray) -> None:
        assert self.store is not None
        p = self._part_of(g)
        if self.k == 1:
            self.store.put(1, 0, _charge_rows(ch, idx, j, g, via, chk))
            return
        o = np.argsort(p.astype(np.uint16), kind="stable")
        rows = _charge_rows(ch, idx[o], j[o], g[o], via[o], chk[o])  # once, then a slice per partition
        cnt = np.bincount(p, minlength=self.k)
        at = 0
        for q in range(self.k):
            if cnt[q]:
                self._buffer(q, {k: v[at:at + cnt[q]] for k, v in rows.items()})
                at += cnt[q]

    def _buffer(self, q: int, rows: dict[str, np.ndarray]) -> None:
        """Charges for partition q, written a few thousand at a time (fewer, bigger writes)."""
        held = self.pending.setdefault(q, [])
        held.append(rows)
        if sum(len(r["j"]) for r in held) >= ROUTE_ROWS:
            self._flush(q)

    def _flush(self, q: int | None = None) -> None:
        assert self.store is not None
        for p in ([q] if q is not None else list(self.pending)):
            held = self.pending.pop(p, [])
            if held:
                self.store.put(1, p, {k: np.concatenate([r[k] for r in held]) for k in _CH_KEYS}
                               if len(held) > 1 else held[0])

    # --- the few charges that need the strings: pass 2 ---

    def resolve_side(self) -> None:
        self.unknown: list[tuple[int, dict[str, Any]]] = []
        self.lost_charges: dict[int, dict[str, Any]] = {}
        if not self.side:
            return
        need = self.need
        rid_best: dict[str, tuple[Any, ...]] = {}
        aid_best: dict[str, tuple[Any, ...]] = {}
        key_best: dict[str, tuple[Any, ...]] = {}
        cid_any: dict[str, int] = {}
        if any(len(v) for v in need.values()) and self.held is None:
            self._candidates_from_blocks(need, rid_best, aid_best, key_best, cid_any)
        elif any(len(v) for v in need.values()):
            self.stats["passes"] = 2
            g0 = 0

            def best(table: dict[str, tuple[Any, ...]], v: str, item: tuple[Any, ...]) -> None:
                old = table.get(v)
                if old is None or item < old:
                    table[v] = item

            sets: dict[int, pa.Array] = {}  # each wanted set as an Arrow array, made once
            for df in self.held:
                n = len(df)
                cid = df["call_id"]
                att = df["attempt"].to_numpy(dtype=np.int64)

                def hits(col: pd.Series, want: set[str], cid: pd.Series = cid) -> list[tuple[int, Any, Any]]:
                    idx = np.flatnonzero(_isin(col, want, sets))
                    return list(zip(idx.tolist(), col.array.take(idx), cid.array.take(idx), strict=True))

                if need["rid"]:
                    for i, v, c in hits(df["request_id"], need["rid"]):
                        best(rid_best, v, (1, c, int(att[i]), g0 + i))
                    if "ids" in df.columns:
                        ids = df["ids"].to_numpy(dtype=object)
                        for i in np.flatnonzero(pd.notna(ids)).tolist():
                            if isinstance(ids[i], dict):
                                for v in ids[i].values():
                                    if isinstance(v, str) and v in need["rid"]:
                                        best(rid_best, v, (2, cid.iloc[i], int(att[i]), g0 + i))
                if need["aid"]:
                    for i, v, c in hits(df["attempt_id"], need["aid"]):
                        best(aid_best, v, (c, int(att[i]), g0 + i))
                if need["key"]:
                    for i, v, c in hits(df["idempotency_key"], need["key"]):
                        best(key_best, v, (c, int(att[i]), g0 + i))
                    for i, v, _ in hits(cid, need["key"]):
                        cid_any.setdefault(v, g0 + i)
                g0 += n
        lost = self.lost
        run_id = self.run_id if self.run_id is not _DONE else None
        for ch, idx, j, st_r, st_u in self.side:
            rows: dict[str, list[int]] = {"idx": [], "j": [], "g": [], "via": []}
            for k, i in enumerate(idx.tolist()):
                rid = _decode(ch.rid[i]) if ch.rid[i] != _MISSING else None
                up = _decode(ch.up[i]) if ch.up[i] != _MISSING else None
                aid = _decode(ch.aid[i]) if ch.aid[i] != _MISSING else None
                key = _decode(ch.key[i]) if ch.key[i] != _MISSING else None
                hit = rid_best.get(rid) if rid and st_r[k] == 3 else None
                if hit is None and up and st_u[k] >= 2:
                    hit = rid_best.get(up)
                via = g = None
                if hit is not None:
                    via, g = 0, hit[3]
                elif aid and aid in aid_best:
                    via, g = 1, aid_best[aid][2]
                elif key and (key in key_best or key in cid_any):
                    via, g = 2, key_best[key][2] if key in key_best else cid_any[key]
                if via is not None:
                    self.joined[_VIA[via]] += 1
                    rows["idx"].append(i)
                    rows["j"].append(int(j[k]))
                    rows["g"].append(g)
                    rows["via"].append(via)
                    continue
                amount = ch.amounts([i])[0]
                w = _lost_worker(self._raw_key(ch, i), run_id, lost)
                if w is not None:
                    self.joined["lost_worker"] += 1
                    slot = self.lost_charges.setdefault(w, {"charges": 0, "amount": Decimal(0)})
                    slot["charges"] += 1
                    slot["amount"] += amount
                    continue
                self.unknown.append((int(j[k]), {"kind": "unknown_request", "request_id": self._raw_rid(ch, i),
                                                 "call_id": None, "idempotency_key": self._raw_key(ch, i),
                                                 "attempt_id": aid, "charged": amount, "expected": Decimal(0)}))
            if rows["idx"]:
                n = len(rows["idx"])
                self._route(ch, np.array(rows["idx"], np.int64), np.array(rows["j"], np.int64),
                            np.array(rows["g"], np.int64), np.array(rows["via"], np.int8), np.zeros(n, np.int8))
        self.side = []

    def _candidates_from_blocks(self, need: dict[str, set[str]], rid_best: dict[str, tuple[Any, ...]],
                                aid_best: dict[str, tuple[Any, ...]], key_best: dict[str, tuple[Any, ...]],
                                cid_any: dict[str, int]) -> None:
        """The rows whose ids the side charges probe, from the partitions' blocks (hashes, then the strings)."""
        assert self.store is not None
        want = {k: np.sort(_hash_s(_encode(np.array(sorted(v), dtype=object)), self.salt)) if v else None
                for k, v in need.items()}
        looks = {k: FirstLook(w) for k, w in want.items() if w is not None}

        def texts(blk: _Block, name: str) -> np.ndarray:
            col = blk.cols[name]
            n = len(blk.g)
            if col[0] == "s":
                return col[1]
            if col[0] == "p":
                out = np.zeros(n, col[2].dtype)
                out[col[1]] = col[2]
                return out
            if col[0] == "cid":
                return blk.cid
            if col[0] in ("o", "a"):
                return _join_texts(col[1].astype(object))
            if col[0] == "k":
                return _join_texts(np.array(_values(blk, name, np.arange(n), self.cats), dtype=object))
            return np.zeros(n, "S1")

        def hits(ids: np.ndarray, which: str) -> np.ndarray:
            w = want[which]
            present = np.flatnonzero(ids != _MISSING)
            if w is None or not len(present):
                return np.zeros(0, np.int64)
            h = _hash_s(ids[present], self.salt)
            maybe = np.flatnonzero(looks[which].maybe(h))  # rules out most rows at once
            h = h[maybe]
            i = np.minimum(np.searchsorted(w, h), len(w) - 1)
            return present[maybe[w[i] == h]]

        def best(table: dict[str, tuple[Any, ...]], v: str, item: tuple[Any, ...]) -> None:
            old = table.get(v)
            if old is None or item < old:
                table[v] = item

        for p in range(self.k):
            for blk in self.store.peek(0, p):
                def fields(idx: np.ndarray, name: str, blk: _Block = blk) -> list[Any]:
                    return _values(blk, name, idx, self.cats)

                if want["rid"] is not None:
                    idx = hits(blk.rid, "rid")
                    for i, v, c in zip(idx.tolist(), fields(idx, "request_id"), fields(idx, "call_id"), strict=True):
                        if v in need["rid"]:
                            best(rid_best, v, (1, c, int(blk.attempt[i]), int(blk.g[i])))
                    col = blk.cols.get("ids")
                    if col is not None and col[0] == "o":
                        for i in np.flatnonzero(pd.notna(col[1])).tolist():
                            d = col[1][i]
                            if isinstance(d, dict):
                                for v in d.values():
                                    if isinstance(v, str) and v in need["rid"]:
                                        c = _values(blk, "call_id", np.array([i]), self.cats)[0]
                                        best(rid_best, v, (2, c, int(blk.attempt[i]), int(blk.g[i])))
                if want["aid"] is not None:
                    idx = hits(texts(blk, "attempt_id"), "aid")
                    for i, v, c in zip(idx.tolist(), fields(idx, "attempt_id"), fields(idx, "call_id"), strict=True):
                        if v in need["aid"]:
                            best(aid_best, v, (c, int(blk.attempt[i]), int(blk.g[i])))
                if want["key"] is not None:
                    idx = hits(texts(blk, "idempotency_key"), "key")
                    for i, v, c in zip(idx.tolist(), fields(idx, "idempotency_key"), fields(idx, "call_id"),
                                       strict=True):
                        if v in need["key"]:
                            best(key_best, v, (c, int(blk.attempt[i]), int(blk.g[i])))
                    idx = hits(blk.cid, "key")
                    for i, c in zip(idx.tolist(), fields(idx, "call_id"), strict=True):
                        if c in need["key"]:
                            cid_any.setdefault(c, int(blk.g[i]))

    def _marker(self, code: int, which: int) -> Any:
        if code == 2:
            return np.nan if self.has_str[which] else None
        return _NA[code] if code < 3 else ""

    def _raw_rid(self, ch: _Charges, i: int) -> Any:
        b = ch.rid[i]
        return _decode(b) if b != _MISSING else self._marker(int(ch.na_rid[i]), 0)

    def _raw_key(self, ch: _Charges, i: int) -> Any:
        b = ch.key[i]
        return _decode(b) if b != _MISSING else self._marker(int(ch.na_key[i]), 1)

    # --- per partition ---

    def _rates(self) -> tuple[np.ndarray, np.ndarray]:
        """Per model code: token rates (input, cached, write, output; per token); per image code: the price (the
        last entry, for code -1: none)."""
        rates = np.zeros((len(self.models) + 1, 4))
        for code, m in enumerate(self.models):
            price = self.prices.models.get(m) if isinstance(m, str) else None
            if price is not None:
                cached = price.cached_input if price.cached_input is not None else price.input
                write = price.cache_write if price.cache_write is not None else price.input
                rates[code] = [float(price.input), float(cached), float(write), float(price.output)]
        rates /= 1e6
        img = np.zeros(len(self.img_keys) + 1)
        for code, (m, size, quality) in enumerate(self.img_keys):
            price = self.prices.models.get(m) if isinstance(m, str) else None
            if price is not None:
                img[code] = float(price.image_price(size, quality))
        return rates, img

    def partitions(self) -> None:
        self._flush()
        self.att_rows = np.zeros(0, np.uint16)  # every charge is routed
        self.calls_found: list[tuple[str, list[dict[str, Any]], bool]] = []
        self.pair_est: list[tuple[str, Any, Decimal]] = []
        self.pair_charge: list[tuple[str, Any, Decimal]] = []
        self.n_calls = self.free = self.exact = 0
        self.rates, self.img_price = self._rates()
        pol = self.policy
        try:
            self.tol = (float(pol.abs_tolerance), float(pol.rel_tolerance))
            if not (self.tol[0] >= 0 and self.tol[1] >= 0 and math.isfinite(sum(self.tol))):
                self.tol = None
        except (OverflowError, ValueError):
            self.tol = None
        assert self.store is not None
        helper = _PartHelper(self) if self.k > 1 and self.workers != 1 and (
            self.workers is not None or (cpus() >= 2 and self.n_att >= PARALLEL_ROWS)) else None
        self.stats.update(partition_helper=helper is not None)
        try:
            for p in range(self.k):
                if helper is not None and not helper.claim(p):
                    continue
                blocks = self.store.get(0, p, keep=helper is not None)
                charges = self.store.get(1, p, keep=helper is not None)
                if blocks:
                    self._partition(blocks, charges)
            if helper is not None:
                helper.finish()
        finally:
            if helper is not None:
                helper.close()
        self.stats.update(exact_calls=self.exact)

    def merge(self, other: dict[str, Any]) -> None:
        """What another process found in its partitions."""
        self.calls_found.extend(other["calls_found"])
        self.pair_est.extend((c, np.nan if nan else key, v) for c, key, v, nan in other["pair_est"])
        self.pair_charge.extend((c, np.nan if nan else key, v) for c, key, v, nan in other["pair_charge"])
        self.n_calls += other["n_calls"]
        self.free += other["free"]
        self.exact += other["exact"]

    def _partition(self, blocks: list[_Block], charges: list[dict[str, np.ndarray]]) -> None:
        trim.release()  # the last partition's arrays
        self._lap("partitions")
        A = {name: getattr(blocks[0], name) if len(blocks) == 1 else np.concatenate([getattr(b, name) for b in blocks])
             for name in _Block._ARRAYS}
        offsets = np.cumsum([0] + [len(b.g) for b in blocks])
        n = len(A["g"])
        # calls in the order they first appear (their hashes, checked against the call ids themselves)
        codes = pd.factorize(A["hc"])[0]
        seen = np.maximum.accumulate(codes)
        first = np.flatnonzero(np.r_[True, codes[1:] > seen[:-1]])
        if not (A["cid"][first[codes]] == A["cid"]).all():  # two call ids with one hash
            codes = pd.factorize(A["cid"].astype(object))[0]
            seen = np.maximum.accumulate(codes)
            first = np.flatnonzero(np.r_[True, codes[1:] > seen[:-1]])
        ncall = len(first)
        size = np.bincount(codes, minlength=ncall)
        f = np.zeros(ncall, np.int64)  # each call's final attempt: the last by (attempt, row)
        np.maximum.at(f, codes, np.arange(n))
        multi = np.flatnonzero(size > 1)
        if len(multi):
            top = np.full(ncall, np.iinfo(np.int64).min)
            np.maximum.at(top, codes, A["attempt"])
            odd = multi[A["attempt"][f[multi]] != top[multi]]
            if len(odd):  # a later row with a lower attempt number
                rows = np.flatnonzero(np.isin(codes, odd))
                o = rows[np.lexsort((A["g"][rows], A["attempt"][rows], codes[rows]))]
                for c in odd.tolist():
                    f[c] = o[codes[o] == c][-1]
        self.n_calls += ncall
        self._lap("p_group")
        if charges:
            C = {k: np.concatenate([c[k] for c in charges]) if len(charges) > 1 else charges[0][k] for k in _CH_KEYS}
        else:
            C = {k: np.zeros(0, np.int64) for k in _CH_KEYS}
            for k in ("rid", "up", "aid", "key", "txt"):
                C[k] = np.zeros(0, "S1")
        row = np.searchsorted(A["g"], C["g"])
        if len(row) and not (A["g"][np.minimum(row, n - 1)] == C["g"]).all():
            raise AssertionError("a charge routed to the wrong partition")
        ci = codes[row]
        self._lap("p_charges")
        nch = np.bincount(ci, minlength=ncall)
        one = np.full(ncall, -1, np.int64)
        one[ci] = np.arange(len(ci))
        ok_f, models_f, dry_f = A["ok"][f], A["models"][f], A["dry"][f] & ~A["dri"][f]
        self.free += int(models_f.sum())
        common = np.zeros(ncall, bool)
        verified = np.zeros(len(ci), bool)
        cand = np.flatnonzero((nch == 1) & ok_f & ~models_f & ~dry_f & A["vec"][f])
        if len(cand) and self.tol is not None:
            common[cand], match = self._common(blocks, offsets, A, C, f[cand], one[cand])
            cc = one[cand]
            verified[cc] = match & (C["chk"][cc] == 1) & (row[cc] == f[cand])  # its id is the final row's
        self._verify(blocks, offsets, A, C, row, ~verified)
        pt = np.flatnonzero(common & A["pair_t"][f])
        if len(pt):  # the pair charge of a common call: its one charge's amount
            rows_ = self._rows(blocks, offsets, f[pt])
            amts = self._amounts(C, one[pt])
            for r, a in zip(rows_, amts, strict=True):
                self.pair_charge.append((r.call_id, r.pair_id, a))
        self._lap("p_common")
        need = ~common & ((nch > 0) | (ok_f & ~models_f & ~dry_f) | (~models_f & dry_f & A["pair_t"][f] & A["est_t"][f]))
        calls = np.flatnonzero(need)
        if not len(calls):
            return
        self.exact += len(calls)
        rows_idx = np.flatnonzero(need[codes])
        rows_idx = rows_idx[np.lexsort((A["g"][rows_idx], A["attempt"][rows_idx], codes[rows_idx]))]
        objs = self._rows(blocks, offsets, rows_idx)
        by_row = dict(zip(rows_idx.tolist(), objs, strict=True))
        sizes = size[calls]
        csel = np.flatnonzero(need[ci])
        csel = csel[np.lexsort((C["j"][csel], ci[csel]))]
        ccall = ci[csel]
        cstart = np.searchsorted(ccall, calls)
        cend = np.searchsorted(ccall, calls, side="right")
        at = 0
        prices, policy = self.prices, self.policy
        for k in range(len(calls)):
            atts = objs[at:at + sizes[k]]
            at += sizes[k]
            call_id = atts[-1].call_id
            mine = []
            for c in csel[cstart[k]:cend[k]].tolist():
                via = int(C["via"][c])
                a = by_row[int(row[c])] if via < 2 else None
                mine.append(_Charge(self._charge_row(C, c), call_id, a, _VIA[via]))
            found, est, charge, is_models = audit_call(call_id, atts, mine, prices, policy)
            if found:
                self.calls_found.append((call_id, found, is_models))
            if est is not None:
                self.pair_est.append((call_id, *est))
            if charge is not None:
                self.pair_charge.append((call_id, *charge))
        self._lap("p_exact")

    def _verify(self, blocks: list[_Block], offsets: np.ndarray, A: dict[str, np.ndarray], C: dict[str, np.ndarray],
                row: np.ndarray, todo: np.ndarray) -> None:
        """A charge joined by the hash of its request id has that id (else two ids collided: redo)."""
        chk = np.where(todo, C["chk"], 0)
        for code, probe in ((1, "rid"), (3, "up")):
            sel = np.flatnonzero(chk == code)
            if len(sel) and not (C[probe][sel] == A["rid"][row[sel]]).all():
                raise _Collision()
        for code, probe in ((2, "rid"), (4, "up")):
            sel = np.flatnonzero(chk == code)
            for c, ids in zip(sel.tolist(), self._field(blocks, offsets, row[sel], "ids"), strict=True):
                want = _decode(C[probe][c])
                if not (isinstance(ids, dict) and any(v == want for v in ids.values() if isinstance(v, str))):
                    raise _Collision()

    def _common(self, blocks: list[_Block], offsets: np.ndarray, A: dict[str, np.ndarray], C: dict[str, np.ndarray],
                fr: np.ndarray, cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """_common_part, a slice at a time."""
        ok = np.zeros(len(fr), bool)
        same = np.zeros(len(fr), bool)
        for i in range(0, len(fr), _COMMON_ROWS):
            sl = slice(i, i + _COMMON_ROWS)
            ok[sl], same[sl] = self._common_part(blocks, offsets, A, C, fr[sl], cc[sl])
        return ok, same

    def _common_part(self, blocks: list[_Block], offsets: np.ndarray, A: dict[str, np.ndarray],
                     C: dict[str, np.ndarray], fr: np.ndarray, cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which of these successful calls with one charge are correct for sure (the rest: the per-call path), and
        which charges have the final attempt's request id."""
        rid_c = C["rid"][cc]
        rep = A["rep"][fr]
        match = ~rep & (rid_c != _MISSING) & (rid_c == A["rid"][fr])
        same = match.copy()
        reps = np.flatnonzero(rep)  # a replay's billing id is the original request's
        for k, orig in zip(reps.tolist(), self._field(blocks, offsets, fr[reps], "original_request_id"), strict=True):
            match[k] = isinstance(orig, str) and rid_c[k] != _MISSING and _decode(rid_c[k]) == orig
        def whole(u: np.ndarray) -> np.ndarray:
            t = np.trunc(u)
            t[np.isnan(u)] = 0.0
            return t

        ui, uo, uc, uw, ni = (whole(A[k][fr]) for k in ("u_in", "u_out", "u_cached", "u_write", "img"))
        ok = match & ~C["big"][cc]
        for u in (ui, uo, uc, uw, ni):
            ok &= (u >= 0) & (u < _BIG)
        img = A["images"][fr]
        tin, tout, tc, timg = C["tin"][cc], C["tout"][cc], C["tcached"][cc], C["timg"][cc]
        bad_tok = ((~np.isnan(tin) & (tin != ui)) | (~np.isnan(tout) & (tout != uo))
                   | (~np.isnan(tc) & (tc != uc)))
        bad_img = ~np.isnan(timg) & (timg != ni)
        ok &= ~np.where(img, bad_img, bad_tok)
        r = self.rates[A["mcode"][fr]]
        plain = np.maximum(0.0, ui - uc - uw)
        e_tok = plain * r[:, 0] + uc * r[:, 1] + uw * r[:, 2] + uo * r[:, 3]
        e_img = ni * self.img_price[A["icode"][fr]]
        e = np.where(img, e_img, e_tok)
        a = C["f"][cc]
        assert self.tol is not None
        abs_t, rel_t = self.tol
        big = np.maximum(np.abs(a), np.abs(e))
        tol = np.maximum(abs_t, rel_t * big)
        slack = 1e-12 * (np.abs(a) + np.abs(e)) + 1e-300
        return ok & (np.abs(a - e) + slack < tol * (1 - 1e-12)), same

    def _field(self, blocks: list[_Block], offsets: np.ndarray, rows: np.ndarray, name: str) -> list[Any]:
        """A field's values at these partition rows, read block by block (a take per row from a column of many
        Arrow chunks would read the whole column each time)."""
        out: list[Any] = [None] * len(rows)
        b_of = np.searchsorted(offsets, rows, side="right") - 1
        for b in np.unique(b_of).tolist():
            sel = np.flatnonzero(b_of == b)
            for k, v in zip(sel.tolist(), _values(blocks[b], name, rows[sel] - offsets[b], self.cats), strict=True):
                out[k] = v
        return out

    def _rows(self, blocks: list[_Block], offsets: np.ndarray, rows: np.ndarray) -> list[Any]:
        """The attempt rows (audit's itertuples values) at these partition rows."""
        fields = [self._field(blocks, offsets, rows, name) for name in _FIELDS]
        return [_AttRow(*vals) for vals in zip(*fields, strict=True)]

    def _amounts(self, C: dict[str, np.ndarray], idx: np.ndarray) -> list[Decimal]:
        out = []
        scale = self.scale
        for i in idx.tolist():
            d = Decimal(_decode(C["txt"][i]))
            out.append(d * scale if C["scaled"][i] else d)
        return out

    def _charge_row(self, C: dict[str, np.ndarray], i: int) -> Any:
        def text(k: str) -> str | None:
            b = C[k][i]
            return _decode(b) if b != _MISSING else None

        def count(k: str) -> int | None:
            v = C[k][i]
            return None if v != v else int(v)

        rid = text("rid")
        key = text("key")
        return _ChargeRow(rid if rid is not None else self._marker(int(C["na_rid"][i]), 0),
                          key if key is not None else self._marker(int(C["na_key"][i]), 1),
                          text("aid"), text("up"), self._amounts(C, np.array([i]))[0], count("tin"), count("tout"),
                          count("tcached"), count("timg"))

    # --- together ---

    def result(self) -> dict[str, Any]:
        policy = self.policy
        joined = self.joined
        self.unknown.sort(key=lambda t: t[0])
        findings = [f for _, f in self.unknown]
        self.calls_found.sort(key=lambda t: t[0])
        bad = bad_models = 0
        for _, fs, is_models in self.calls_found:
            findings.extend(fs)
            bad += 1
            bad_models += is_models
        over = Decimal(0)
        under = Decimal(0)
        for fd in findings:
            if fd["kind"] == "unknown_request":
                continue
            if fd["charged"] > fd["expected"]:
                over += fd["charged"] - fd["expected"]
            else:
                under += fd["expected"] - fd["charged"]
        n_calls = self.n_calls - self.free + bad_models
        counts = dict.fromkeys(FINDING_KINDS, 0)
        for fd in findings:
            counts[fd["kind"]] += 1
        pair_est: dict[Any, Decimal] = {}
        for _, p, v in sorted(self.pair_est, key=lambda t: t[0]):
            pair_est[p] = v
        pair_charge: dict[Any, Decimal] = {}
        for _, p, v in sorted(self.pair_charge, key=lambda t: t[0]):
            pair_charge[p] = v
        ratios = [float(pair_est[p] / pair_charge[p]) for p in pair_est if p in pair_charge and pair_charge[p] > 0]
        return {
            "calls": n_calls,
            "correct_calls": n_calls - bad,
            "accuracy": (n_calls - bad) / n_calls if n_calls else None,
            "charges": int(self.n_charges),
            "charges_joined": sum(joined.values()),
            "joins": joined,
            "charged_total": str(self.total) if self.n_charges else "0",
            "overcharged": str(over + sum((f["charged"] for f in findings if f["kind"] == "unknown_request"),
                                          Decimal(0))),
            "undercharged": str(under),
            "currency": self.prices.currency,
            "counts": counts,
            "findings": [{**f, "charged": str(f["charged"]), "expected": str(f["expected"])} for f in findings],
            "dry_run_pairs": {"pairs": len(ratios), "hold_covers_share": (sum(1 for r in ratios if r >= 1)
                                                                          / len(ratios)) if ratios else None,
                              "estimate_to_charge_ratio": ratios},
            "lost_worker_charges": {str(w): {"charges": v["charges"], "amount": str(v["amount"])}
                                    for w, v in sorted(self.lost_charges.items())},
            "policy": {"bill_failed": policy.bill_failed, "bill_dry_runs": policy.bill_dry_runs,
                       "bill_replays": policy.bill_replays, "abs_tolerance": str(policy.abs_tolerance),
                       "rel_tolerance": str(policy.rel_tolerance)},
        }

    def _lap(self, name: str) -> None:
        """Time spent since the last lap: wall clock (`name`_s) and this process's CPU (`name`_cpu)."""
        now, cpu = time.perf_counter(), time.process_time()
        self.stats[f"{name}_s"] = self.stats.get(f"{name}_s", 0.0) + now - self._t
        self.stats[f"{name}_cpu"] = self.stats.get(f"{name}_cpu", 0.0) + cpu - self._c
        self._t, self._c = now, cpu
        rss = _rss()
        if rss is not None:
            self.stats["rss_max_mb"] = max(self.stats.get("rss_max_mb", 0), rss)
            self.stats[f"{name}_rss_mb"] = max(self.stats.get(f"{name}_rss_mb", 0), rss)

    def run(self) -> dict[str, Any]:
        self._t, self._c = time.perf_counter(), time.process_time()
        self.pass1()
        trim.release()
        self._lap("records")
        if isinstance(self.ledger, LedgerStream):
            self.scale = self.ledger.amount_scale
        else:
            self.scale = Decimal(1)
        if not self.n_att:
            n = sum(ch.n for ch in self._ledger_batches())
            return {"calls": 0, "accuracy": None, "findings": [], "counts": dict.fromkeys(FINDING_KINDS, 0),
                    "charges": int(n), "charges_joined": 0, "joins": dict.fromkeys(JOINS, 0)}
        self.ledger_pass()
        trim.release()
        self._lap("ledger")
        self.resolve_side()
        self._lap("side")
        self.partitions()
        self._lap("partitions")
        out = self.result()
        self._lap("result")
        return out

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _whole(attempt_batches: Callable[[], Iterable[pd.DataFrame]], ledger: Any, prices: PriceSheet, policy: Policy,
           lost: set[int]) -> dict[str, Any]:
    """audit() on the whole input (for input the partitioned audit cannot take exactly)."""
    frames = [df for df in attempt_batches() if len(df)]
    att = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if isinstance(ledger, LedgerStream):
        charges = ledger.load()
    elif isinstance(ledger, pd.DataFrame):
        charges = ledger
    else:
        parts = list(ledger() if callable(ledger) else ledger)
        charges = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=LEDGER_COLUMNS)
    return audit(att, charges, prices, policy, lost)


def audit_batches(attempt_batches: Callable[[], Iterable[pd.DataFrame]],
                  ledger: LedgerStream | pd.DataFrame | Callable[[], Iterable[pd.DataFrame]] | Iterable[pd.DataFrame],
                  prices: PriceSheet, policy: Policy | None = None, lost_workers: set[int] | None = None, *,
                  partitions: int | None = None, tmp_dir: str | None = None, workers: int | None = None,
                  stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """audit()'s result for the records of `attempt_batches()` (frames in file order, with AUDIT_COLUMNS; it may be
    called twice) and a ledger (a LedgerStream, a frame, or frames of canonical rows), with bounded memory.

    `partitions` fixes K (1: all in memory); `workers` the processes (None: a helper reads a big ledger file on a
    second CPU; 1: none; 2: always); `stats` is filled with how the audit ran."""
    policy = policy or Policy()
    lost = lost_workers or set()
    stats = stats if stats is not None else {}
    prefetch = None
    if isinstance(ledger, LedgerStream) and ledger.text is None and (workers or cpus()) >= 2 and \
            (workers is not None or (ledger.size() or 0) >= PREFETCH_BYTES):
        prefetch = _Prefetch(ledger, tmp_dir)
    stats.update(prefetch=prefetch is not None)
    salt = _SALT
    try:
        for attempt in range(3):
            run = _Run(attempt_batches, ledger, prices, policy, lost, partitions, tmp_dir, salt, stats, prefetch,
                       workers)
            stats.update(mode="partitioned", passes=1, salt_retries=attempt)
            try:
                return run.run()
            except _Collision:
                salt = (salt * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
            except _Unsupported as exc:
                stats.update(mode="whole", reason=str(exc))
                break
            finally:
                run.close()
        else:
            stats.update(mode="whole", reason="hash collisions")
    finally:
        if prefetch is not None:
            prefetch.close()
    return _whole(attempt_batches, ledger, prices, policy, lost)


def _rss() -> int | None:
    """This process's resident memory now, in MiB (Linux)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# the ledger of a run (settings.read_ledger, streaming)

def _download(url: str, headers: dict[str, str], folder: str) -> tuple[str, str]:
    """A ledger URL's body, as httpx's response.text decodes it, into a UTF-8 file: (its path, content type)."""
    import httpx

    from .settings import redact_url

    shown = redact_url(url)
    path = os.path.join(folder, "ledger.download")
    try:
        with httpx.stream("GET", url, headers=headers, timeout=30) as resp:
            if resp.status_code != 200:
                hint = " (check --ledger-header / --ledger-token)" if resp.status_code in (401, 403) else ""
                raise InputError(f"{shown}: cannot fetch the ledger: HTTP {resp.status_code}{hint}")
            with open(path, "w", encoding="utf-8", errors="surrogatepass", newline="") as out:
                for text in resp.iter_text():
                    out.write(text)
            ctype = resp.headers.get("content-type", "")
    except httpx.HTTPError as exc:
        raise InputError(f"{shown}: cannot fetch the ledger: {type(exc).__name__}") from None
    return path, ctype


def read_ledger_stream(run_dir: Path, s: Any, token: str | None, warnings: list[str],
                       tmp_dir: str | None = None) -> tuple[LedgerStream | None, Any]:
    """settings.read_ledger, as a LedgerStream (a URL is downloaded to a temporary file first, streamed; close()
    the stream to remove it): the charges and the settings they are read with; None when there is no ledger."""
    from .settings import ledger_headers, ledger_source, redact_url

    src, s, kw = ledger_source(run_dir, s, warnings)
    if src is None:
        return None, s
    if src.startswith(("http://", "https://")):
        folder = tempfile.mkdtemp(prefix="ttbench-ledger-", dir=tmp_dir)
        try:
            path, ctype = _download(src, ledger_headers(s, token), folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        fmt = s.fmt or ("csv" if "csv" in ctype else None)
        stream = LedgerStream(redact_url(src), fmt, s.columns, s.charge_type, path=path, **kw)
        stream.folder = folder  # removed by stream.close()
        return stream, s
    return LedgerStream(src, s.fmt, s.columns, s.charge_type, **kw), s
