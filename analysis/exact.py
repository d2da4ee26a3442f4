"""Exact distributions in bounded memory: each distinct value once, with how many times it was seen.

Latencies and chunk gaps are whole microseconds (give or take the last bit of a float), so a run of millions of
calls has far fewer distinct values than calls: counting them keeps every order statistic exact (the same
percentiles as numpy's linear interpolation over all the values) in memory that grows with the distinct values,
not with the calls."""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from ttformats.records import numpy_lerp

from .firstlook import FirstLook

PCTS = (50, 90, 95, 99, 99.9)
_MERGE_AT = 1 << 20  # pending values merged into the table once this many wait
DENSE_INTS = 1 << 20  # whole numbers below this are counted in place (chunk gaps under a second, in µs)
_CLIP_INTS = 1 << 16  # of those, the ones from here up are counted apart when few (add_ints)
SPOOL_MEMORY = 4 << 20  # bytes a spool holds in memory before it moves to a temporary file
#: runs of up to this many records keep every distribution's values in memory (GroupedQuantiles' `direct`: about
#: 200 bytes a record over all the report's distributions) and select their order statistics at the end (_ordered_at);
#: larger runs take the two passes
DIRECT_ROWS = 2_000_000


class ValueCounts:
    """A multiset of floats (NaN ignored): sorted distinct values and their counts, merged as values arrive."""

    def __init__(self) -> None:
        self.values = np.empty(0, dtype=np.float64)
        self.counts = np.empty(0, dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._pending_tables: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0  # entries of the pending tables
        self._dense: np.ndarray | None = None  # counts of the whole numbers 0 .. size - 1 added since the last fold

    def add(self, values: Any) -> None:
        """Count these values (NaN skipped)."""
        a = np.asarray(values, dtype=np.float64)
        a = a[~np.isnan(a)]
        if not a.size:
            return
        self._pending.append(a)
        self._pending_n += a.size
        if self._pending_n >= _MERGE_AT:
            self._fold()

    def add_ints(self, values: np.ndarray) -> None:
        """Count whole numbers (an integer array), by counting each distinct one without sorting them."""
        a = np.asarray(values)
        if not a.size:
            return
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi < DENSE_INTS:  # into the running counts of 0 .. DENSE_INTS - 1
            have = self._dense.size if self._dense is not None else 0
            if have <= hi:
                grown = np.zeros(min(DENSE_INTS, max(hi + 1, 2 * have)), dtype=np.int64)
                if self._dense is not None:
                    grown[:have] = self._dense
                self._dense = grown
            assert self._dense is not None
            if hi >= _CLIP_INTS:  # the few large values apart: a table of every value up to the largest is slow
                counts = np.bincount(np.minimum(a, _CLIP_INTS), minlength=_CLIP_INTS + 1)
                self._dense[:_CLIP_INTS] += counts[:_CLIP_INTS]
                big = a[a >= _CLIP_INTS]
                if big.size * 16 <= a.size:
                    np.add.at(self._dense, big, 1)
                else:
                    wide = np.bincount(big - _CLIP_INTS)
                    self._dense[_CLIP_INTS:_CLIP_INTS + wide.size] += wide
                return
            counts = np.bincount(a)
            self._dense[:counts.size] += counts
            return
        if hi - lo >= 1 << 24:  # too wide to count densely
            self.add(a.astype(np.float64))
            return
        counts = np.bincount(a - lo)
        nz = np.flatnonzero(counts)
        self.add_counts((nz + lo).astype(np.float64), counts[nz])

    def add_counts(self, values: np.ndarray, counts: np.ndarray) -> None:
        """Count each value `counts` times (values sorted and distinct, no NaN)."""
        if values.size:
            self._pending_tables.append((np.asarray(values, dtype=np.float64), np.asarray(counts, dtype=np.int64)))
            self._pending_rows += values.size
            if self._pending_rows >= max(_MERGE_AT, self.values.size):  # folded as often as the table doubles
                self._fold()

    def merge(self, other: ValueCounts) -> None:
        """Add another multiset's values."""
        other._fold()
        self.add_counts(other.values, other.counts)

    def _fold(self) -> None:
        tables = self._pending_tables
        if self._dense is not None:
            nz = np.flatnonzero(self._dense)
            tables.append((nz.astype(np.float64), self._dense[nz]))
            self._dense = None
        if self._pending:
            v, c = np.unique(np.concatenate(self._pending), return_counts=True)
            tables.append((v, c.astype(np.int64)))
            self._pending, self._pending_n = [], 0
        if not tables:
            return
        vals = np.concatenate([self.values, *(t[0] for t in tables)])
        cnts = np.concatenate([self.counts, *(t[1] for t in tables)])
        self._pending_tables, self._pending_rows = [], 0
        order = np.argsort(vals, kind="stable")
        vals, cnts = vals[order], cnts[order]
        starts = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]]) if vals.size else np.empty(0, dtype=np.int64)
        self.values = vals[starts]
        self.counts = np.add.reduceat(cnts, starts) if vals.size else cnts

    @property
    def n(self) -> int:
        """How many values were counted."""
        self._fold()
        return int(self.counts.sum())

    def total(self) -> float:
        """The sum of all the values."""
        self._fold()
        return float(np.dot(self.values, self.counts.astype(np.float64)))

    def quantiles(self, qs: Any) -> np.ndarray:
        """Quantiles (0..1) as numpy.percentile's default (linear) method gives them over all the values."""
        self._fold()
        n = int(self.counts.sum())
        if n == 0:
            return np.full(len(qs), np.nan)
        lo_i, hi_i, t = _interpolation(n, np.asarray(qs, dtype=np.float64))
        cum = np.cumsum(self.counts)
        a = self.values[np.searchsorted(cum, lo_i, side="right")]
        b = self.values[np.searchsorted(cum, hi_i, side="right")]
        return numpy_lerp(a, b, t)

    def dist(self) -> dict[str, Any]:
        """n, mean, p50, p90, p95, p99, p99.9 and max: the figures analysis.metrics.dist gives."""
        n = self.n
        if n == 0:
            return {"n": 0, "mean": None, "p50": None, "p90": None, "p95": None, "p99": None, "p99.9": None,
                    "max": None}
        out: dict[str, Any] = {"n": n, "mean": self.total() / n}
        for p, v in zip(PCTS, self.quantiles([p / 100 for p in PCTS]), strict=True):
            out[f"p{p:g}"] = float(v)
        out["max"] = float(self.values[-1])
        return out

    def nbytes(self) -> int:
        """Memory held by the table and the values waiting to be merged."""
        return int(self.values.nbytes + self.counts.nbytes + sum(a.nbytes for a in self._pending)
                   + sum(v.nbytes + c.nbytes for v, c in self._pending_tables)
                   + (self._dense.nbytes if self._dense is not None else 0))


