"""One definition of each figure, shared by the live LLM tab, Locust's rows and the report; attempt counts; stage
settle windows and the drain; the sweep's early stop; harness health per worker. All against hand-computed values."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.capacity import early_stop_verdict
from analysis.load import InputError
from analysis.metrics import Options, compute
from analysis.records import load_records
from analysis.report import analyze
from analysis.settings import check_analysis
from locustfiles.live import Live
from ttformats.calls import call_output_tps, call_tpot_ms, call_ttft_ms

from .test_analysis_metrics import rec, write

pytestmark = pytest.mark.timeout(60)


def v2(r: dict, sent: bool = True) -> dict:
    """A version-2 record."""
    return r | {"v": 2, "sent": sent, "ids": None, "dry_run_ignored": False, "framing_mismatch": False}


# A: at once. B: retried after a 5xx, its second attempt 0.5 s after the first. R: its stream cut after it was
# billed, retried 0.4 s later and answered by the gateway's replay (frames in one burst: 9 tokens in 3 ms).
# C: at once. X: a 429, then cut by the run's stop while it waited to retry (the unsent `cancelled` marker).
RECORDS = [
    v2(rec("A", 1, 100.0, 250, stream=True, first=50, chunks=[50, 70, 100, 150, 250], out=5)),
    v2(rec("B", 1, 101.0, 20, ok=False, kind="http_5xx", final=False)),
    v2(rec("B", 2, 101.5, 140, stream=True, first=40, chunks=[40, 60, 100], out=3)),
    v2(rec("R", 1, 102.0, 90, ok=False, kind="truncated", final=False, stream=True)),
    v2(rec("R", 2, 102.4, 8, stream=True, first=5, chunks=[5, 5, 6, 6, 7, 7, 8, 8, 8], out=9, replayed=True)),
    v2(rec("C", 1, 103.0, 480, stream=True, first=80, chunks=[80, 180, 280, 380, 480], out=5)),
    v2(rec("X", 1, 104.0, 10, ok=False, kind="http_429", final=False)),
    v2(rec("X", 2, 104.5, 0, ok=False, kind="cancelled"), sent=False),
]
TTFT = [50.0, 540.0, 405.0, 80.0]  # A; B 500 + 40; R 400 + 5 (a replay's TTFT is the call's wait); C
TPOT = [50.0, 50.0, 100.0]  # A (250-50)/4; B (140-40)/2; C (480-80)/4; R's (8-5)/8 left out
ITL = [20.0, 30.0, 50.0, 100.0, 20.0, 40.0, 100.0, 100.0, 100.0, 100.0]  # A, B, C; R's burst left out


def _pct(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics, by hand."""
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (k - lo)


def test_ttft_is_one_figure_in_the_live_tab_locusts_rows_and_the_report(tmp_path):
    assert _pct(TTFT, 50) == pytest.approx(242.5) and _pct(TTFT, 95) == pytest.approx(519.75)
    # the live LLM tab, fed the records one by one as the master receives them
    live = Live()
    for r in RECORDS:
        live.add(r)
    assert sorted(live.overall.ttft) == pytest.approx(sorted(TTFT))
    snap = live.snapshot()
    assert snap["ttft_p50"] == pytest.approx(242.5) and snap["ttft_p95"] == pytest.approx(519.75)
    assert live.rows()[0]["ttft_p50"] == "242.5"
    assert sorted(g / 1000 for g in live.overall.itl) == pytest.approx(sorted(ITL))
    # Locust's TTFT rows: the runtime's formula over each call's attempts (first and last)
    by_call: dict[str, list[dict]] = defaultdict(list)
    for r in RECORDS:
        by_call[r["call_id"]].append(r)
    rows = [call_ttft_ms(rs[0]["t_start"], rs[-1]["t_start"], rs[-1]["first_content_ms"])
            for rs in by_call.values() if rs[-1]["ok"] and rs[-1]["first_content_ms"] is not None]
    assert sorted(rows) == pytest.approx(sorted(TTFT))
    # the report
    m = compute(load_records(write(tmp_path / "records.jsonl", RECORDS)), Options())
    calls = m["calls_frame"]
    assert sorted(calls["ttft_ms"].dropna()) == pytest.approx(sorted(TTFT))
    o = m["overall"]
    assert (o["ttft_ms"]["p50"], o["ttft_ms"]["p95"]) == (pytest.approx(242.5), pytest.approx(519.75))
    assert o["itl_ms"]["n"] == len(ITL) and o["itl_ms"]["p50"] == pytest.approx(_pct(ITL, 50))


