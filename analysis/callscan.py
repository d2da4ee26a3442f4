"""Logical calls from attempt records read in batches, in memory that does not grow with the run.

A first, narrow pass over the records finds the calls with more than one attempt (retries, and any call id seen
twice); their attempts are kept aside and assembled as build_calls does, while every other record is a call of its
own and goes straight through. Each later pass then hands out call frames with the columns build_calls gives, batch
by batch, and the multi-attempt calls last."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from .firstlook import FirstLook
from .metrics import _labels, _plan, indexed_calls


class Batch(Protocol):
    """A batch of attempt records: a frame of scalar columns, and the chunk deltas of its rows (µs)."""

    frame: pd.DataFrame
    chunk_offsets: np.ndarray | None
    chunk_values: np.ndarray | None


#: what a pass reads: the columns it asks for -> batches of them
Source = Callable[[list[str]], Iterator[Batch]]

INDEX_COLUMNS = ["call_id", "attempt", "final", "t_start"]
MULTI_ROWS = 65_536  # multi-attempt calls handed out at a time, at the end of a pass
HASHES_KEPT_ROWS = 2_000_000  # the narrow pass keeps its hashes for the next pass up to this many records (8 B each)


_FNV_BASIS, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)
_MIX = np.uint64(0xFF51AFD7ED558CCD)
_WIDE = 256  # ids longer than this (bytes) are hashed by pandas instead of padded into rows


def _hashes(ids: pd.Series) -> np.ndarray:
    """A 64-bit hash of each id (equal ids, equal hashes, however they are held), from the text's bytes: Arrow-held
    text without a Python string per id."""
    chunked = getattr(ids.array, "_pa_array", None)
    if chunked is not None and chunked.type in (pa.string(), pa.large_string()):
        chunks = chunked.chunks
    else:
        vals = ids.to_numpy(dtype=object)
        try:
            chunks = [pa.array(vals, type=pa.large_string(), from_pandas=True)]
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text: each by its str()
            chunks = [pa.array([v if v is None or isinstance(v, str) else str(v) for v in vals],
                               type=pa.large_string(), from_pandas=True)]
    out = [_text_hashes(ch) for ch in chunks]
    return np.concatenate(out) if len(out) != 1 else out[0]


def _text_hashes(ch: pa.Array) -> np.ndarray:
    """_hashes of one Arrow string array: each id's bytes, zero-padded to whole 64-bit words, folded word by word
    (FNV-style, with its length), then mixed; an id longer than _WIDE bytes by pandas' hash of it."""
    n = len(ch)
    if not n:
        return np.empty(0, dtype=np.uint64)
    odt = np.dtype(np.int64 if pa.types.is_large_string(ch.type) else np.int32)
    bufs = ch.buffers()
    off = np.frombuffer(bufs[1], dtype=odt, count=n + 1, offset=ch.offset * odt.itemsize).astype(np.int64)
    lens = off[1:] - off[:-1]
    long = lens > _WIDE
    short = np.where(long, 0, lens)
    words = max((int(short.max()) + 7) // 8, 1)
    pad = np.zeros((n, words * 8), dtype=np.uint8)
    if bufs[2] is not None and off[-1] > off[0]:
        data = np.frombuffer(bufs[2], dtype=np.uint8, count=int(off[-1]))
        take = np.repeat(~long, lens)
        pad[np.arange(words * 8) < short[:, None]] = data[off[0]:off[-1]][take]
    cols = pad.view(np.uint64)
    h = _FNV_BASIS ^ lens.astype(np.uint64)
    own = (short + 7) // 8  # each id folds its own words only: the hash does not depend on the batch's widest id
    for j in range(words):
        step = (h ^ cols[:, j]) * _FNV_PRIME
        step ^= step >> np.uint64(29)
        h = np.where(own > j, step, h)
    h ^= h >> np.uint64(33)
    h *= _MIX
    h ^= h >> np.uint64(33)
    if long.any():
        at = np.flatnonzero(long)
        h[at] = pd.util.hash_array(np.asarray(ch.take(pa.array(at)).to_pylist(), dtype=object), categorize=False)
    return h


@dataclass
class CallIndex:
    """What the narrow pass found: the multi-attempt calls, the run's first start, the warm-up cut."""

    multi_ids: set[str]
    dup_hashes: np.ndarray
    first_start: float  # the first start of the calls kept (after the warm-up)
    cut: float  # calls that start before this are the warm-up's
    rows: int
    #: each batch's hashes of its call ids (the rows that have one), as the narrow pass read them; None for a run
    #: of more than HASHES_KEPT_ROWS records (call_batches then hashes them again)
    batch_hashes: list[np.ndarray] | None = field(default=None, repr=False)
    _hash_set: np.ndarray | None = field(default=None, repr=False)  # hashes of multi_ids and dup_hashes, sorted
    _first: FirstLook | None = field(default=None, repr=False)  # their slots: a first look that rules out most rows

    def is_multi(self, ids: pd.Series, hashes: np.ndarray | None = None) -> np.ndarray:
        """Rows whose call has (or may have: two ids can share a 64-bit hash) more than one attempt; a lone call
        taken for one is assembled as the one-attempt call it is. `hashes`: the ids' _hashes, when known."""
        if self._hash_set is None:
            multi = _hashes(pd.Series(sorted(self.multi_ids, key=str), dtype=object)) if self.multi_ids \
                else np.empty(0, dtype=np.uint64)
            self._hash_set = np.unique(np.r_[multi, self.dup_hashes])
            self._first = FirstLook(self._hash_set)
        keys = self._hash_set
        if not keys.size or not len(ids):
            return np.zeros(len(ids), dtype=bool)
        h = _hashes(ids) if hashes is None else hashes
        assert self._first is not None
        out = self._first.maybe(h)
        maybe = np.flatnonzero(out)
        out[maybe] = keys[np.minimum(np.searchsorted(keys, h[maybe]), keys.size - 1)] == h[maybe]
        return out


def index_calls(source: Source, warmup_s: float) -> CallIndex:
    """The narrow pass: call ids of retried calls, duplicated ids (by hash, confirmed by string later), the start."""
    multi: set[str] = set()
    singles: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    batch_hashes: list[np.ndarray] | None = []
    gmin = np.inf
    rows = 0
    for b in source(INDEX_COLUMNS):
        f = b.frame
        rows += len(f)
        f = f[f["call_id"].notna()]
        h = _hashes(f["call_id"])
        if batch_hashes is not None:
            batch_hashes.append(h)
            if rows > HASHES_KEPT_ROWS:
                batch_hashes = None
        if not len(f):
            continue
        ts = f["t_start"].to_numpy(dtype=np.float64)
        if (~np.isnan(ts)).any():
            gmin = min(gmin, float(np.nanmin(ts)))
        if f["final"].dtype == bool:
            is_final = f["final"].to_numpy()
        else:  # only a true boolean counts
            is_final = np.array([v is True or v is np.True_ for v in f["final"].to_numpy(dtype=object)], dtype=bool)
        lone = (f["attempt"].to_numpy() == 1) & is_final
        if (~lone).any():
            multi.update(f.loc[~lone, "call_id"].tolist())
        singles.append(h[lone])
        if warmup_s > 0:  # only a warm-up needs each lone record's start after this pass
            starts.append(ts[lone])
    hashes = np.concatenate(singles) if singles else np.empty(0, dtype=np.uint64)
    ordered = np.sort(hashes)  # the hashes seen more than once: neighbours once sorted (np.unique counts every one)
    dup = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    cut = gmin + warmup_s if warmup_s > 0 else -np.inf
    first = gmin
    if warmup_s > 0 and np.isfinite(gmin):
        # the first start after the warm-up: lone records (not multi by id or hash) and multi calls' first starts
        ts = np.concatenate(starts) if starts else np.empty(0)
        lone_ok = ~np.isin(hashes, dup) & (ts >= cut)
        first = float(ts[lone_ok].min()) if lone_ok.any() else np.inf
    del hashes, starts, singles
    idx = CallIndex(multi, dup, first, cut, rows, batch_hashes)
    if warmup_s > 0 and (multi or dup.size):
        firsts = multi_first_starts(source, idx)
        kept = [t for t in firsts.values() if t >= cut]
        if kept:
            idx.first_start = min(idx.first_start, min(kept))
    return idx


def multi_first_starts(source: Source, idx: CallIndex) -> dict[str, float]:
    """Each multi-attempt call's first start (a narrow pass over its attempts only)."""
    firsts: dict[str, float] = {}
    for b in source(INDEX_COLUMNS):
        f = b.frame[b.frame["call_id"].notna()]
        m = idx.is_multi(f["call_id"])
        if m.any():
            for cid, t in f.loc[m].groupby("call_id", sort=False)["t_start"].min().items():
                firsts[cid] = min(firsts.get(cid, np.inf), t) if t == t else firsts.get(cid, np.inf)
    return firsts


@dataclass
class CallBatch:
    """Calls (the columns build_calls gives, and their group labels) and the attempts that belong to them."""

    calls: pd.DataFrame
    labels: np.ndarray
    attempts: pd.DataFrame  # the calls' counted-attempt columns, each with its call's label
    attempt_labels: np.ndarray
    gaps_starts: np.ndarray | None  # per call: its deltas are gaps_values[gaps_starts[i]:gaps_ends[i]]
    gaps_ends: np.ndarray | None
    gaps_values: np.ndarray | None  # chunk deltas (µs): the batch's own, other rows' among them


def _deltas(b: Batch, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The chunk deltas of the given rows of a batch, gathered, as (offsets, values)."""
    if b.chunk_offsets is None or b.chunk_values is None:
        return None
    return _take(b.chunk_values, b.chunk_offsets[rows], b.chunk_offsets[rows + 1])


def _spans(b: Batch, rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Where the chunk deltas of the given rows of a batch are, as (starts, ends, the batch's values): no copy."""
    if b.chunk_offsets is None or b.chunk_values is None:
        return None, None, None
    return b.chunk_offsets[rows], b.chunk_offsets[rows + 1], b.chunk_values


def call_batches(source: Source, idx: CallIndex, columns: list[str],
                 each: Callable[[pd.DataFrame, np.ndarray], None] | None = None,
                 each_columns: list[str] | None = None) -> Iterator[CallBatch]:
    """One pass: the lone records as calls, batch by batch, then the multi-attempt calls assembled at the end;
    `each` is given every batch of attempt records as read (warm-up included, with `each_columns` too) and which
    are multi-attempt calls'."""
    want = list(dict.fromkeys([*columns, *INDEX_COLUMNS, "endpoint", "model", "stream", "error_kind", "sent",
                               "replayed", "chunk_us"]))
    read = list(dict.fromkeys([*want, *(each_columns or [])]))
    kept_frames: list[pd.DataFrame] = []
    kept_deltas: list[tuple[np.ndarray, np.ndarray]] = []
    with_chunks = True
    known = idx.batch_hashes
    for k, b in enumerate(source(read)):
        f = b.frame
        has_id = f["call_id"].notna().to_numpy()
        multi = np.zeros(len(f), dtype=bool)
        ids = f.loc[has_id, "call_id"]
        h = known[k] if known is not None and k < len(known) and len(known[k]) == len(ids) else None
        if h is not None and len(h) and not np.array_equal(_hashes(ids.iloc[[0, -1]]), h[[0, -1]]):
            h = None  # not the rows the narrow pass read in this batch: hashed again
        multi[has_id] = idx.is_multi(ids, h)
        if each is not None:
            each(f, multi)
        if len(read) > len(want):  # the calls (and the attempts kept for the end) without `each`'s columns
            f = f[[c for c in want if c in f.columns]]
        if multi.any():
            rows = np.flatnonzero(multi)
            kept_frames.append(f.iloc[rows].reset_index(drop=True))
            d = _deltas(b, rows)
            with_chunks = with_chunks and d is not None
            if d is not None:
                kept_deltas.append(d)
        lone = np.flatnonzero(has_id & ~multi)
        if not lone.size:
            continue
        calls = f.iloc[lone]
        ts = calls["t_start"].to_numpy(dtype=np.float64)
        keep = ts >= idx.cut if np.isfinite(idx.cut) else np.ones(len(calls), dtype=bool)
        if not keep.all():
            lone, calls = lone[keep], calls[keep]
        if not len(calls):
            continue
        frame = indexed_calls(calls, calls["t_start"].to_numpy(), calls["attempt"].to_numpy())
        labels = np.asarray(_labels(frame), dtype=object)
        yield CallBatch(frame, labels, calls.reset_index(drop=True), labels, *_spans(b, lone))
    if kept_frames:
        att = pd.concat(kept_frames, ignore_index=True)
        kept_frames.clear()  # the pieces go as soon as they are joined
        yield from _multi_calls(att, kept_deltas if with_chunks else None, idx)


def _multi_calls(att: pd.DataFrame, deltas: list[tuple[np.ndarray, np.ndarray]] | None,
                 idx: CallIndex, rows: int | None = None) -> Iterator[CallBatch]:
    """The multi-attempt calls, assembled as build_calls does (the last attempt by number, the first start), `rows`
    (MULTI_ROWS) calls at a time, each batch with its calls' attempts; `deltas`, the attempts' chunk deltas, is
    emptied once they are joined."""
    rows = rows or MULTI_ROWS
    plan = _plan(att, 0.0)
    assert plan is not None  # call ids are strings here
    keep = plan.first_start >= idx.cut if np.isfinite(idx.cut) else np.ones(len(plan.final), dtype=bool)
    final, first_start, n_att = plan.final[keep], plan.first_start[keep], plan.n_att[keep]
    row_of_call = np.full(len(plan.final), -1, dtype=np.int64)
    row_of_call[np.flatnonzero(keep)] = np.arange(int(keep.sum()))
    att_call = row_of_call[plan.rows]
    del plan
    starts = ends = values = None
    if deltas is not None:
        bases = np.cumsum([0] + [int(o[-1]) for o, _ in deltas[:-1]])
        starts = np.concatenate([o[:-1] + base for (o, _), base in zip(deltas, bases, strict=True)])[final]
        ends = np.concatenate([o[1:] + base for (o, _), base in zip(deltas, bases, strict=True)])[final]
        values = np.concatenate([v for _, v in deltas])
        deltas.clear()
    for c0 in range(0, len(final), rows):
        c1 = min(c0 + rows, len(final))
        calls = indexed_calls(att.take(final[c0:c1]), first_start[c0:c1], n_att[c0:c1])
        labels = np.asarray(_labels(calls), dtype=object)
        mine = (att_call >= c0) & (att_call < c1)
        attempts = att if mine.all() else att[mine].reset_index(drop=True)
        yield CallBatch(calls, labels, attempts, labels[att_call[mine] - c0],
                        None if starts is None else starts[c0:c1], None if ends is None else ends[c0:c1], values)
        del calls, attempts


def _take(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values[lo[i]:hi[i]] for every i, concatenated, with their offsets."""
    lens = hi - lo
    off = np.zeros(len(lo) + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    idx = np.repeat(lo - off[:-1], lens) + np.arange(int(off[-1]))
    return off, values[idx]


def frame_batches(att: pd.DataFrame, rows: int, chunks: bool = True) -> Source:
    """A source over an in-memory attempt frame (today's loader's), in batches of `rows`: for tests and small runs."""
    def source(columns: list[str]) -> Iterator[Any]:
        for lo in range(0, max(len(att), 1), rows):
            part = att.iloc[lo:lo + rows]
            frame = part[[c for c in columns if c in part.columns]].reset_index(drop=True)
            offsets = values = None
            if chunks and "chunk_us" in columns:
                deltas = [np.frombuffer(base64.b64decode(us), dtype="<u4") if isinstance(us, str) and us
                          else np.empty(0, dtype=np.uint32) for us in part["chunks_us"]]
                offsets = np.zeros(len(deltas) + 1, dtype=np.int64)
                np.cumsum([len(d) for d in deltas], out=offsets[1:])
                values = np.concatenate(deltas).astype(np.uint32) if deltas else np.empty(0, dtype=np.uint32)
            yield _FrameBatch(frame, offsets, values)
    return source


@dataclass
class _FrameBatch:
    frame: pd.DataFrame
    chunk_offsets: np.ndarray | None
    chunk_values: np.ndarray | None

