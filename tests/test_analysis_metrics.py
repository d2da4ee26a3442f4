"""Metrics on small hand-built record sets, checked against hand-computed values; bad inputs; gates; compare."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from analysis.load import LoadReport
from analysis.metrics import SLO, Options, compute
from analysis.records import load_records
from analysis.report import analyze
from locustfiles.records import encode_chunks

from .runs import ttbench

pytestmark = pytest.mark.timeout(60)


def rec(call: str, attempt: int, t: float, end: float, ok: bool = True, stream: bool = False,
        first: float | None = None, chunks: list[float] | None = None, out: int = 0, inp: int = 10,
        kind: str | None = None, final: bool = True, **kw) -> dict:
    r = {"v": 1, "run_id": "r", "worker": 0, "attempt_id": f"{call}-a{attempt}", "call_id": call,
         "attempt": attempt, "final": final, "idempotency_key": call, "request_id": f"req-{call}-{attempt}",
         "original_request_id": None, "replayed": False, "endpoint": "chat", "model": "m", "stream": stream,
         "stream_format": "sse" if stream else None, "dry_run": False, "pair_id": None, "session_id": None,
         "turn": None, "name": "chat", "t_start": t, "scheduled": None, "schedule_lag_ms": None, "stage": None,
         "headers_ms": 5.0, "first_event_ms": first, "first_content_ms": first, "first_text_ms": first,
         "first_tool_ms": None, "first_reasoning_ms": None, "end_ms": end,
         "chunks": encode_chunks([t + c / 1000 for c in chunks], t) if chunks else None,
         "status": 200 if ok else 500, "ok": ok, "error_kind": kind, "error": None,
         "usage": {"input": inp, "output": out, "cached_input": 0, "cache_write": 0, "reasoning": 0} if ok else None}
    r.update(kw)
    return r


RECORDS = [
    rec("A", 1, 100.0, 250, stream=True, first=50, chunks=[50, 70, 100, 150], out=5),
    rec("B", 1, 101.0, 20, ok=False, kind="http_5xx", final=False),
    rec("B", 2, 101.5, 140, stream=True, first=40, chunks=[40, 60], out=1),
    rec("C", 1, 102.0, 300, out=8),
    rec("D", 1, 103.0, 1000, ok=False, kind="timeout"),
    rec("E", 1, 103.5, 100, ok=False, kind="cancelled"),
]


def write(path: Path, records: list[dict], extra: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + extra)
    return path


def test_every_metric_against_hand_computed_values(tmp_path):
    att = load_records(write(tmp_path / "records.jsonl", RECORDS))
    m = compute(att, Options(slo=SLO(ttft_ms=100)))
    o = m["overall"]
    assert m["duration_s"] == pytest.approx(4.0)  # first start 100.0 to the last byte 104.0
    assert (o["calls"], o["attempts"], o["successes"], o["failures"], o["cancelled_calls"]) == (4, 6, 3, 1, 1)
    assert o["errors"] == {"http_5xx": 1, "timeout": 1} and o["retries"] == 1
    assert o["error_rate"] == pytest.approx(0.25)
    assert o["requests_per_s"] == pytest.approx(0.75)
    # TTFT of a logical call runs from its first attempt's start: B = 500 + 40
    assert o["ttft_ms"]["n"] == 2 and o["ttft_ms"]["p50"] == pytest.approx(295) and o["ttft_ms"]["max"] == 540
    assert o["ttft_first_attempt_ms"]["n"] == 1 and o["ttft_first_attempt_ms"]["p50"] == 50
    # ITL: gaps between content chunks, pooled [20, 30, 50, 20] and per request [33.33, 20]
    assert o["itl_ms"]["n"] == 4 and o["itl_ms"]["p50"] == pytest.approx(25) and o["itl_ms"]["max"] == 50
    assert o["itl_per_request_mean_ms"]["mean"] == pytest.approx((100 / 3 + 20) / 2)
    # TPOT = (E2E - TTFT) / (output tokens - 1): A only, B has one output token
    assert o["tpot_ms"]["n"] == 1 and o["tpot_ms"]["p50"] == pytest.approx(50)
    assert o["e2e_ms"]["n"] == 3 and o["e2e_ms"]["p50"] == 300 and o["e2e_ms"]["max"] == 640
    assert o["e2e_ms"]["mean"] == pytest.approx((250 + 640 + 300) / 3)
    assert sorted([o["e2e_first_attempt_ms"]["p50"]]) == [275]
    assert o["output_tokens"] == 14 and o["output_tokens_per_s"] == pytest.approx(3.5)
    assert o["input_tokens_per_s"] == pytest.approx(30 / 4)
    per_req = o["output_tokens_per_s_per_request"]
    assert per_req["n"] == 3 and per_req["max"] == pytest.approx(8 / 0.3)
    # goodput: A (TTFT 50) and C (no TTFT) meet the SLO; B (540) does not; D failed
    assert o["goodput_per_s"] == pytest.approx(0.5) and o["goodput_share"] == pytest.approx(0.5)
    assert set(m["groups"]) == {"chat m stream", "chat m plain"}
    assert m["groups"]["chat m stream"]["calls"] == 2
    assert [t["calls"] for t in m["timeseries"]] == [1, 1, 1, 1]




def test_warmup_setting(tmp_path):
    att = load_records(write(tmp_path / "records.jsonl", RECORDS))
    m = compute(att, Options(warmup_s=1.5))
    assert m["overall"]["calls"] == 2  # A (100.0) and B (first attempt 101.0) started in the warm-up


def test_torn_last_line_is_read_up_to_it(tmp_path):
    report = LoadReport()
    att = load_records(write(tmp_path / "records.jsonl", RECORDS, extra='{"v": 1, "run_id": "r", "wor'), report)
    assert len(att) == len(RECORDS) and report.torn_lines == 1
    assert "torn" in report.warnings[0]
    (tmp_path / "scenario.yaml").write_text("name: torn\n")
    res = ttbench("report", str(tmp_path))
    assert res.returncode == 0 and "torn" in res.stderr


def test_an_empty_run_gets_a_report_that_says_so(tmp_path):
    (tmp_path / "records.jsonl").write_text("")
    summary, code = analyze(tmp_path)
    assert code == 0 and summary["empty"]
    assert "no completed calls" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.html").exists() and json.loads((tmp_path / "summary.json").read_text())["empty"]


def test_gates_breached_exit_1_and_bad_gates_exit_2(tmp_path):
    write(tmp_path / "records.jsonl", RECORDS)
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump({"name": "g", "gates": {
        "ttft_p95_ms": {"max": 100, "min_samples": 2}, "error_rate": {"max": 0.5, "min_samples": 4},
        "goodput_share": {"min": 0.9, "min_samples": 1}}, "analysis": {"slo": {"ttft_ms": 100}}}))
    res = ttbench("report", str(tmp_path))
    assert res.returncode == 1
    assert "gate breached: ttft_p95_ms" in res.stderr and "gate breached: goodput_share" in res.stderr
    assert "error_rate" not in res.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {g["gate"]: g["ok"] for g in summary["gates"]} == {"ttft_p95_ms": False, "error_rate": True,
                                                               "goodput_share": False}
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump({"gates": {"ttft_p95": 100}}))
    res = ttbench("report", str(tmp_path))
    assert res.returncode == 2 and "gates.ttft_p95: unknown gate" in res.stderr


def _gates(tmp_path: Path, gates: dict) -> tuple[dict, int]:
    write(tmp_path / "records.jsonl", RECORDS)
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump({"name": "g", "gates": gates}))
    summary, code = analyze(tmp_path)
    return {g["gate"]: g for g in summary["gates"]}, code


def test_a_gate_over_too_few_samples_is_not_enough_data(tmp_path):
    # 2 TTFT samples (A 50, B 540: p95 515.5) and 4 calls: below every default minimum
    gates, code = _gates(tmp_path, {"ttft_p95_ms": 100, "ttft_p50_ms": 100, "error_rate": 0.1})
    assert code == 0
    t = gates["ttft_p95_ms"]
    assert t["ok"] and t["insufficient"] and (t["n"], t["min_samples"]) == (2, 20)
    assert t["value"] == pytest.approx(515.5) and "not enough data" in t["reason"]
    assert (gates["ttft_p50_ms"]["n"], gates["ttft_p50_ms"]["min_samples"]) == (2, 10)
    assert (gates["error_rate"]["n"], gates["error_rate"]["min_samples"]) == (4, 20)
    assert gates["error_rate"]["ok"] and gates["error_rate"]["insufficient"]
    assert "not enough data" in (tmp_path / "report.md").read_text()
    # told to fail then: for all gates, or for one
    gates, code = _gates(tmp_path, {"ttft_p95_ms": 1e9, "error_rate": 1.0, "fail_on_insufficient": True})
    assert code == 1 and not gates["ttft_p95_ms"]["ok"] and gates["ttft_p95_ms"]["insufficient"]
    assert not gates["error_rate"]["ok"]
    gates, code = _gates(tmp_path, {"ttft_p95_ms": {"max": 1e9, "fail_on_insufficient": True}, "error_rate": 1.0})
    assert code == 1 and not gates["ttft_p95_ms"]["ok"] and gates["error_rate"]["ok"]
    # a minimum of its own: judged on 2 samples, and exactly at the minimum
    gates, code = _gates(tmp_path, {"ttft_p95_ms": {"max": 500, "min_samples": 2}, "error_rate": {"max": 0.2,
                                                                                                  "min_samples": 4}})
    assert code == 1 and not gates["ttft_p95_ms"]["insufficient"] and not gates["ttft_p95_ms"]["ok"]
    assert not gates["error_rate"]["ok"] and gates["error_rate"]["value"] == pytest.approx(0.25)
    # no value at all still fails (a gate on a figure the run does not have)
    gates, code = _gates(tmp_path, {"billing_accuracy": 1.0})
    assert code == 1 and not gates["billing_accuracy"]["ok"]


@pytest.mark.parametrize(("gates", "message"), [
    ({"ttft_p95_ms": {"max": 1, "min_sample": 5}}, "gates.ttft_p95_ms.min_sample: unknown key"),
    ({"ttft_p95_ms": {"min": 1}}, "gates.ttft_p95_ms.min: this gate is a maximum"),
    ({"goodput_share": {"min_samples": 5}}, "gates.goodput_share: no threshold"),
    ({"ttft_p95_ms": {"max": 1, "min_samples": -1}}, "gates.ttft_p95_ms.min_samples: expected a whole number"),
    ({"ttft_p95_ms": {"max": 1, "fail_on_insufficient": "yes"}}, "fail_on_insufficient: expected true or false"),
    ({"fail_on_insufficient": 1}, "gates.fail_on_insufficient: expected true or false"),
    ({"ttft_p95_ms": {"max": "fast"}}, "gates.ttft_p95_ms.max: expected a number"),
])
def test_bad_gate_settings_are_one_line_errors(tmp_path, gates, message):
    from analysis.load import InputError

    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        _gates(tmp_path, gates)


def _run(folder: Path, ttft_mean: float, n: int = 300, seed: int = 1) -> Path:
    rng = random.Random(seed)
    folder.mkdir()
    recs = []
    for i in range(n):
        first = max(1.0, rng.gauss(ttft_mean, ttft_mean / 10))
        recs.append(rec(f"c{i}", 1, 100 + i * 0.1, first + 200, stream=True, first=first,
                        chunks=[first, first + 50, first + 100], out=10))
    write(folder / "records.jsonl", recs)
    return folder


def test_compare_flags_a_regression_with_a_confidence_interval(tmp_path):
    base = _run(tmp_path / "base", 50)
    same = _run(tmp_path / "same", 50, seed=2)
    slow = _run(tmp_path / "slow", 80, seed=3)
    ok = ttbench("compare", str(base), str(same))
    assert ok.returncode == 0, ok.stdout
    assert "regressions: none" in ok.stdout
    bad = ttbench("compare", str(base), str(slow))
    assert bad.returncode == 1
    line = next(ln for ln in bad.stdout.splitlines() if ln.startswith("ttft_p95_ms"))
    assert "REGRESSION" in line and "[" in line
    missing = ttbench("compare", str(base), str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no records.jsonl" in missing.stderr