def test_tpot_and_tokens_per_second_leave_replays_out(tmp_path):
    assert call_tpot_ms(50.0, 250.0, 5, False) == 50.0 and np.isnan(call_tpot_ms(5.0, 8.0, 9, True))
    assert np.isnan(call_tpot_ms(40.0, 140.0, 1, False))  # one token: no time per output token
    assert call_output_tps(5, 250.0, False) == 20.0 and np.isnan(call_output_tps(9, 8.0, True))
    o = compute(load_records(write(tmp_path / "records.jsonl", RECORDS)), Options())["overall"]
    assert o["tpot_ms"]["n"] == 3 and o["tpot_ms"]["p50"] == 50.0 and o["tpot_ms"]["max"] == 100.0
    assert o["tpot_ms"]["mean"] == pytest.approx(200 / 3)
    per_call = o["output_tokens_per_s_per_request"]  # A 5/0.25 s, B 3/0.14 s, C 5/0.48 s; not R's 9/0.008 s
    assert per_call["n"] == 3 and per_call["max"] == pytest.approx(3 / 0.14)
    assert per_call["mean"] == pytest.approx((20 + 3 / 0.14 + 5 / 0.48) / 3)


def test_attempt_counts_leave_the_cancelled_marker_out(tmp_path):
    o = compute(load_records(write(tmp_path / "records.jsonl", RECORDS)), Options())["overall"]
    # 8 records, one of them the marker: 7 attempts, retries B2 and R2 (X2 was never sent)
    assert (o["attempts"], o["retries"], o["cancelled_calls"], o["calls"]) == (7, 2, 1, 4)
    assert o["errors"] == {"http_5xx": 1, "truncated": 1, "http_429": 1}
    live = Live()
    for r in RECORDS:
        live.add(r)
    assert live.attempts == 7 and live.snapshot()["retries"] == 2 and live.snapshot()["cancelled"] == 1
    # version 1 records have no `sent`: every record counts as sent, the marker too
    v1 = [{k: v for k, v in r.items() if k not in ("sent", "ids", "dry_run_ignored", "framing_mismatch")}
          | {"v": 1} for r in RECORDS]
    o1 = compute(load_records(write(tmp_path / "v1.jsonl", v1)), Options())["overall"]
    assert (o1["attempts"], o1["retries"]) == (8, 3)
    live1 = Live()
    for r in v1:
        live1.add(r)
    assert live1.attempts == 8 and live1.snapshot()["retries"] == 3


# --- stages: the settle window and the drain ---

def _stage_run(folder: Path, scenario: dict, calls: list[tuple[float, int, float]],
               harness: dict | None = None) -> dict:
    """A run of (seconds into the run, stage, TTFT ms) streamed calls, each 200 ms past its first token."""
    folder.mkdir(exist_ok=True)
    recs = [v2(rec(f"c{i}", 1, 1000.0 + t, ttft + 200, stream=True, first=ttft, chunks=[ttft, ttft + 200], out=3,
                   stage=stage)) for i, (t, stage, ttft) in enumerate(calls)]
    write(folder / "records.jsonl", recs)
    (folder / "scenario.yaml").write_text(yaml.safe_dump({"name": "stages", **scenario}))
    if harness is not None:
        (folder / "harness.json").write_text(json.dumps(harness))
    summary, _ = analyze(folder)
    return summary


TWO_STAGES = {"stages": [{"duration": "10s", "rate": 1}, {"duration": "10s", "rate": 1}]}
# stage 0: a call a second, the first two (its first 2 s) slow; stage 1 likewise, then two calls in the drain
STAGED = ([(0, 0, 5000.0), (1, 0, 5000.0)] + [(t, 0, 100.0) for t in range(2, 10)]
          + [(10, 1, 9000.0), (11, 1, 9000.0)] + [(t, 1, 200.0 + 10 * (t - 12)) for t in range(12, 20)]
          + [(20.5, 1, 7000.0), (21.0, 1, 7000.0)])


