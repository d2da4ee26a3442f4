"""The metrics of a run read in batches equal the whole-frame metrics, whatever the batches and the warm-up."""

from __future__ import annotations

import gzip
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.callscan import frame_batches
from analysis.load import LoadReport
from analysis.metrics import SLO, Options, compute, finite
from analysis.metrics_scan import compute_scan
from analysis.records import load_records

from .test_analysis_metrics import rec, write

pytestmark = pytest.mark.timeout(120)

REFERENCE = Path(__file__).parent / "data" / "reference_run"


def _diff(a, b, path=""):
    """Differences: counts and strings exactly, floats within 1e-9 relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _diff(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items, not {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if abs(a - b) <= max(1e-9 * max(abs(a), abs(b)), 1e-12) else [f"{path}: {a} != {b}"]
    return [] if (a == b and type(a) is type(b)) else [f"{path}: {a!r} != {b!r}"]


@pytest.fixture(scope="module")
def reference_attempts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref")
    with gzip.open(REFERENCE / "records.jsonl.gz", "rb") as src, open(folder / "records.jsonl", "wb") as dst:
        shutil.copyfileobj(src, dst)
    return load_records(folder / "records.jsonl", LoadReport())


@pytest.mark.parametrize("direct", [True, False], ids=["values-in-memory", "two-passes"])
@pytest.mark.parametrize("rows,warmup,multi_rows", [(1000, 0.0, None), (97, 0.0, 7), (4096, 30.0, 50),
                                                     (333, 120.0, None)])
def test_batched_metrics_equal_the_whole_frames_on_the_reference_run(reference_attempts, rows, warmup, multi_rows,
                                                                    direct, monkeypatch):
    """Both ways to exact distributions: every value in memory (a run of up to DIRECT_ROWS records) and the two
    passes of bounded memory (a larger run); the multi-attempt calls handed out all at once or a few at a time."""
    from analysis import callscan, exact

    monkeypatch.setattr(exact, "DIRECT_ROWS", 10**9 if direct else 0)
    if multi_rows:
        monkeypatch.setattr(callscan, "MULTI_ROWS", multi_rows)
    att = reference_attempts
    opts = Options(warmup_s=warmup, slo=SLO(ttft_ms=400.0, e2e_ms=2500.0, tpot_ms=30.0))
    whole = compute(att, opts, dropped=5)
    whole.pop("calls_frame")
    assert whole["overall"]["retries"] > 50 and len(whole["groups"]) >= 6  # retried calls, many groups
    scanned = compute_scan(frame_batches(att, rows), opts, dropped=5)
    assert _diff(finite(scanned), finite(whole)) == []


def test_lone_calls_whose_id_hashes_collide_with_retried_ones_give_the_same_figures(reference_attempts,
                                                                                    monkeypatch):
    """The call index looks retried calls up by 64-bit hashes of their ids: with hashes made to collide (one
    in four values), lone calls are taken for retried ones, and assembled as the one-attempt calls they are."""
    from analysis import callscan

    real = callscan._hashes
    monkeypatch.setattr(callscan, "_hashes", lambda ids: real(ids) % np.uint64(4))
    att = reference_attempts
    opts = Options(slo=SLO(ttft_ms=400.0))
    whole = compute(att, opts)
    whole.pop("calls_frame")
    idx = callscan.index_calls(frame_batches(att, 500), 0.0)
    assert idx.is_multi(att["call_id"]).mean() > 0.9  # nearly every call looked up as a retried one
    assert _diff(finite(compute_scan(frame_batches(att, 500), opts)), finite(whole)) == []


def test_calls_whose_attempts_are_far_apart_duplicated_or_alone(tmp_path):
    """Retries in other batches, a call id written twice as lone records, a lone second attempt, cancelled calls,
    stages that change within a second: the calls and every figure as the whole frame gives them."""
    rnd = random.Random(7)
    recs = []
    t = 1000.0
    for i in range(400):
        t += rnd.uniform(0.001, 0.02)
        cid = f"c{rnd.randrange(10**6):06d}"
        first = rnd.uniform(5, 400)
        chunks = sorted(first + rnd.uniform(0, 300) for _ in range(rnd.randrange(0, 6)))
        stage = 0 if t < 1003.5 else 1
        if i % 37 == 0:  # retried: the second attempt far later in the file
            recs.append(rec(cid, 1, t, 50.0, ok=False, kind="http_5xx", final=False, stage=stage))
            recs.append(rec(cid, 2, t + 2.0, first + 400, stream=True, first=first, chunks=chunks, out=len(chunks),
                            stage=stage))
            continue
        if i % 53 == 0:  # the same call id written twice, both as lone first attempts
            recs.append(rec(cid, 1, t, first + 100, stage=stage, out=3))
            recs.append(rec(cid, 1, t + 0.5, first + 90, stage=stage, out=4))
            continue
        if i % 61 == 0:  # a lone second attempt (its first was lost)
            recs.append(rec(cid, 2, t, first + 10, stage=stage, out=2))
            continue
        if i % 71 == 0:
            recs.append(rec(cid, 1, t, 5.0, ok=False, kind="cancelled", stage=stage))
            continue
        recs.append(rec(cid, 1, t, first + 500, stream=i % 2 == 0, first=first, chunks=chunks or None,
                        out=len(chunks) or 5, stage=stage, model="m" if i % 3 else "n"))
    recs.sort(key=lambda r: r["t_start"])  # file order: by start, so retries land in later batches
    att = load_records(write(tmp_path / "run", recs), LoadReport())
    for rows, warmup in ((13, 0.0), (50, 1.0), (4, 0.0)):
        opts = Options(warmup_s=warmup, slo=SLO(ttft_ms=200.0))
        whole = compute(att, opts)
        whole.pop("calls_frame")
        assert _diff(finite(compute_scan(frame_batches(att, rows), opts)), finite(whole)) == [], (rows, warmup)


def test_a_run_without_calls_is_empty(tmp_path):
    att = load_records(write(tmp_path / "run", [rec("a", 1, 10.0, 5.0)]), LoadReport())
    assert compute_scan(frame_batches(att.iloc[:0], 10), Options())["empty"] is True
    assert compute_scan(frame_batches(att, 10), Options(warmup_s=3600))["empty"] is True
    assert compute(att, Options(warmup_s=3600))["empty"] is True


@pytest.mark.parametrize("direct", [True, False], ids=["values-in-memory", "two-passes"])
def test_attempt_facts_in_batches_equal_pandas_over_the_whole_frame(reference_attempts, direct, monkeypatch):
    """In a pass of their own, and gathered in the metrics' pass (as the report does), with the schedule lag's
    values in memory or in two passes."""
    import numpy as np

    from analysis import exact
    from analysis.attempt_facts import FactsScan, attempt_facts, facts_of
    from analysis.callscan import index_calls

    monkeypatch.setattr(exact, "DIRECT_ROWS", 10**9 if direct else 0)
    att = reference_attempts.copy()
    att["schedule_lag_ms"] = np.where(np.arange(len(att)) % 3 == 0, np.nan, np.arange(len(att)) % 997 / 7.0)
    whole = facts_of(att)
    assert attempt_facts(frame_batches(att, 97, chunks=False)) == whole
    source = frame_batches(att, 97)
    for warmup in (0.0, 60.0):  # the metrics' pass cuts the warm-up's calls; the facts are of every record
        fscan = FactsScan(index_calls(source, warmup))
        compute_scan(source, Options(warmup_s=warmup), idx=fscan.idx, also=fscan)
        assert fscan.fed and fscan.finish(source) == whole
    answered = att["status"].notna() & att["endpoint"].ne("models")
    assert (whole.answered, whole.answered_with_id) == (int(answered.sum()),
                                                        int((answered & att["request_id"].notna()).sum()))
    assert whole.first_attempt_calls == att.loc[att["attempt"] == 1, "call_id"].nunique()
    lag = att["schedule_lag_ms"].dropna()
    assert whole.lag == {"p50": float(lag.median()), "p99": float(np.percentile(lag, 99)), "max": float(lag.max())}
    kinds = ("truncated", "reset", "timeout", "stream_error", "protocol", "http_5xx")
    maybe = att["error_kind"].isin(kinds) & ~(att["error_kind"].eq("http_5xx") & att["status"].isin((503, 529)))
    last = att.groupby("call_id")["attempt"].transform("max")
    assert whole.maybe_billed_retried_calls == att.loc[maybe & (att["attempt"] < last), "call_id"].nunique() > 0


def test_call_id_hashes_are_the_same_however_the_ids_are_held():
    """The index and each pass hash call ids: Arrow-held text (whole, sliced, in chunks), Python strings and
    non-text values give one hash per id, and distinct ids (of one length or a byte apart) distinct hashes."""
    import pandas as pd
    import pyarrow as pa

    from analysis.callscan import _WIDE, _hashes

    ids = [f"run-w{i % 3}-{i}" for i in range(100_000)] + ["", "a", "a\x00", "é", "x" * (_WIDE + 1),
                                                           "x" * (_WIDE + 2), "y" * _WIDE]
    held = pd.Series(ids, dtype=object)
    want = _hashes(held)
    assert len(set(want.tolist())) == len(ids)  # no two of these ids share a hash
    arrow = pd.Series(ids, dtype="string[pyarrow]")
    assert (_hashes(arrow) == want).all()
    assert (_hashes(arrow.iloc[7:]) == want[7:]).all()  # an Arrow slice: offsets from the slice's start
    chunked = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(
        [pa.array(ids[:5], pa.large_string()), pa.array(ids[5:], pa.large_string())], type=pa.large_string())))
    assert (_hashes(chunked) == want).all()
    assert _hashes(pd.Series([7, "7", None], dtype=object)).tolist()[:2] == _hashes(pd.Series(["7", "7"])).tolist()


@pytest.mark.parametrize("direct", [True, False], ids=["values-in-memory", "two-passes"])
def test_the_ttft_cdf_per_endpoint_is_numpys_over_each_endpoints_successful_calls(reference_attempts, direct,
                                                                                  monkeypatch):
    """What the report's TTFT CDF draws: per endpoint, numpy's percentiles at every level over the TTFT of its
    successful calls (the whole frame's calls), and nothing for an endpoint without one."""
    from analysis import exact
    from analysis.metrics_scan import CDF_LEVELS

    monkeypatch.setattr(exact, "DIRECT_ROWS", 10**9 if direct else 0)
    att = reference_attempts
    opts = Options(slo=SLO(ttft_ms=400.0))
    calls = compute(att, opts)["calls_frame"]
    figures: dict = {}
    compute_scan(frame_batches(att, 333), opts, figures=figures)
    ok = calls[calls["ok"].astype(bool)]
    want = {name: grp["ttft_ms"].dropna().to_numpy(dtype=float) for name, grp in ok.groupby("endpoint")}
    want = {name: v for name, v in want.items() if v.size}
    assert len(want) >= 2
    cdfs = figures["ttft_cdf"]
    assert sorted(cdfs) == sorted(want)
    for name, (values, levels, n) in cdfs.items():
        assert n == want[name].size
        assert values.tolist() == np.percentile(want[name], CDF_LEVELS).tolist()
        assert levels.tolist() == (np.array(CDF_LEVELS) / 100.0).tolist()
