"""A columnar copy of a run's attempt records, read a batch of rows at a time.

The copy is the folder `records.parquet/` next to `records.jsonl`: Parquet part files (`part-00000.parquet`, ...
in the order of the lines they hold) and `_meta.json`. Its rows and values are exactly those `load_records`
gives for the same file (the same parser does the reading: records.py's `_Reader`, part by part), except that the
chunk times are stored decoded: instead of the base64 `chunks_us` text, `chunk_us` holds each record's uint32
microsecond deltas (binary: their little-endian bytes). `_meta.json` says which file the copy was made from (its
size, mtime_ns and a hash of its first and last 64 KiB), the copy's format version and a hash of the code that
made it, the rows of each part, the dtype every column is read back as, and what loading noticed (torn and bad
lines, warnings).

`records.jsonl` stays the source: `ensure` reuses the copy while `_meta.json` matches the file (size, mtime_ns,
the two hashes, the format version and the code hash) and otherwise builds it again, into a temporary folder in
the run folder that then takes the copy's place (a run folder that cannot be written: a temporary folder
elsewhere, deleted when the Columnar is closed). A big file is built by two processes, each taking the next part
of the file, about PART_BYTES each, so the memory a build needs does not grow with the file.
"""

from __future__ import annotations

import binascii
import errno
import gc
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import limits as _limits
from . import records as _records
from . import trim
from .helper import claim as _claim
from .helper import cpus
from .helper import finish as finish_helper
from .helper import start as start_helper
from .load import InputError, LoadReport, warn
from .records import COLUMNS, COUNTS, FLAGS, NUMERIC, SHARED, _text_dtype, _v_of

FORMAT = 3  # of the copy (2: _limits.json; 3: chunk_us as bytes, text as large_string); another format is built again
SOURCE = "records.jsonl"
COPY = "records.parquet"
META = "_meta.json"
LIMITS = "_limits.json"  # limits.read_headers' result for records.jsonl
CHUNKS = "chunk_us"  # the decoded chunk deltas (little-endian uint32 bytes), in place of chunks_us
#: the columns a copy holds: those of load_records, chunk_us in place of chunks_us
STORED = (*(c for c in COLUMNS if c != "chunks_us"), CHUNKS)
BATCH_ROWS = 262_144
PREFETCH = 2  # parts read ahead of the batch being made
PART_BYTES = 32 << 20  # records.jsonl is built in parts of about this many bytes (the memory a part needs)
HELPER_BYTES = 96 << 20  # files this big are built by two processes (ours and a helper), on two CPUs
#: Parquet compression (level 1): as fast as lz4 to write and to read back the columns an analysis asks for, at
#: half the size (per 1M records, CPU s: write 1.6-2.3 vs 1.8, read 12 columns 0.43-0.58 vs 0.44-0.49; 120 vs
#: 217 MiB; benchmarks/columnar_speed.py --codec lz4,zstd)
CODEC = "zstd"
EDGE_BYTES = 64 << 10  # the hashed head and tail of records.jsonl
_HELPER_WAIT_S = 600  # a helper that takes longer is given up (its parts are then built here)
_LEFTOVER_S = 6 * 3600  # temporary folders of a build older than this were left by one that was killed
#: versions records._Reader.lines leaves to its line-by-line path though they are records (RECORD_VERSIONS)
_LATER = tuple(v for v in _records.RECORD_VERSIONS if v not in (1, 2, 3))
_CELL = pa.binary()  # the type of a column part held as one JSON text per row (values pandas must infer)


# ---------------------------------------------------------------------------------------------------------------
# building