def test_a_stage_leaves_out_its_settle_window_and_the_last_its_drain(tmp_path):
    cap = _stage_run(tmp_path / "run", TWO_STAGES, STAGED)["capacity"]
    s0, s1 = cap["stages"]
    assert s0["excluded"] == {"settle": 2, "drain": 0} and s1["excluded"] == {"settle": 2, "drain": 2}
    assert s0["calls"] == 8 and s0["ttft_p95_ms"] == 100.0
    # stage 1 keeps 200, 210, ..., 270: p95 = 260 + 0.65 * 10
    assert s1["calls"] == 8 and s1["ttft_p95_ms"] == pytest.approx(266.5)
    assert s0["served_share"] == pytest.approx(8 / 8) and s0["achieved_rps"] == pytest.approx(8 / 8)
    assert cap["definitions"]["settle_s"] == 2.0
    md = (tmp_path / "run" / "report.md").read_text()
    assert "calls excluded: first 2 s / drain" in md and "| 266.5 | 466.5 | 1 | 2 / 2 |" in md
    # without a settle window the transient is in the figures
    cap0 = _stage_run(tmp_path / "run0", {**TWO_STAGES, "analysis": {"settle_s": 0}}, STAGED)["capacity"]
    assert cap0["stages"][1]["calls"] == 10 and cap0["stages"][1]["ttft_p95_ms"] > 4000
    assert cap0["stages"][1]["excluded"] == {"settle": 0, "drain": 2}


@pytest.mark.parametrize(("analysis", "message"), [
    ({"settle_s": -1}, "analysis.settle_s: out of range"),
    ({"settle_s": "2s"}, "analysis.settle_s: expected a number"),
    ({"early_stop": {"served_share": 0.9}}, "analysis.early_stop.served_share: unknown key"),
    ({"early_stop": {"served_share_below": 1.5}}, "analysis.early_stop.served_share_below: out of range"),
    ({"early_stop": {"ttft_p95_growth": 0.5}}, "analysis.early_stop.ttft_p95_growth: out of range"),
    ({"early_stop": {"consecutive": 0}}, "analysis.early_stop.consecutive: expected a whole number"),
    ({"early_stop": {"consecutive": 1.5}}, "analysis.early_stop.consecutive: expected a whole number"),
    ({"early_stop": "yes"}, "analysis.early_stop: expected false or a mapping"),
])
def test_bad_settle_and_early_stop_settings_are_one_line_errors(analysis, message):
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        check_analysis(analysis)


def test_good_early_stop_settings_pass():
    for rule in (False, True, {"served_share_below": 0.9, "ttft_p95_growth": 2.0, "consecutive": 2},
                 {"served_share_below": None, "ttft_p95_growth": 3}):
        check_analysis({"early_stop": rule, "settle_s": 2.5})


# --- the sweep's early stop ---

RULE = {"served_share_below": 0.9, "ttft_p95_growth": 2.0, "consecutive": 2}


def st(share: float | None, p95: float | None) -> dict:
    return {"served_share": share, "ttft_p95_ms": p95}


@pytest.mark.parametrize(("stages", "rule", "where"), [
    ([st(1.0, 100), st(0.95, 150), st(0.85, 160), st(0.7, 170)], RULE, 3),  # shares below 0.9 at 2 and 3
    ([st(1.0, 100), st(1.0, 250), st(1.0, 600), st(1.0, 700)], RULE, 2),  # TTFT p95 x2.5, then x2.4
    ([st(1.0, 100), st(0.8, 150), st(1.0, 400)], RULE, 2),  # a low share, then a jump: either criterion counts
    ([st(0.8, 100), st(1.0, 110), st(0.8, 120), st(1.0, 130)], RULE, None),  # never twice in a row
    ([st(0.9, 100), st(0.9, 200), st(0.9, 400)], RULE, None),  # at the limits exactly: not saturated
    ([st(1.0, 100), st(0.5, 100)], RULE | {"consecutive": 1}, 1),
    ([st(1.0, None), st(1.0, 500), st(1.0, 1100)], RULE | {"consecutive": 1}, 2),  # no p95 before: no growth
    ([st(0.1, 100), st(0.1, 100)], {"served_share_below": None, "ttft_p95_growth": 2.0, "consecutive": 1}, None),
    ([st(0.1, 100), st(0.1, 100)], None, None),  # no rule: never
])
def test_early_stop_verdict(stages, rule, where):
    verdict = early_stop_verdict(stages, rule)
    if where is None:
        assert verdict is None
    else:
        assert verdict is not None and verdict[0] == where and f"stage {where}" in verdict[1]


FOUR_STAGES = {"stages": [{"duration": "10s", "rate": r} for r in (1, 2, 4, 8)]}


