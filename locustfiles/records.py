"""Per-attempt records: building them, and getting them to disk at least once a second."""

from __future__ import annotations

import base64
import binascii
import json
import os
from array import array
from collections.abc import Callable
from typing import IO, Any

from ttformats.jsonline import json_line
from ttformats.records import DEFAULTS, DERIVED, DROPPED, gap_figures, other_ids

RECORD_VERSION = 5
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "record.schema.json")


def record_schema() -> dict[str, Any]:
    """The record's JSON schema, its endpoint list taken from the declared dialects."""
    from .dialects import DIALECTS

    with open(SCHEMA_PATH, encoding="utf-8") as f:
        schema = json.load(f)
    schema["properties"]["endpoint"]["enum"] = list(DIALECTS)
    return schema
FLUSH_INTERVAL_S = 0.5



def encode_chunks(times: list[float], t0: float) -> dict[str, Any]:
    """Chunk arrival times as base64 little-endian uint32 microsecond deltas (the first from t0)."""
    deltas = array("I")
    prev = t0
    for t in times:
        d = round((t - prev) * 1e6)
        deltas.append(d if d > 0 else 0)
        prev = t
    if deltas.itemsize != 4:  # pragma: no cover - every CPython platform ttbench targets has 4-byte 'I'
        raise RuntimeError("array('I') is not 32-bit here")
    if os.sys.byteorder != "little":  # pragma: no cover
        deltas.byteswap()
    return {"n": len(deltas), "us": base64.b64encode(deltas.tobytes()).decode("ascii")}


def decode_chunks(chunks: dict[str, Any] | None) -> list[float]:
    """Chunk arrival times in milliseconds from the attempt's start (none for a summary-timing record's)."""
    if not chunks or not chunks.get("n") or "us" not in chunks:
        return []
    deltas = array("I")
    deltas.frombytes(base64.b64decode(chunks["us"]))
    if os.sys.byteorder != "little":  # pragma: no cover
        deltas.byteswap()
    out = []
    acc = 0
    for d in deltas:
        acc += d
        out.append(acc / 1000.0)
    return out


def chunk_gaps_ms(chunks: dict[str, Any] | None) -> list[float]:
    """The gaps between an attempt's chunks in milliseconds (none for a summary-timing record's)."""
    return [d / 1000.0 for d in chunk_gaps_us(chunks)]


def chunk_gaps_us(chunks: dict[str, Any] | None) -> array:
    """The gaps between an attempt's chunks in whole microseconds (none for a summary-timing record's)."""
    if not chunks or chunks.get("n", 0) < 2 or "us" not in chunks:
        return array("I")
    return _deltas(chunks)[1:]


def _deltas(chunks: dict[str, Any]) -> array:
    """The whole-microsecond deltas of an encoded chunk cell (as encode_chunks wrote them)."""
    deltas = array("I")
    deltas.frombytes(binascii.a2b_base64(chunks["us"]))  # base64.b64decode without its wrapper's cost
    if os.sys.byteorder != "little":  # pragma: no cover
        deltas.byteswap()
    return deltas


def _number(x: Any) -> int | float:
    """A figure as JSON should hold it: a whole number without its `.0`."""
    x = float(x)
    return int(x) if x.is_integer() else x


def summarise(rec: dict[str, Any]) -> dict[str, Any]:
    """The summary-timing record of a full one: per-call gap figures instead of every chunk's time, and no key
    whose value is its default or follows from the others (ttformats.records.expand puts them back)."""
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if k in DROPPED or (k in DEFAULTS and v == DEFAULTS[k] and type(v) is type(DEFAULTS[k])):
            continue
        out[k] = v
    if isinstance(out.get("usage"), dict):
        out["usage"] = {k: v for k, v in out["usage"].items() if v != 0 or type(v) is not int}
    chunks = rec.get("chunks")
    if isinstance(chunks, dict) and "us" in chunks:
        deltas = _deltas(chunks)
        summary: dict[str, Any] = {"n": len(deltas)}
        if len(deltas) >= 2:
            figs = gap_figures([deltas])
            summary.update({k: _number(v[0]) for k, v in figs.items()})
        elif deltas:
            summary["first_us"] = deltas[0]
        out["chunks"] = summary
    for k, derive in DERIVED.items():
        if k == "ids" and "ids" in out and not other_ids(out["ids"], rec.get("request_id")):
            del out[k]  # the analysis keeps a record's ids only when they name another join id
        elif k in out:
            derived = derive(rec)
            if derived == out[k] and type(derived) is type(out[k]):
                del out[k]
    return out


class RecordSink:
    """Buffers records; a flusher writes them to a file and/or ships them, at least once a second."""

    def __init__(self, path: str | None = None, ship: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.path = path
        self.ship = ship
        self._buffer: list[dict[str, Any]] = []
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self.written = 0
        self.closed = False

    def add(self, record: dict[str, Any]) -> None:
        """Queue one record (after close, a record is appended to the file at once)."""
        self._buffer.append(record)
        if self.closed and self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(map(json_line, self._buffer)))
            self.written += len(self._buffer)
            self._buffer = []

    def write_lines(self, records: list[dict[str, Any]]) -> None:
        """Append records to the file now (the master uses this for shipped batches)."""
        if self._file is None or not records:
            return
        self._file.write("".join(map(json_line, records)))
        self._file.flush()
        self.written += len(records)

    def flush(self, always: bool = False) -> None:
        """Write or ship what is buffered (`always`: ship even an empty batch)."""
        if not self._buffer and not (always and self.ship is not None):
            return
        batch, self._buffer = self._buffer, []
        if self.ship is not None:
            self.ship(batch)
        else:
            self.write_lines(batch)

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        self.closed = True