class _Reader(_records._Reader):
    """records.py's reader, reading part of a file line for line as load_records' reader reads the whole.

    records._Reader parses lines 128 at a time, in the order of the file's blocks of records._READ_BYTES, and a
    few values depend on which lines are parsed together (a falsy `ids` next to a truthy one, keys of a later
    version in an older record): `read_part` cuts the same blocks, so its parts make the same groups. And a
    group of clean lines of any version is parsed once: records._Reader.lines takes the one-pass path only for
    versions 1-3 (the harness writes version 4), but for a group whose records all have a version in
    RECORD_VERSIONS (and no boolean one) its line-by-line path gives the same rows and counts."""

    def __init__(self, path: Path, report: LoadReport, size: int) -> None:
        super().__init__(path, report, size)
        #: attempt_id -> rate-limit headers and error type, as limits.read_headers finds them (lines with either)
        self.limits: dict[str, _limits.Header] = {}

    def read_part(self, start: int, end: int, origin: int) -> None:
        """The lines of bytes start..end (start at a line's start), as read by a records._Reader.read that
        began at `origin` (its blocks of records._READ_BYTES start at origin)."""
        block_bytes = _records._READ_BYTES
        rest = b""
        pos = start
        with open(self.path, "rb") as f:
            f.seek(start)
            while pos < end:
                cut = min(end, origin + ((pos - origin) // block_bytes + 1) * block_bytes)
                block = f.read(cut - pos)
                if not block:
                    break
                pos += len(block)
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                if not self.columns[0].n and lines:  # rows to expect (+10%), as records._Reader.read
                    rows = int(self.size / (len(block) / len(lines)) * 1.1) + 1024
                    for col in self.columns:
                        col.capacity = rows
                for i in range(0, len(lines), _records._PARSE_LINES):
                    self.lines(lines[i:i + _records._PARSE_LINES])
        self.lines([rest])
        self.convert()

    def lines(self, lines: list[bytes]) -> None:
        try:
            ds = list(map(orjson.loads, lines))
        except orjson.JSONDecodeError:
            for line in lines:  # limits.read_headers' pass over these lines
                if _limits._FIND.search(line):
                    _limits._keep(line, self.limits)
            super().lines(lines)
            return
        for line, d in zip(lines, ds, strict=True):  # read_headers keeps only such lines: its pass for those
            if type(d) is dict and (type(d.get("ratelimit")) is dict or d.get("status") == 429) and \
                    _limits._FIND.search(line):
                _limits._keep(line, self.limits)
        try:
            vs = list(map(_v_of, ds))
        except (KeyError, TypeError, IndexError):
            super().lines(lines)
            return
        old = vs.count(1) + vs.count(2) + vs.count(3)  # what records.py takes in one pass (True counts as 1)
        if old != len(vs) and (old + sum(map(vs.count, _LATER)) != len(vs) or bool in set(map(type, vs))):
            super().lines(lines)
            return
        if ds:  # as records._Reader.lines does with a clean block
            self.seen = True
            if self.failed:
                self.report.bad_lines += 1
                self.failed = False
            for acc, col in zip(self.pending, _records._columns(ds), strict=True):
                acc.extend(col)
            self.rows += len(ds)
            if self.rows >= _records._CONVERT_ROWS:
                self.convert()


def _length(col: _records._Column) -> int:
    if col.raw is not None:
        return len(col.raw)
    if col.array is not None:
        return col.n
    return sum(len(v) for _, v, _ in col.blocks)


def _signature(vals: list[Any]) -> dict[str, Any]:
    """The kinds of values a column holds, as far as pandas' type inference looks at them."""
    types = set(map(type, vals))
    names = {type(None): "none", bool: "bool", int: "int", str: "str", dict: "dict", list: "list"}
    kinds = {names.get(t, "object") for t in types if t is not float}
    if float in types:
        kinds.add("float")
    ints = [v for v in vals if v.__class__ is int] if int in types else []
    return {"kinds": sorted(kinds), "imin": min(ints) if ints else None, "imax": max(ints) if ints else None}


def _numeric(vals: list[Any]) -> dict[str, Any]:
    """What pd.to_numeric(errors="coerce") makes of values: its dtype, and whether any is negative."""
    got = pd.to_numeric(pd.Series(vals, dtype=object), errors="coerce")
    return {"dtype": str(got.dtype), "negative": bool((got < 0).any()) if got.dtype != bool else False}


def _merge_numeric(parts: list[dict[str, Any]]) -> str:
    """The dtype pd.to_numeric(errors="coerce") gives all the values of the parts (as tried in _numeric)."""
    dtypes = {p["dtype"] for p in parts}
    if "float64" in dtypes or ("uint64" in dtypes and any(p["negative"] for p in parts)):
        return "float64"
    return "uint64" if "uint64" in dtypes else "bool" if dtypes == {"bool"} else "int64"


def _merge_signatures(sigs: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = sorted({k for s in sigs for k in s["kinds"]})
    lows = [s["imin"] for s in sigs if s["imin"] is not None]
    highs = [s["imax"] for s in sigs if s["imax"] is not None]
    return {"kinds": kinds, "imin": min(lows) if lows else None, "imax": max(highs) if highs else None}


def _inferred(sig: dict[str, Any]) -> Any:
    """The dtype pandas infers for a list holding the kinds of values of a signature."""
    samples: list[Any] = []
    for kind in sig["kinds"]:
        if kind == "int":
            samples += [sig["imin"], sig["imax"]]
        else:
            samples.append({"none": None, "bool": True, "float": 1.5, "str": "a",
                            "dict": {}, "list": [], "object": object()}[kind])
    return pd.DataFrame({"x": samples}, copy=False)["x"].dtype


def _cells(vals: list[Any]) -> pa.Array:
    """Values of any JSON kind (and NaN), one JSON text each."""
    dumps = json.dumps
    return pa.array([dumps(v, allow_nan=True, separators=(",", ":")).encode() for v in vals], type=_CELL)


def _uncells(arr: pa.Array | pa.ChunkedArray) -> list[Any]:
    loads = json.loads
    return [loads(b) for b in arr.to_pylist()]


def _arrow(col: _records._Column) -> tuple[pa.Array, dict[str, Any]]:
    """One column of a part as Arrow, and what the whole file's dtype depends on."""
    kind = col.kind
    if col.raw is not None:  # values pandas must infer: kept as they were read (nulls only: a null column)
        sig = _signature(col.raw)
        info = {"raw": True, "sig": sig}
        if kind == "count":
            info["numeric"] = _numeric(col.raw)
        return (pa.nulls(len(col.raw)) if sig["kinds"] == ["none"] else _cells(col.raw)), info
    if kind in ("number", "flag", "count"):
        arr = col.array[:col.n] if col.array is not None else np.empty(0, dtype=col.dtype)
        info: dict[str, Any] = {}
        if kind == "number":  # floats (a null is NaN here: what a column that turns raw holds for it)
            info["sig"] = {"kinds": ["float"] if arr.size else [], "imin": None, "imax": None}
        elif kind == "flag":
            info["sig"] = {"kinds": ["bool"] if arr.size else [], "imin": None, "imax": None}
        else:
            lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (None, None)
            info["sig"] = {"kinds": ["int"] if arr.size else [], "imin": lo, "imax": hi}
            info["numeric"] = {"dtype": "int64", "negative": lo is not None and lo < 0}
            if arr.size and -(2**31) <= lo and hi < 2**31:
                arr = arr.astype(np.int32)
        return pa.array(arr), info
    if kind == "text":
        arr = col.array[:col.n] if col.array is not None else np.empty(0, dtype=object)
        out = pa.array(arr, type=pa.large_string(), from_pandas=False)  # as pandas holds it: read back, no cast
        if col.name in SHARED:
            out = out.dictionary_encode()
        kinds = (["str"] if col.has_str else []) + (["none"] if out.null_count else [])
        return out, {"has_str": col.has_str, "sig": {"kinds": kinds, "imin": None, "imax": None}}
    # other columns: ints and floats with their nulls, block by block (records._Column.add)
    blocks = col.blocks
    nulls = [null if null is not None else np.zeros(len(v), dtype=bool) for _, v, null in blocks]
    null = np.concatenate(nulls) if nulls else np.zeros(0, dtype=bool)
    info = {"all_null": bool(null.all()), "any_null": bool(null.any()),
            "ints": all(form == "i" for form, _, _ in blocks)}
    if info["ints"]:
        vals = np.concatenate([v for _, v, _ in blocks]) if blocks else np.zeros(0, dtype=np.int64)
        live = vals[~null]
        lo, hi = (int(live.min()), int(live.max())) if live.size else (None, None)
        kinds = (["int"] if live.size else []) + (["none"] if info["any_null"] else [])
        info["sig"] = {"kinds": kinds, "imin": lo, "imax": hi}
        return pa.array(vals, mask=null), info
    if all(form == "f" or (n is not None and n.all()) for form, _, n in blocks):  # floats, and blocks of nulls
        vals = np.concatenate([v.astype(np.float64) for _, v, _ in blocks])
        kinds = (["float"] if not info["all_null"] else []) + (["none"] if info["any_null"] else [])
        info["sig"] = {"kinds": kinds, "imin": None, "imax": None}
        return pa.array(vals, mask=null), info
    values = col.values()  # ints in some blocks, floats in others: kept as read
    info["sig"] = _signature(values)
    return _cells(values), info


def _chunk_bytes(col: _records._Column) -> tuple[pa.Array, list[int]]:
    """The chunks_us column decoded: each row's uint32 deltas as little-endian bytes (binary: Parquet reads it back
    several times faster than a list<uint32>); rows that cannot be decoded are null (listed)."""
    vals = col.raw if col.raw is not None else (col.array[:col.n] if col.array is not None else [])
    a2b = binascii.a2b_base64
    bad: list[int] = []
    try:
        raw = [a2b(us) if us else b"" for us in vals]
        size = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
        if (size % 4).any():
            raise ValueError("not whole uint32s")
    except (TypeError, ValueError):  # binascii.Error is a ValueError
        raw = []
        for i, us in enumerate(vals):
            try:
                b = a2b(us) if us else b""
            except (TypeError, ValueError):
                b = None
            if b is None or len(b) % 4:
                bad.append(i)
                b = b""
            raw.append(b)
        size = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    null = np.fromiter((v is None for v in vals), dtype=bool, count=len(raw))
    if bad:
        null[bad] = True
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum(size, out=offsets[1:])
    large = offsets[-1] >= 2**31
    validity = pa.array(~null, type=pa.bool_()).buffers()[1] if null.any() else None
    arr = pa.Array.from_buffers(pa.large_binary() if large else pa.binary(), len(raw),
                                [validity, pa.py_buffer(offsets.astype(np.int64 if large else np.int32)),
                                 pa.py_buffer(b"".join(raw))], null_count=int(null.sum()))
    return arr, bad


def _build_part(src: Path, start: int, end: int, origin: int, out: Path, codec: str | None = None) -> dict[str, Any]:
    """Read bytes start..end of records.jsonl (see _Reader.read_part) into the Parquet file `out`."""
    reader = _Reader(src, LoadReport(), end - start)
    reader.read_part(start, end, origin)
    cols = {c.name: c for c in reader.columns}
    reader.columns = []
    rows = _length(cols[COLUMNS[0]])
    info: dict[str, Any] = {"rows": rows, "seen": reader.seen, "failed": reader.failed,
                            "bad_lines": reader.report.bad_lines, "columns": {}, "bad_chunks": [], "file": None,
                            "limits": [[k, *v] for k, v in reader.limits.items()]}
    if not rows:
        return info
    arrays, names = [], []
    for name in COLUMNS:
        col = cols.pop(name)  # each column let go of once it is converted
        if _length(col) != rows:
            raise RuntimeError(f"{src}: column {name} has {_length(col)} rows, not {rows}")
        if name == "chunks_us":
            arr, info["bad_chunks"] = _chunk_bytes(col)
            name = CHUNKS
        else:
            arr, info["columns"][name] = _arrow(col)
        del col
        arrays.append(arr)
        names.append(name)
    table = pa.Table.from_arrays(arrays, names=names)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp, compression=codec or CODEC, use_dictionary=[c for c in SHARED if c in names],
                   write_statistics=False, row_group_size=max(rows, 1))
    os.replace(tmp, out)
    info["file"] = out.name
    return info


def _line_start(f: Any, pos: int, floor: int) -> int:
    """Where the line holding byte pos starts (right after the last newline before pos), not before floor."""
    end = pos
    while end > floor:
        begin = max(floor, end - (1 << 20))
        f.seek(begin)
        i = f.read(end - begin).rfind(b"\n")
        if i >= 0:
            return begin + i + 1
        end = begin
    return floor


def _bounds(path: Path, size: int) -> list[tuple[int, int, int]]:
    """The parts to build: (start, end, origin) each, in file order.

    load_records reads a file in one go or, a big one, in the parts records._parts gives (each from its own
    start, the origin); each of those is cut here into parts of about PART_BYTES, where load_records' reader
    starts a new block (at the start of the line that holds the block's first byte)."""
    block = _records._READ_BYTES
    out = []
    for origin, stop in _records._parts(path, size) or [(0, size)]:
        blocks = -(-(stop - origin) // block)
        count = max(1, round((stop - origin) / max(PART_BYTES, 1)))
        starts = [origin]
        with open(path, "rb") as f:
            for k in range(1, count):
                at = _line_start(f, min(stop, origin + round(k * blocks / count) * block), starts[-1])
                if starts[-1] < at < stop:
                    starts.append(at)
        out += [(a, b, origin) for a, b in zip(starts, [*starts[1:], stop], strict=True)]
    return out


def _part_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, path)


def _build_parts(argv: list[str]) -> None:
    """The helper process: build parts from the end of the file until they meet ours; an info file for each."""
    src, folder, bounds = Path(argv[0]), Path(argv[1]), json.loads(argv[2])
    _records._READ_BYTES = int(argv[3])  # the blocks the parts were cut by
    gc.disable()
    for k in reversed(range(len(bounds))):
        if not _claim(str(folder), k):
            return
        info = _build_part(src, *bounds[k], folder / _part_name(k), argv[4])
        _write_json(folder / f"info-{k}.json", info)


def _build_into(src: Path, folder: Path, size: int) -> list[dict[str, Any]]:
    """Every part of bytes 0..size of src into folder; the info of each, in order."""
    bounds = _bounds(src, size)
    infos: list[dict[str, Any] | None] = [None] * len(bounds)
    helper = None
    if len(bounds) > 1 and size >= HELPER_BYTES and cpus() >= 2:
        helper = start_helper("columnar", "_build_parts", str(src), str(folder), json.dumps(bounds),
                              str(_records._READ_BYTES), CODEC)
    try:
        k = 0
        while k < len(bounds) and (helper is None or _claim(str(folder), k)):
            infos[k] = _build_part(src, *bounds[k], folder / _part_name(k))
            k += 1
        finish_helper(helper, _HELPER_WAIT_S)
        for j in range(k, len(bounds)):
            try:  # a part the helper finished (its info is written last)
                infos[j] = orjson.loads((folder / f"info-{j}.json").read_bytes())
            except (OSError, orjson.JSONDecodeError):
                infos[j] = _build_part(src, *bounds[j], folder / _part_name(j))
    finally:
        if helper is not None and helper.poll() is None:
            helper.kill()
            helper.wait()
    for leftover in folder.iterdir():  # claims, infos and anything half-written by a helper given up
        if not (leftover.name.startswith("part-") and leftover.suffix == ".parquet"):
            leftover.unlink()
    return [i for i in infos if i is not None]


# ---------------------------------------------------------------------------------------------------------------
# the copy's meta data


_CODE: str | None = None


def _code_hash() -> str:
    """A hash of the code that makes the copy's values (records.py's reader and this module)."""
    global _CODE
    if _CODE is None:
        h = hashlib.sha256()
        for mod in (_records.__file__, _limits.__file__, __file__):
            h.update(Path(mod).read_bytes())
        _CODE = h.hexdigest()[:32]
    return _CODE


def _source_id(src: Path) -> dict[str, Any]:
    """What identifies records.jsonl as it is now: size, mtime_ns and hashes of its first and last 64 KiB."""
    st = src.stat()
    with open(src, "rb") as f:
        head = f.read(min(EDGE_BYTES, st.st_size))
        f.seek(max(0, st.st_size - EDGE_BYTES))
        tail = f.read(min(EDGE_BYTES, st.st_size))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head": hashlib.blake2b(head).hexdigest(),
            "tail": hashlib.blake2b(tail).hexdigest()}


def _matches(meta: dict[str, Any], source: dict[str, Any]) -> bool:
    return meta.get("format") == FORMAT and meta.get("code") == _code_hash() and meta.get("source") == source


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = orjson.loads((folder / META).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _torn_warning(src: Path) -> str:
    """records.py's own warning for a torn last line."""
    report = LoadReport()
    reader = _records._Reader(src, report, 0)
    reader.failed = True
    reader.frame()
    return report.warnings[-1]


def _bad_warning(src: Path, bad_lines: int) -> str:
    """load_records' warning for skipped lines (its words)."""
    return f"{src}: skipped {bad_lines} lines that are not version-1 to -5 records"


def _meta_of(src: Path, source: dict[str, Any], infos: list[dict[str, Any]]) -> dict[str, Any]:
    """The copy's meta data from the info of its parts: rows, dtypes, and what loading noticed."""
    failed = False
    bad = 0
    for info in infos:  # as records._Reader.merge adds up the parts
        if info["seen"]:
            if failed:  # not the last line after all
                bad += 1
            failed = info["failed"]
        bad += info["bad_lines"]
    warnings = [_torn_warning(src)] if failed else []
    if bad:
        warnings.append(_bad_warning(src, bad))
    parts, bad_chunks, rows = [], [], 0
    for info in infos:
        if info["rows"]:
            parts.append({"file": info["file"], "rows": info["rows"]})
            bad_chunks.extend(rows + i for i in info["bad_chunks"])
        rows += info["rows"]
    columns: dict[str, Any] = {}
    live = [i for i in infos if i["rows"]]
    for name in COLUMNS:
        if name == "chunks_us":
            continue
        got = [i["columns"][name] for i in live]
        kind = _records._Column(name).kind
        if any(g.get("raw") for g in got):
            columns[name] = {"mode": "raw", "sig": _merge_signatures([g["sig"] for g in got])}
            if kind == "count":  # to_numeric's dtype for the whole column (it decides how big ints round)
                columns[name]["numeric"] = _merge_numeric([g["numeric"] for g in got])
        elif kind == "number":
            columns[name] = {"mode": "float64"}
        elif kind == "flag":
            columns[name] = {"mode": "bool"}
        elif kind == "count":
            columns[name] = {"mode": "int64"}
        elif kind == "text":
            columns[name] = {"mode": "text" if any(g["has_str"] for g in got) else "none"}
        elif all(g["all_null"] for g in got):
            columns[name] = {"mode": "none"}
        elif all(g["ints"] and not g["any_null"] for g in got):
            columns[name] = {"mode": "int64"}
        else:
            columns[name] = {"mode": "float64"}
    return {"format": FORMAT, "code": _code_hash(), "source": source, "path": str(src),
            "pyarrow": pa.__version__, "codec": CODEC, "rows": rows, "parts": parts,
            "report": {"torn_lines": int(failed), "bad_lines": bad, "warnings": warnings},
            "bad_chunk_rows": bad_chunks, "columns": columns}


def _build_folder(src: Path, folder: Path) -> dict[str, Any]:
    """The copy of src in folder (new and empty); its meta data."""
    source = _source_id(src)
    gc_on = gc.isenabled()
    gc.disable()  # millions of short-lived dicts, no cycles (as load_records)
    try:
        infos = _build_into(src, folder, source["size"])
    finally:
        if gc_on:
            gc.enable()
    meta = _meta_of(src, source, infos)
    limits: dict[str, Any] = {}
    for info in infos:  # in file order: the last record of an attempt id wins, as in read_headers
        limits.update((k, [rl, et]) for k, rl, et in info["limits"])
    (folder / LIMITS).write_bytes(orjson.dumps(limits))
    _write_json(folder / META, meta)
    return meta


def _place(tmp: Path, target: Path, meta: dict[str, Any], keep: bool = True) -> dict[str, Any]:
    """Put a finished copy in target's place; the meta data of the copy there after. A copy of the same file
    that another process put there meanwhile is kept (with `keep`; ours is dropped); any other is moved aside,
    then deleted."""
    try:
        os.rename(tmp, target)
        return meta
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
    there = _read_meta(target) if keep else None
    if there is not None and _matches(there, meta["source"]):
        return there
    old = Path(tempfile.mkdtemp(prefix=f".{COPY}.old-", dir=target.parent))
    try:
        os.rename(target, old / COPY)
    except FileNotFoundError:
        pass
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return meta


def _clear_leftovers(run: Path) -> None:
    """Temporary folders of builds that were cut short (killed) long ago."""
    try:
        for p in run.glob(f".{COPY}.*-*"):
            if p.is_dir() and time.time() - p.stat().st_mtime > _LEFTOVER_S:
                shutil.rmtree(p, ignore_errors=True)
    except OSError:
        pass


def _build_in(run: Path, src: Path, keep: bool = True) -> dict[str, Any]:
    """Build the copy in a temporary folder of the run folder, then put it in place (see _place); its meta
    data."""
    _clear_leftovers(run)
    trim.system_pool()
    tmp = Path(tempfile.mkdtemp(prefix=f".{COPY}.new-", dir=run))
    try:
        return _place(tmp, run / COPY, _build_folder(src, tmp), keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a failure, or a copy another process made first


def build(run_dir: str | Path) -> Path:
    """Build the columnar copy of run_dir/records.jsonl in run_dir (replacing any); its path."""
    run = Path(run_dir)
    src = run / SOURCE
    if not src.exists():
        raise InputError(f"{src}: no records file")
    _build_in(run, src, keep=False)
    return run / COPY


def ensure(run_dir: str | Path, report: LoadReport | None = None) -> Columnar:
    """The columnar copy of run_dir/records.jsonl, built again when the file changed; `report` gets what
    loading noticed, as load_records would have added it."""
    run = Path(run_dir)
    src = run / SOURCE
    if not src.exists():
        raise InputError(f"{src}: no records file")
    report = report if report is not None else LoadReport()
    target = run / COPY
    meta = _read_meta(target)
    owned: Path | None = None
    if meta is None or not _matches(meta, _source_id(src)):
        try:
            meta = _build_in(run, src)
        except OSError as e:  # a run folder that cannot be written (or is full): a copy elsewhere, for now
            owned = Path(tempfile.mkdtemp(prefix="ttbench-records-"))
            try:
                meta = _build_folder(src, owned)
            except BaseException:
                shutil.rmtree(owned, ignore_errors=True)
                raise
            warn(f"{run}: cannot keep the columnar copy of the records there ({e.strerror or e}); "
                 f"built in {owned}, deleted after")
            target = owned
    return Columnar(target, meta, src, report, owned)


# ---------------------------------------------------------------------------------------------------------------
# reading


@dataclass
class Batch:
    """Consecutive rows of the records: scalar columns as load_records gives them (the frame's index from 0),
    the number of the first row in the file, and the chunk deltas as arrays."""

    frame: pd.DataFrame
    start_row: int
    #: with chunk_us: row i's deltas are chunk_values[chunk_offsets[i]:chunk_offsets[i + 1]]
    chunk_offsets: np.ndarray | None = None
    chunk_values: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame)


def _as_loaded(name: str, s: pd.Series, error_kind: pd.Series | None, numeric: str | None) -> pd.Series:
    """A column pandas inferred, with records._Reader.frame's rules for it (the same rules, row by row; a count
    column goes through the dtype pd.to_numeric gives the whole column, `numeric`)."""
    if name in FLAGS:
        return s.fillna(False).astype(bool)
    if name in NUMERIC:
        return pd.to_numeric(s, errors="coerce").astype("float64")
    if name in COUNTS:
        got = pd.to_numeric(s, errors="coerce")
        if numeric is not None and got.dtype != numeric:
            got = got.astype(numeric)
        return got.fillna(COUNTS[name]).astype("int64")
    if name == "sent" and s.dtype != bool:  # version 1 records have no `sent`: all but connect failures were sent
        assert error_kind is not None
        return s.where(s.notna(), error_kind.ne("connect")).astype(bool)
    return s


class Columnar:
    """A columnar copy of records.jsonl (see ensure): its rows, what loading noticed, and its rows in batches."""

    def __init__(self, folder: Path, meta: dict[str, Any], src: Path, report: LoadReport,
                 owned: Path | None = None) -> None:
        self.path = folder
        self.meta = meta
        self.rows: int = meta["rows"]
        self.report = report
        #: rows whose chunks_us could not be decoded (their chunk_us is empty; decode_chunk_column would raise)
        self.bad_chunk_rows: list[int] = meta["bad_chunk_rows"]
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(owned), True) if owned is not None else None
        #: the copy is the run folder's own (another process's ensure() finds it), not a temporary one
        self.shared = owned is None
        self._files = [folder / p["file"] for p in meta["parts"]]
        self._empty_frame: pd.DataFrame | None = None
        self._closed = False
        self._dtypes: dict[str, Any] = {}  # as Batch.frame holds them
        self._inferred: dict[str, Any] = {}  # of the columns pandas must infer, before load_records' rules
        for name, spec in meta["columns"].items():
            mode = spec["mode"]
            if mode == "raw":
                self._inferred[name] = _inferred(spec["sig"])
                self._dtypes[name] = (np.dtype(bool) if name in FLAGS or name == "sent" else np.dtype(np.float64)
                                      if name in NUMERIC else np.dtype(np.int64) if name in COUNTS
                                      else self._inferred[name])
            else:
                self._dtypes[name] = (_text_dtype() if mode == "text" else np.dtype(object) if mode == "none"
                                      else np.dtype(mode))
        got = meta["report"]
        old = meta["path"]
        report.torn_lines += got["torn_lines"]
        report.bad_lines += got["bad_lines"]
        if got["torn_lines"]:
            report.warnings.append(got["warnings"][0].replace(old, str(src), 1))
        if report.bad_lines:
            report.warnings.append(_bad_warning(src, report.bad_lines))

    def headers(self) -> dict[str, _limits.Header]:
        """limits.read_headers(records.jsonl), found while the copy was built."""
        got = orjson.loads((self.path / LIMITS).read_bytes())
        return {k: (rl, et) for k, (rl, et) in got.items()}

    def close(self) -> None:
        """Let go of the files (a copy in a temporary folder is deleted)."""
        self._closed = True
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> Columnar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dtype(self, name: str) -> Any:
        """The dtype of a column as Batch.frame holds it (as load_records gives it)."""
        if self.rows == 0:
            return self._empty()[name].dtype
        return self._dtypes[name]

    def _empty(self) -> pd.DataFrame:
        """load_records' frame of a file without records."""
        if self._empty_frame is None:
            self._empty_frame = _records._Reader(Path(SOURCE), LoadReport(), 0).frame()
        return self._empty_frame.copy()

    def batches(self, columns: list[str] | None = None, rows: int = BATCH_ROWS) -> Iterator[Batch]:
        """The records `rows` at a time (the last batch fewer; at least one batch, maybe empty), with only the
        scalar columns asked for (all by default) in Batch.frame, and with chunk_us the chunk deltas."""
        if rows < 1:
            raise ValueError("rows must be at least 1")
        if self._closed:
            raise ValueError("the columnar copy is closed")
        names = list(STORED) if columns is None else list(columns)
        for name in names:
            if name == "chunks_us":
                raise ValueError("the copy holds chunks_us decoded: ask for chunk_us")
            if name not in STORED:
                raise ValueError(f"no column {name!r} in the records")
        chunks = CHUNKS in names
        scalars = [n for n in dict.fromkeys(names) if n != CHUNKS]
        if self.rows == 0:
            empty = self._empty()
            yield Batch(empty[scalars], 0, np.zeros(1, dtype=np.int64) if chunks else None,
                        np.zeros(0, dtype=np.uint32) if chunks else None)
            return
        wanted = list(scalars)
        if "sent" in scalars and self.meta["columns"]["sent"]["mode"] == "raw" and "error_kind" not in wanted:
            wanted.append("error_kind")
        read = wanted + ([CHUNKS] if chunks else [])
        pending: deque[pa.Table] = deque()
        have = start = 0
        for table in self._tables(read):
            pending.append(table)
            have += table.num_rows
            del table
            while have >= rows:
                batch = self._batch(_take(pending, rows), start, scalars, wanted, chunks)
                start += rows
                have -= rows
                yield batch
                del batch
        if have:
            yield self._batch(_take(pending, have), start, scalars, wanted, chunks)

    def _tables(self, columns: list[str]) -> Iterator[pa.Table]:
        """The columns of each part in turn, the next PREFETCH parts read meanwhile (Arrow lets go of the GIL)."""
        with ThreadPoolExecutor(max_workers=PREFETCH) as pool:
            ahead: deque[Future[pa.Table]] = deque()
            for f in self._files[:PREFETCH]:
                ahead.append(pool.submit(_read_part, f, columns))
            nxt = len(ahead)
            while ahead:
                table = ahead.popleft().result()
                if nxt < len(self._files):
                    ahead.append(pool.submit(_read_part, self._files[nxt], columns))
                    nxt += 1
                yield table
                del table

    def _batch(self, pieces: list[pa.Table], start: int, scalars: list[str], wanted: list[str],
               chunks: bool) -> Batch:
        n = sum(t.num_rows for t in pieces)
        data: dict[str, Any] = {}
        raw: list[str] = []
        for name in wanted:
            mode = self.meta["columns"][name]["mode"]
            cols = [t.column(name) for t in pieces]
            if mode == "raw":
                raw.append(name)
                vals: list[Any] = []
                for c in cols:
                    vals.extend(_uncells(c) if c.type == _CELL else [None] * len(c) if c.type == pa.null()
                                else c.to_pylist())
                data[name] = pd.Series(vals, dtype=self._inferred[name], copy=False)
            else:
                data[name] = _column(mode, cols, n, self._dtypes[name])
        index = pd.RangeIndex(n)  # as load_records' rows start_row.. (reset: every batch from 0)
        for name in raw:
            s = data[name]
            s.index = index
            ek = None
            if name == "sent":
                ek = pd.Series(data["error_kind"], index=index, copy=False)
            data[name] = _as_loaded(name, s, ek, self.meta["columns"][name].get("numeric"))
        frame = (pd.DataFrame({name: data[name] for name in scalars}, index=index, copy=False) if scalars
                 else pd.DataFrame(index=index, columns=pd.Index([], dtype=pd.Index(COLUMNS).dtype)))
        offsets = values = None
        if chunks:
            offsets, values = _chunk_arrays([t.column(CHUNKS) for t in pieces], n)
        return Batch(frame, start, offsets, values)


def _read_part(path: Path, columns: list[str]) -> pa.Table:
    """Some columns of a part file (a reader of its own: a ParquetFile keeps what it read while it is open)."""
    with pq.ParquetFile(path) as f:
        return f.read(columns, use_threads=True)


def _take(pending: deque[pa.Table], rows: int) -> list[pa.Table]:
    """The first `rows` rows of the pending tables (taken off them)."""
    pieces = []
    while rows:
        t = pending[0]
        if t.num_rows <= rows:
            pieces.append(pending.popleft())
            rows -= t.num_rows
        else:
            pieces.append(t.slice(0, rows))
            pending[0] = t.slice(rows)
            rows = 0
    return pieces


def _column(mode: str, cols: list[pa.ChunkedArray], n: int, dtype: Any) -> Any:
    """One column of a batch, as load_records holds it, from its pieces (in the forms their parts chose)."""
    if mode == "none":
        return np.full(n, None, dtype=object)
    if mode == "text":
        if getattr(dtype, "storage", None) == "pyarrow":
            chunks = [ch.cast(pa.large_string()) for c in cols for ch in c.chunks]
            return pd.arrays.ArrowStringArray(pa.chunked_array(chunks, type=pa.large_string()), dtype=dtype)
        objs = np.concatenate([c.to_numpy(zero_copy_only=False) for c in cols]) if cols else np.empty(0, object)
        return pd.array(objs, dtype=dtype, copy=False)
    parts = []
    for c in cols:
        if c.type == _CELL:  # ints and floats of other blocks (with nulls): as records._Column.column
            parts.append(np.array([math.nan if v is None else v for v in _uncells(c)], dtype=np.float64))
        else:
            parts.append(c.to_numpy(zero_copy_only=False) if c.num_chunks != 1 else
                         c.chunk(0).to_numpy(zero_copy_only=False))
    arr = (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(dtype, copy=False)
    return arr if arr.flags.writeable else arr.copy()  # not a view of Arrow's memory: load_records' can be written


def _chunk_arrays(cols: list[pa.ChunkedArray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (n + 1, from 0) and the concatenated uint32 deltas of the rows of binary pieces."""
    offsets = np.empty(n + 1, dtype=np.int64)
    offsets[0] = 0
    values = []
    at, base = 0, 0
    for c in cols:
        for ch in c.chunks:
            m = len(ch)
            if not m:
                continue
            ot = np.dtype(np.int64 if pa.types.is_large_binary(ch.type) else np.int32)
            bufs = ch.buffers()
            off = np.frombuffer(bufs[1], dtype=ot, count=m + 1, offset=ch.offset * ot.itemsize).astype(np.int64)
            lo, hi = int(off[0]), int(off[-1])
            flat = np.frombuffer(bufs[2], dtype="<u4", count=(hi - lo) // 4, offset=lo) if hi > lo \
                else np.zeros(0, dtype=np.uint32)
            offsets[at + 1:at + m + 1] = (off[1:] - lo) // 4 + base
            values.append(flat)
            at += m
            base += flat.size
    vals = (np.concatenate(values) if len(values) > 1 else values[0] if values
            else np.zeros(0, dtype=np.uint32))
    if vals.dtype != np.uint32 or not vals.flags.writeable:
        vals = vals.astype(np.uint32)
    return offsets, vals


def chunk_times(offsets: np.ndarray, values: np.ndarray, i: int) -> np.ndarray:
    """Row i's chunk arrival times in ms from the attempt's start (what chunks.decode_chunk_column gives)."""
    return np.cumsum(values[offsets[i]:offsets[i + 1]], dtype=np.float64) / 1000.0