def test_stages_a_sweep_never_ran_are_not_saturated(tmp_path):
    calls = [(t, 0, 100.0) for t in range(10)] + [(10 + t / 2, 1, 150.0) for t in range(20)] + \
        [(20.0, 2, 900.0), (20.5, 2, 900.0)]  # stage 2 ran only until the stop took effect
    harness = {"early_stop": {"stage": 1, "reason": "stage 0: x; stage 1: y"}}
    summary = _stage_run(tmp_path / "run", FOUR_STAGES, calls, harness)
    cap = summary["capacity"]
    assert [s["ran"] for s in cap["stages"]] == [True, True, False, False]
    assert [s["served_share"] for s in cap["stages"][2:]] == [None, None]
    assert cap["early_stop"] == {"stage": 1, "reason": "stage 0: x; stage 1: y", "stages_not_run": [2, 3]}
    assert cap["max_sustainable_rps"] == 2  # stage 1 served 16 of its 16 offered calls after the settle window
    md = (tmp_path / "run" / "report.md").read_text()
    assert "the sweep stopped early after stage 1: stage 0: x; stage 1: y" in md and "not run" in md
    # a run that ended in stage 1 without the rule: stages 2 and 3 never started
    cap = _stage_run(tmp_path / "cut", FOUR_STAGES, calls[:-2])["capacity"]
    assert [s["ran"] for s in cap["stages"]] == [True, True, False, False] and cap["early_stop"] is None


# --- harness health per worker ---

WORKER_RECORDS = [v2(rec(f"w{i}", 1, 100.0 + i, 100, worker=i % 2)) for i in range(4)]


def _harness(tmp_path: Path, peaks: tuple[float, float]) -> dict:
    (tmp_path / "scenario.yaml").write_text("name: workers\n")
    write(tmp_path / "records.jsonl", WORKER_RECORDS)
    (tmp_path / "harness.json").write_text(json.dumps({
        "cpu_s": 1.0, "wall_s": 10.0, "peak_worker_cpu_percent": max(peaks),
        "workers": [{"client_id": f"host-{i}", "worker_index": i, "records": 2, "cpu_percent_mean": peaks[i] / 2,
                     "cpu_percent_peak": peaks[i], "arrivals": {"offered": 10, "dropped": i}} for i in (0, 1)],
        "resplits": [{"at": 1000.0, "from_t": 0.0, "workers": 2, "ranks": {"0": 0, "1": 1}},
                     {"at": 1010.0, "from_t": 11.5, "workers": 1, "ranks": {"0": 0}}],
        "lost_workers": [{"client_id": "host-1", "worker_index": 1, "lost_at": 1010.0, "last_shipment_at": 1009.5,
                          "records_received": 2, "possibly_missing_records": 4}]}))
    summary, _ = analyze(tmp_path)
    return summary


def test_a_worker_at_90_percent_cpu_makes_the_harness_the_bottleneck(tmp_path):
    summary = _harness(tmp_path, (95.0, 40.0))
    h = summary["harness"]
    assert summary["version"] == 4
    assert h["client_cpu_percent"] == pytest.approx(10.0) and h["peak_worker_cpu_percent"] == 95.0
    assert [(w["worker_index"], w["cpu_percent_peak"]) for w in h["workers"]] == [(0, 95.0), (1, 40.0)]
    assert "worker 0 CPU peaked at 95% of a core" in h["bottleneck_warning"]
    assert "worker 1" not in h["bottleneck_warning"]
    md = (tmp_path / "report.md").read_text()
    assert "| worker 0 CPU mean / peak, records, arrivals offered / dropped | 47.5 % / 95.0 % (BOTTLENECK), 2, 10 / 0 |" \
        in md
    assert "| worker 1 CPU mean / peak, records, arrivals offered / dropped | 20.0 % / 40.0 %, 2, 10 / 1 |" in md
    assert "arrivals re-split at +11.5 s | 1 workers (worker 0 → 0)" in md
    assert "worker 1 LOST | client host-1; last shipment at 00:16:49 UTC; up to 4 records may be missing" in md
    assert "was the bottleneck" in md


def test_workers_below_90_percent_are_no_bottleneck(tmp_path):
    h = _harness(tmp_path, (89.9, 85.0))["harness"]
    assert h["bottleneck_warning"] is None and h["peak_worker_cpu_percent"] == 89.9