def _bin_keys(values: np.ndarray) -> np.ndarray:
    """A bin of each float, monotone in the value: the top bits of its IEEE 754 pattern made sortable (1/256 of a
    doubling wide)."""
    u = values.view(np.uint64)
    neg = (u >> np.uint64(63)).astype(bool)
    u = np.where(neg, ~u, u | np.uint64(1 << 63))
    return (u >> np.uint64(_SHIFT)).astype(np.int64)


_SHIFT = 44  # 64 - 20: sign, exponent and 8 bits of mantissa
_FEW_GROUPS = 64  # up to this many groups in one add(): counted group by group
_BIN_BITS = 64 - _SHIFT


class Spool:
    """Arrays kept now and read back later in the same order: in memory up to SPOOL_MEMORY, then in a temporary
    file (so a second pass over derived values need not read and derive them again)."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115  (closed by read())
        self._items = 0

    def write(self, *arrays: np.ndarray) -> None:
        """Keep these arrays."""
        pickle.dump(arrays, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._items += 1

    def read(self) -> Iterator[tuple[np.ndarray, ...]]:
        """Everything written, once, in order; the spool is then closed."""
        self._file.seek(0)
        try:
            for _ in range(self._items):
                yield pickle.load(self._file)
        finally:
            self._file.close()


class GroupedQuantiles:
    """Exact n, mean, percentiles and max of float values in many groups, in two passes over the same values.

    The first pass counts the values of each group in narrow bins (sparse: only bins that hold values); between
    the passes, the bins that hold each wanted order statistic are known; the second pass keeps just the values
    that fall in those bins, so each percentile is the exact order statistic numpy would interpolate, in memory
    that grows with the bins in use, not with the values.

    `direct` (for runs small enough that every value fits in memory, as the caller judges from their size): the
    values are only kept, and each group's order statistics are selected from them at the end; the same figures,
    one pass, no bins."""

    def __init__(self, pcts: tuple[float, ...] = PCTS, spool: bool = False, direct: bool = False) -> None:
        """`spool`: keep the values of the first pass (replay() is then the second pass); `direct`: keep every value
        in memory instead (replay() and start_second_pass() then have nothing to do)."""
        self.pcts = pcts
        self.second = False
        self.direct = direct
        self._held: list[tuple[np.ndarray, np.ndarray, bool]] = []  # direct: (groups, values, overall) per add
        self._spool = Spool() if spool and not direct else None
        self._bins = ValueCounts()  # pass 1: keys (group << _BIN_BITS | bin) as floats (exact below 2**53)
        self._dense_bins: dict[int, tuple[int, np.ndarray]] = {}  # pass 1, a few groups: group -> (first bin, counts)
        self._dense_n: dict[int, int] = {}  # the values counted in each group's running counts
        self._sum: dict[int, float] = {}
        self._wanted: dict[int, dict[int, tuple[int, int]]] = {}  # group -> {rank: (key, offset in its bin)}
        self._keep: np.ndarray = np.empty(0, dtype=np.int64)
        self._keep_look: FirstLook | None = None  # the slots of the keys in _keep: a first look
        self._kept_keys: list[np.ndarray] = []
        self._kept_vals: list[np.ndarray] = []
        self._n: dict[int, int] = {}
        self._result: dict[int, dict[str, Any]] | None = None

    @staticmethod
    def _values(groups: Any, values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(groups, values, bins) of the values that are not NaN."""
        v = np.atleast_1d(np.asarray(values, dtype=np.float64))
        g = np.broadcast_to(np.asarray(groups, dtype=np.int64), v.shape)
        ok = ~np.isnan(v)
        if not ok.all():
            v, g = v[ok], g[ok]
        return g, v, _bin_keys(v)

    def replay(self) -> None:
        """The second pass, over the values the first kept (a spooled GroupedQuantiles, after
        start_second_pass)."""
        assert self.second and (self._spool is not None or self.direct)
        if self._spool is None:
            return
        spool, self._spool = self._spool, None
        for g, v, overall in spool.read():
            self.add(g, v, bool(overall))

    def add(self, groups: Any, values: Any, overall: bool = False) -> None:
        """Values of the given groups (an int for all, or one per value); NaN skipped. `overall`: each value also
        counts in group 0."""
        if self.direct:
            self._hold(groups, values, overall)
            return
        g, v, bins = self._values(groups, values)
        if not v.size:
            return
        keys = (g << _BIN_BITS) | bins
        if not self.second:
            if self._spool is not None:
                self._spool.write(_narrow(g), v, np.array(overall))
            self._first(g, v, bins, keys)
            if overall:  # group 0 holds every value too: counted as a group of its own, not as copies
                lo = int(bins.min())
                if int(bins.max()) - lo < _SPAN_BINS:
                    self._count_bins(0, lo, np.bincount(bins - lo))
                else:  # values of both signs, or of many magnitudes: group 0's keys are the bins themselves
                    self._bins.add(bins.astype(np.float64))
                self._sum[0] = self._sum.get(0, 0.0) + float(np.bincount(np.zeros(v.size, np.intp), weights=v)[0])
            return
        if not self._keep.size:
            return
        if overall:
            self._second(bins, v)  # group 0's keys are the bins themselves
        self._second(keys, v)

    def _first(self, g: np.ndarray, v: np.ndarray, bins: np.ndarray, keys: np.ndarray) -> None:
        """The first pass over values of their groups: their bins counted, their sums added."""
        ug, inv = _groups_of(g)
        lo = int(bins.min())
        width = int(bins.max()) - lo + 1
        if len(ug) * width <= _DENSE_BINS:  # every group's bins counted at once, without sorting
            counts = np.bincount(inv * width + (bins - lo), minlength=len(ug) * width)
            if len(ug) <= _FEW_GROUPS:  # into each group's running counts
                rows = counts.reshape(len(ug), width)
                for i, grp in enumerate(ug.tolist()):
                    self._count_bins(grp, lo, rows[i])
            else:
                nz = np.flatnonzero(counts)
                self._bins.add_counts(((ug[nz // width] << _BIN_BITS) | (nz % width + lo)).astype(np.float64),
                                      counts[nz])
        elif len(ug) <= _FEW_GROUPS:  # each group's bins counted without sorting
            for i, grp in enumerate(ug.tolist()):
                b = bins[inv == i] if len(ug) > 1 else bins
                blo = int(b.min())
                self._count_bins(grp, blo, np.bincount(b - blo))
        else:
            self._bins.add(keys.astype(np.float64))
        sums = np.bincount(inv, weights=v)
        for k, x in zip(ug.tolist(), sums.tolist(), strict=True):
            self._sum[k] = self._sum.get(k, 0.0) + x

    def _second(self, keys: np.ndarray, v: np.ndarray) -> None:
        """The second pass over values with these keys: those in a wanted bin are kept."""
        keep = self._keep
        assert self._keep_look is not None
        maybe = np.flatnonzero(self._keep_look.maybe(keys))  # rules out most values
        if not maybe.size:
            return
        keys, v = keys[maybe], v[maybe]
        hit = keep[np.minimum(np.searchsorted(keep, keys), keep.size - 1)] == keys  # keep is sorted
        if hit.any():
            self._kept_keys.append(keys[hit])
            self._kept_vals.append(v[hit])

    def _count_bins(self, grp: int, lo: int, counts: np.ndarray) -> None:
        """Add the counts of bins lo, lo + 1, ... of a group to its running counts (a dense array over the bins it
        has seen, up to _SPAN_BINS wide, of _SMALL_COUNTS while the group has fewer values than that holds; a wider
        group's counts go to the sparse table)."""
        have = self._dense_bins.get(grp)
        hi = lo + counts.size
        n = self._dense_n.get(grp, 0) + int(counts.sum())
        dtype = _SMALL_COUNTS if n <= np.iinfo(_SMALL_COUNTS).max else np.int64
        if have is not None:
            glo, arr = have
            nlo, nhi = min(glo, lo), max(glo + arr.size, hi)
            if nhi - nlo <= _SPAN_BINS:
                if (nlo, nhi) != (glo, glo + arr.size) or arr.dtype != dtype:
                    grown = np.zeros(nhi - nlo, dtype=dtype)
                    grown[glo - nlo:glo - nlo + arr.size] = arr
                    arr = grown
                    self._dense_bins[grp] = (nlo, arr)
                arr[lo - nlo:hi - nlo] += counts.astype(dtype, copy=False)
                self._dense_n[grp] = n
                return
        elif counts.size <= _SPAN_BINS:
            self._dense_bins[grp] = (lo, counts.astype(dtype, copy=True))
            self._dense_n[grp] = n
            return
        nz = np.flatnonzero(counts)
        self._bins.add_counts(((grp << _BIN_BITS) | (nz + lo)).astype(np.float64), counts[nz])

    def _hold(self, groups: Any, values: Any, overall: bool) -> None:
        v = np.asarray(values, dtype=np.float64)
        g = np.broadcast_to(np.asarray(groups, dtype=np.int64), v.shape)
        ok = ~np.isnan(v)
        if not ok.all():
            v, g = v[ok], g[ok]
        if v.size:
            self._held.append((_narrow(g), v.copy(), overall))

    def start_second_pass(self) -> None:
        """After every value went through add() once: find the bins each wanted order statistic is in."""
        if self.direct:
            self.second = True
            return
        keys = self._bins.values.astype(np.int64) if self._bins.n else np.empty(0, dtype=np.int64)
        counts = self._bins.counts
        self._bins = ValueCounts()
        groups = keys >> _BIN_BITS
        if keys.size and self._dense_bins:  # a group's bins in the table join its running counts when they fit
            left = np.ones(keys.size, dtype=bool)
            bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                g = int(groups[a])
                have = self._dense_bins.get(g)
                if have is None:
                    continue
                lo, arr = have
                bins = keys[a:b] - (g << _BIN_BITS)
                nlo, nhi = min(lo, int(bins[0])), max(lo + arr.size, int(bins[-1]) + 1)
                if nhi - nlo <= _SPAN_BINS:
                    grown = np.zeros(nhi - nlo, dtype=np.int64)
                    grown[lo - nlo:lo - nlo + arr.size] = arr
                    grown[bins - nlo] += counts[a:b]  # the table's keys are distinct
                    self._dense_bins[g] = (nlo, grown)
                    left[a:b] = False
            keys, counts = keys[left], counts[left]
            groups = keys >> _BIN_BITS
        in_table = set(np.unique(groups).tolist())
        own = {}  # groups whose bins are all in their running counts: read there, not merged into the table
        join = []  # groups with bins in both, too far apart for one array: their running counts join the table
        for grp, (lo, arr) in sorted(self._dense_bins.items()):
            if grp in in_table:
                nz = np.flatnonzero(arr)
                join.append((((grp << _BIN_BITS) | (nz + lo)).astype(np.float64), arr[nz]))
            else:
                own[grp] = (lo, arr)
        self._dense_bins = {}
        self._dense_n = {}
        if join:
            table = ValueCounts()
            table.add_counts(keys.astype(np.float64), counts)
            for k, c in join:
                table.add_counts(k, c)
            keys = table.values.astype(np.int64) if table.n else np.empty(0, dtype=np.int64)
            counts = table.counts
            del table, join
        groups = keys >> _BIN_BITS
        keep: list[int] = []
        if keys.size:
            bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
            for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                self._want(int(groups[lo]), np.cumsum(counts[lo:hi]), keys[lo:hi].__getitem__, keep)
        for grp, (lo, arr) in own.items():
            self._want(grp, np.cumsum(arr, dtype=np.int64), lambda i, g=grp, b=lo: (g << _BIN_BITS) | (b + i), keep)
        self._keep = np.unique(np.array(keep, dtype=np.int64))
        self._keep_look = FirstLook(self._keep)
        self._bins = ValueCounts()
        self.second = True

    def _want(self, g: int, cum: np.ndarray, key_at: Any, keep: list[int]) -> None:
        """The bins of group g that hold its wanted order statistics, from the running total of its bins' counts
        (`key_at(i)`: the key of bin i)."""
        n = int(cum[-1])
        self._n[g] = n
        wanted = {}
        for r in sorted(_ranks(n, self.pcts)):
            i = int(np.searchsorted(cum, r, side="right"))
            before = int(cum[i - 1]) if i else 0
            key = int(key_at(i))
            wanted[r] = (key, r - before)
            keep.append(key)
        self._wanted[g] = wanted

    def groups(self) -> list[int]:
        """The groups that got values."""
        if self.direct and self._result is None:
            self._finish()
        return sorted(self._n)

    def dist(self, group: int) -> dict[str, Any]:
        """The group's n, mean, percentiles and max (after the second pass)."""
        if self._result is None:
            self._finish()
        assert self._result is not None
        return self._result.get(group) or ValueCounts().dist()

    def _finish(self) -> None:
        if self.direct:
            self._finish_direct()
            return
        keys = np.concatenate(self._kept_keys) if self._kept_keys else np.empty(0, dtype=np.int64)
        vals = np.concatenate(self._kept_vals) if self._kept_vals else np.empty(0)
        order = np.lexsort((vals, keys))
        keys, vals = keys[order], vals[order]
        self._result = {}
        items = [(g, r, key, offset) for g, wanted in self._wanted.items() for r, (key, offset) in wanted.items()]
        where = np.searchsorted(keys, np.array([i[2] for i in items], dtype=np.int64), side="left") + \
            np.array([i[3] for i in items], dtype=np.int64)
        found = dict(zip(((i[0], i[1]) for i in items), vals[where].tolist(), strict=True))
        for g, wanted in self._wanted.items():
            n = self._n[g]
            at = {r: found[g, r] for r in wanted}
            self._result[g] = self._figures(n, self._sum[g] / n,
                                            lambda ranks, at=at: np.array([at[r] for r in ranks.tolist()]))
        self._kept_keys, self._kept_vals = [], []

    def _finish_direct(self) -> None:
        """Each group's figures from every value kept (direct): each group's values partitioned at the ranks read
        (or sorted)."""
        held, self._held = self._held, []
        self._result = {}
        if not held:
            return
        g = np.concatenate([h[0].astype(np.int64) for h in held])
        v = np.concatenate([h[1] for h in held])
        zero = [h[1] for h in held if h[2]]
        parts: dict[int, np.ndarray] = {}
        if g.size:
            lo, hi = int(g.min()), int(g.max())
            if hi - lo < 1 << 16:  # a radix sort of the group numbers
                order = np.argsort((g - lo).astype(np.uint16), kind="stable")
            else:
                order = np.argsort(g, kind="stable")
            g, v = g[order], v[order]
            bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True])
            parts = {int(g[a]): v[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)}
        if g.size and bounds.size - 1 > _MANY_GROUPS:  # every group but an overall group 0 at once
            rest = bounds[:-1][g[bounds[:-1]] != 0] if zero else bounds[:-1]
            self._many(g, v, rest, bounds)
            parts = {0: parts[0]} if 0 in parts and zero else {}
        if zero:  # group 0: every value of an `overall` add, and any given as group 0 itself
            parts[0] = np.concatenate([*zero, *((parts[0],) if 0 in parts else ())])
        for grp, vals in parts.items():
            self._result[grp] = self._figures(vals.size, float(np.sum(vals)) / vals.size,
                                              _ordered_at(vals, self.pcts).__getitem__)
            self._n[grp] = vals.size

    def _many(self, g: np.ndarray, v: np.ndarray, starts: np.ndarray, bounds: np.ndarray) -> None:
        """_figures of the groups that start at `starts` in g and v (sorted by group, each group's values in the
        order they came; `bounds` every group's start and the end): each group sorted in place, then every group's
        order statistics selected at once."""
        ends = bounds[np.searchsorted(bounds, starts) + 1]
        ordered = v.copy()  # the same layout as g and v: group by group, each group's values sorted
        sums = []
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            ordered[a:b].sort()
            sums.append(float(np.sum(v[a:b])))
        n = ends - starts
        lo, hi, t = _interpolation(n[:, None], np.asarray(self.pcts, dtype=np.float64) / 100)
        values = numpy_lerp(ordered[starts[:, None] + lo], ordered[starts[:, None] + hi], t)
        maxes = ordered[ends - 1].tolist()
        names = [f"p{p:g}" for p in self.pcts]
        for k, (a, b, grp) in enumerate(zip(starts.tolist(), ends.tolist(), g[starts].tolist(), strict=True)):
            out: dict[str, Any] = {"n": b - a, "mean": sums[k] / (b - a)}
            out.update(zip(names, values[k].tolist(), strict=True))
            out["max"] = maxes[k]
            self._result[int(grp)] = out
            self._n[int(grp)] = b - a

    def _figures(self, n: int, mean: float, at: Any) -> dict[str, Any]:
        """n, mean, the percentiles (numpy's linear method) and max of a group of n values, `at(ranks)` giving
        the order statistics of those ranks (0-based)."""
        out: dict[str, Any] = {"n": n, "mean": mean}
        lo, hi, t = _interpolation(n, np.asarray(self.pcts, dtype=np.float64) / 100)
        values = numpy_lerp(at(lo), at(hi), t)
        for p, x in zip(self.pcts, values.tolist(), strict=True):
            out[f"p{p:g}"] = x
        out["max"] = float(at(np.array([n - 1]))[0])
        return out


def _narrow(g: np.ndarray) -> np.ndarray:
    """Group numbers (a copy) in the smallest of int16, int32 and int64 that holds them: less to spool or hold."""
    g = np.asarray(g)
    lo, hi = (int(g.min()), int(g.max())) if g.size else (0, 0)
    for t in (np.int16, np.int32):
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return g.astype(t)
    return g.astype(np.int64)


def _groups_of(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(g, return_inverse=True) for group numbers, counted instead of sorted when they are small."""
    if g.size and g.min() >= 0 and g.max() < _DENSE_GROUPS:
        present = np.bincount(g).astype(bool)
        ug = np.flatnonzero(present)
        lut = np.zeros(present.size, dtype=np.int64)
        lut[ug] = np.arange(ug.size)
        return ug, lut[g]
    return np.unique(g, return_inverse=True)


_DENSE_GROUPS = 1 << 22  # group numbers below this are counted, not sorted
_PARTITION_RANKS = 24  # a group's order statistics selected by partitioning up to this many, sorted above
_MANY_GROUPS = 64  # direct figures of more groups than this are selected for all groups at once
_DENSE_BINS = 1 << 20  # groups times bins in one add() counted in one table
_SMALL_COUNTS: Any = np.int32  # running counts' type while a group has fewer values than it holds (then int64)
_SPAN_BINS = 1 << 16  # the widest range of bins a group's running counts cover (256 KiB in int32)


def _interpolation(n: Any, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where numpy.percentile's linear method reads n values (n an int or a column of them) at the quantiles q
    (0..1): the two order statistics (0-based) and the weight between them, virtual + 1 at and past the last value
    (numpy reads the last value twice there; it matters only to the sign of a zero)."""
    virtual = (n - 1) * q
    r = np.floor(virtual)
    lo = r.astype(np.int64)
    return lo, np.minimum(lo + 1, n - 1), np.where(virtual >= n - 1, virtual + 1, virtual - r)


def _ordered_at(vals: np.ndarray, pcts: tuple[float, ...]) -> np.ndarray:
    """vals with the order statistics _figures reads (_ranks) each at its place in sorted order: partitioned at
    those ranks and rank 0, as numpy.percentile partitions (so a zero's sign is numpy's too, where a group is not
    sorted; a third of a sort's time for the usual dozen ranks), sorted when there are many."""
    ranks = _ranks(vals.size, pcts) | {0}
    return np.partition(vals, sorted(ranks)) if len(ranks) <= _PARTITION_RANKS else np.sort(vals)


def _ranks(n: int, pcts: tuple[float, ...]) -> set[int]:
    """The order statistics (0-based) the percentiles of n values interpolate between, and the largest."""
    lo, hi, _ = _interpolation(n, np.asarray(pcts, dtype=np.float64) / 100)
    return {n - 1, *lo.tolist(), *hi.tolist()}
