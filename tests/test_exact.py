"""Exact distributions from value counts: the same figures as numpy over every value, whatever the batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.exact import PCTS, ValueCounts
from analysis.metrics import dist

pytestmark = pytest.mark.timeout(120)

micros = st.lists(st.integers(min_value=0, max_value=5_000_000).map(lambda us: us / 1000.0), min_size=1,
                  max_size=300)
floats = st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=300)


def _close(a: dict, b: dict) -> None:
    assert a["n"] == b["n"]
    for k in ("mean", *(f"p{p:g}" for p in PCTS), "max"):
        assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-9), k


@settings(max_examples=200, deadline=None)
@given(values=st.one_of(micros, floats), cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=4))
def test_counted_percentiles_equal_numpy_over_all_values_in_any_batches(values, cuts):
    vc = ValueCounts()
    bounds = sorted({0, len(values), *(c for c in cuts if c < len(values))})
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
        vc.add(np.array(values[lo:hi] + [np.nan]))
    _close(vc.dist(), dist(np.array(values)))
    # exact, not just close, for the order statistics themselves
    a = np.sort(np.array(values))
    assert vc.dist()["max"] == a[-1] and vc.quantiles([0.0])[0] == a[0]


def test_merged_tables_keep_every_count_and_memory_follows_distinct_values():
    rng = np.random.default_rng(3)
    whole = np.round(rng.lognormal(np.log(300), 0.5, 400_000), 3)  # ms with whole microseconds
    parts = [ValueCounts() for _ in range(4)]
    for i, p in enumerate(parts):
        p.add(whole[i::4])
    vc = ValueCounts()
    for p in parts:
        vc.merge(p)
    _close(vc.dist(), dist(whole))
    assert vc.n == whole.size
    assert len(vc.values) == len(np.unique(whole)) < whole.size
    assert vc.nbytes() == 16 * len(np.unique(whole))  # 8 bytes a value, 8 a count: nothing pending after a read


def test_no_values_give_the_empty_figures():
    vc = ValueCounts()
    vc.add([np.nan, np.nan])
    assert vc.dist() == dist(np.array([]))


@settings(max_examples=150, deadline=None)
@given(values=st.one_of(micros, floats, st.lists(st.floats(min_value=1e-300, max_value=1e300), min_size=1,
                                                 max_size=200)),
       groups=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=300),
       cut=st.integers(min_value=0, max_value=300))
def test_two_passes_give_each_groups_exact_figures(values, groups, cut):
    from analysis.exact import GroupedQuantiles

    g = np.resize(np.array(groups), len(values))
    v = np.array(values)
    gq = GroupedQuantiles()
    for _ in range(2):
        gq.add(g[:cut], v[:cut])  # in two batches, the same ones both times
        gq.add(g[cut:], v[cut:])
        if not gq.second:
            gq.start_second_pass()
    assert gq.groups() == sorted(set(g.tolist()))
    for k in gq.groups():
        _close(gq.dist(k), dist(v[g == k]))
        assert gq.dist(k)["max"] == v[g == k].max()


def test_two_passes_take_a_single_value_and_an_overall_group_of_both_signs():
    """A value given alone (not in an array) counts like any other; `overall` adds of values of both signs and many
    magnitudes (too wide for group 0's running counts) keep group 0's figures numpy's own."""
    from analysis.exact import GroupedQuantiles

    rng = np.random.default_rng(3)
    v = rng.permutation(np.r_[-rng.lognormal(2, 3, 500), rng.lognormal(2, 3, 500), 0.0])
    g = rng.integers(1, 4, v.size)
    gq = GroupedQuantiles(spool=True)
    for lo in range(0, v.size, 100):
        gq.add(g[lo:lo + 100], v[lo:lo + 100], overall=True)
    gq.add(7, 2.5, overall=True)
    gq.start_second_pass()
    gq.replay()
    every, groups = np.r_[v, 2.5], np.r_[g, 7]
    assert gq.groups() == [0, 1, 2, 3, 7]
    for k in gq.groups():
        mine = every if k == 0 else every[groups == k]
        d = gq.dist(k)
        assert d["n"] == mine.size and d["max"] == mine.max()
        assert d["mean"] == pytest.approx(mine.mean(), rel=1e-12, abs=1e-9)
        assert [d[f"p{p:g}"] for p in PCTS] == np.percentile(mine, PCTS).tolist()


def test_two_passes_keep_only_a_few_values_of_millions():
    from analysis.exact import GroupedQuantiles

    rng = np.random.default_rng(5)
    v = rng.lognormal(np.log(0.3), 0.5, 2_000_000)  # continuous: every value distinct
    gq = GroupedQuantiles()
    for _ in range(2):
        for lo in range(0, v.size, 250_000):
            gq.add(0, v[lo:lo + 250_000])
        if not gq.second:
            gq.start_second_pass()
    kept = sum(a.size for a in gq._kept_vals)
    _close(gq.dist(0), dist(v))
    assert kept < 60_000  # the bins of 11 order statistics, not 2 million values


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(min_value=0, max_value=1 << 26), min_size=1, max_size=300))
def test_whole_numbers_counted_without_sorting_equal_numpy(values):
    vc = ValueCounts()
    a = np.array(values, dtype=np.int64)
    vc.add_ints(a[: len(a) // 2])
    vc.add_ints(a[len(a) // 2:])
    _close(vc.dist(), dist(a.astype(np.float64)))


@pytest.mark.parametrize("big_share", [0.0, 0.01, 0.5])
def test_whole_numbers_with_a_few_or_many_large_ones_are_counted_exactly(big_share):
    """Chunk gaps in µs: mostly short, some (or many) long ones up to a second; counted in place batch by batch,
    the large ones apart: the same figures as numpy over every value."""
    rng = np.random.default_rng(int(big_share * 100))
    batches = []
    for _ in range(3):
        small = rng.integers(0, 1 << 16, 20_000)
        big = rng.integers(1 << 16, 1 << 20, int(20_000 * big_share))
        batches.append(rng.permutation(np.r_[small, big]).astype(np.uint32))
    vc = ValueCounts()
    for b in batches:
        vc.add_ints(b)
    every = np.concatenate(batches).astype(np.float64)
    d = vc.dist()
    assert d["n"] == every.size and d["max"] == every.max()
    assert [d[f"p{p:g}"] for p in PCTS] == np.percentile(every, PCTS).tolist()
    assert vc.total() == every.sum()


def test_many_groups_at_once_take_the_sorting_path_and_agree():
    from analysis.exact import GroupedQuantiles

    rng = np.random.default_rng(9)
    g = rng.integers(0, 500, 50_000)
    v = np.round(rng.lognormal(3, 1, 50_000), 3)
    gq = GroupedQuantiles(pcts=(50, 95))
    for _ in range(2):
        gq.add(g, v)
        if not gq.second:
            gq.start_second_pass()
    for k in (0, 17, 499):
        d, mine = gq.dist(k), v[g == k]
        assert d["n"] == mine.size and d["max"] == mine.max()
        assert d["mean"] == pytest.approx(mine.mean(), rel=1e-12)
        assert [d["p50"], d["p95"]] == pytest.approx(list(np.percentile(mine, [50, 95])), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(values=st.one_of(micros, floats), groups=st.lists(st.integers(min_value=1, max_value=4), min_size=1,
                                                         max_size=300),
       cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=4))
def test_a_spooled_first_pass_replays_as_its_second_with_every_value_in_the_overall_group(
        values, groups, cuts):
    """The values the first pass keeps (spilled to a temporary file past a few bytes) are the second pass: each
    group's figures and group 0's (every value) equal numpy's."""
    from analysis import exact

    g = np.resize(np.array(groups), len(values))
    v = np.array(values)
    memory, exact.SPOOL_MEMORY = exact.SPOOL_MEMORY, 64
    try:
        gq = exact.GroupedQuantiles(spool=True)
    finally:
        exact.SPOOL_MEMORY = memory
    bounds = [0, *sorted(c for c in cuts if c < len(v)), len(v)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        gq.add(g[lo:hi], v[lo:hi], overall=True)
    assert gq._spool is not None and (len(v) < 8 or gq._spool._file._rolled)
    gq.start_second_pass()
    gq.replay()
    assert gq.groups() == sorted({0, *g.tolist()})
    _close(gq.dist(0), dist(v))
    for k in set(g.tolist()):
        _close(gq.dist(k), dist(v[g == k]))



def test_tables_added_batch_by_batch_are_folded_so_memory_follows_distinct_values():
    """Counted tables (add_counts, what add_ints and the first pass give) pile up no longer than the table."""
    from analysis import exact

    vc = ValueCounts()
    values = np.arange(5_000, dtype=np.float64)
    for _ in range(2_000):  # 10 million entries in all, 5,000 distinct
        vc.add_counts(values, np.ones(values.size, dtype=np.int64))
    assert vc.nbytes() < 3 * exact._MERGE_AT * 16
    assert vc.n == 10_000_000 and vc.values.size == 5_000 and (vc.counts == 2_000).all()


@settings(max_examples=120, deadline=None)
@given(values=st.one_of(micros, floats), groups=st.lists(st.integers(min_value=-2, max_value=70_000), min_size=1,
                                                         max_size=300),
       cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=4), overall=st.booleans())
def test_direct_mode_gives_numpys_figures_bit_for_bit(values, groups, cuts, overall):
    """Every value kept in memory (a small run): each group's percentiles and max are numpy's own, to the bit, and
    group 0 holds every value when the adds are `overall`; the two passes are not needed (replay has no spool)."""
    from analysis import exact

    g = np.resize(np.array(groups), len(values))
    v = np.array(values)
    gq = exact.GroupedQuantiles(spool=True, direct=True)
    bounds = [0, *sorted(c for c in cuts if c < len(v)), len(v)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        gq.add(g[lo:hi], v[lo:hi], overall=overall)
    gq.add(1, np.array([np.nan]))  # NaN is skipped
    gq.start_second_pass()
    gq.replay()
    want = {int(k): v[g == k] for k in set(g.tolist())}
    if overall:
        want[0] = np.r_[v, v[g == 0]]
    assert gq.groups() == sorted(want)
    for k, mine in want.items():
        d = gq.dist(k)
        assert d["n"] == mine.size and d["max"] == mine.max()
        assert d["mean"] == pytest.approx(mine.mean(), rel=1e-12, abs=1e-9)
        assert [d[f"p{p:g}"] for p in PCTS] == np.percentile(mine, PCTS).tolist()
        got = np.array([d[f"p{p:g}"] for p in PCTS])
        assert got.view(np.uint64).tolist() == np.percentile(mine, PCTS).view(np.uint64).tolist()  # -0.0 too


def test_direct_mode_many_groups_and_many_levels_equal_the_two_passes():
    """A per-second series (thousands of groups) and a 201-level CDF: direct and two-pass figures are the same."""
    from analysis import exact

    rng = np.random.default_rng(12)
    g = rng.integers(0, 3_600, 200_000)
    v = np.round(rng.lognormal(3, 1, 200_000), 3)
    levels = tuple(float(x) for x in np.linspace(0.0, 100.0, 201))
    for pcts, groups in (((50, 95), g), (levels, g % 7)):
        direct = exact.GroupedQuantiles(pcts=pcts, direct=True)
        two = exact.GroupedQuantiles(pcts=pcts)
        for _ in range(2):
            for lo in range(0, v.size, 65_536):
                two.add(groups[lo:lo + 65_536], v[lo:lo + 65_536])
            if not two.second:
                two.start_second_pass()
        for lo in range(0, v.size, 65_536):
            direct.add(groups[lo:lo + 65_536], v[lo:lo + 65_536])
        assert direct.groups() == two.groups() == sorted(set(groups.tolist()))
        for k in direct.groups():
            a, b = direct.dist(k), two.dist(k)
            assert a["mean"] == pytest.approx(b["mean"], rel=1e-12)
            assert {x: y for x, y in a.items() if x != "mean"} == {x: y for x, y in b.items() if x != "mean"}


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(min_value=1, max_value=6), width=st.integers(min_value=2, max_value=130),
       top=st.sampled_from([3, 1000, 1 << 20, 1 << 32]), seed=st.integers(min_value=0, max_value=1 << 30))
def test_gap_figures_are_numpys_percentiles_bit_for_bit(rows, width, top, seed):
    """A call's gap figures (what a summary-timing record keeps) equal numpy.percentile's over its gaps, exactly."""
    from ttformats.records import gap_figures

    d = np.random.default_rng(seed).integers(0, top, size=(rows, width))
    figs = gap_figures(d)
    gaps = d[:, 1:]
    assert figs["p50_us"].tolist() == np.percentile(gaps, 50, axis=1).tolist()
    assert figs["p99_us"].tolist() == np.percentile(gaps, 99, axis=1).tolist()
    assert figs["max_us"].tolist() == gaps.max(axis=1).tolist() and figs["sum_us"].tolist() == gaps.sum(axis=1).tolist()
    assert figs["max_at"].tolist() == gaps.argmax(axis=1).tolist() and figs["first_us"].tolist() == d[:, 0].tolist()


@pytest.mark.parametrize("small", [np.int32, np.int8])
def test_two_passes_join_a_groups_running_counts_and_its_table_bins(small, monkeypatch):
    """A per-second series read batch by batch (each add a few groups: their running counts), then one add that
    spans every group (its bins go to the table, as the multi-attempt calls at the end of a pass do), and one
    group far wider than running counts hold: every group's figures are numpy's own; also when the running
    counts outgrow int32 (int8 stands in for it: hundreds of equal values in a bin)."""
    from analysis import exact

    monkeypatch.setattr(exact, "_SMALL_COUNTS", small)
    rng = np.random.default_rng(21)
    n = 40_000
    seconds = 400 if small == np.int32 else 40  # (int8: a thousand values a second, hundreds in a bin)
    g = np.sort(rng.integers(1, seconds, n))  # in order of time: a batch holds a few seconds
    v = np.round(rng.lognormal(3, 1, n), 3) if small == np.int32 else rng.integers(1, 4, n).astype(float)
    tail_g = rng.integers(1, seconds, 3_000)  # every second again, in one add
    tail_v = np.round(rng.lognormal(3, 1, 3_000), 3)
    wide_g = np.full(50, 401)
    wide_v = rng.lognormal(0, 30, 50)  # magnitudes far apart: more bins than running counts cover
    gq = exact.GroupedQuantiles(spool=True)
    for lo in range(0, n, 1_000):
        gq.add(g[lo:lo + 1_000], v[lo:lo + 1_000])
    gq.add(tail_g, tail_v)
    gq.add(wide_g[:25], wide_v[:25])
    gq.add(wide_g[25:], wide_v[25:])
    gq.start_second_pass()
    gq.replay()
    every_g, every_v = np.r_[g, tail_g, wide_g], np.r_[v, tail_v, wide_v]
    assert gq.groups() == sorted(set(every_g.tolist()))
    for k in gq.groups():
        mine = every_v[every_g == k]
        d = gq.dist(k)
        assert d["n"] == mine.size and d["max"] == mine.max()
        assert [d[f"p{p:g}"] for p in PCTS] == np.percentile(mine, PCTS).tolist()


def test_direct_mode_keeps_numpys_sign_of_a_zero():
    """The order statistics of a small run's groups (up to 64 of them: more are sorted), group 0 among them, keep
    the sign of a zero as numpy gives it, a group of one value too, and group 0 agrees with its only group."""
    import math

    from analysis import exact

    gq = exact.GroupedQuantiles(direct=True)
    gq.add(1, np.array([-0.0, -1.0]), overall=True)
    for k in (0, 1):
        d = gq.dist(k)
        assert d["max"] == 0.0 and math.copysign(1.0, d["max"]) == -1.0
        assert [d[f"p{p:g}"] for p in PCTS] == np.percentile(np.array([-0.0, -1.0]), PCTS).tolist()
    gq = exact.GroupedQuantiles(direct=True)  # -0.0 in one group, 0.0 in another: group 0 as numpy orders them
    both = np.array([-0.0, 0.0])
    gq.add(np.array([1, 2]), both, overall=True)
    d = gq.dist(0)
    assert math.copysign(1.0, d["max"]) == math.copysign(1.0, np.sort(both)[-1])
    assert [math.copysign(1.0, d[f"p{p:g}"]) for p in PCTS] == \
        [math.copysign(1.0, x) for x in np.percentile(both, PCTS).tolist()]
    rng = np.random.default_rng(3)  # runs of signed zeros (and a few other values): numpy's signs, bit for bit
    for n in (1, 2, 3, 5, 17, 64, 301):
        for _ in range(25):
            v = np.where(rng.random(n) < 0.5, -0.0, 0.0)
            v[rng.random(n) < 0.1] = rng.normal()
            gq = exact.GroupedQuantiles(direct=True)
            gq.add(1, v)
            got = np.array([gq.dist(1)[f"p{p:g}"] for p in PCTS])
            assert got.view(np.uint64).tolist() == np.percentile(v, PCTS).view(np.uint64).tolist(), v.tolist()
