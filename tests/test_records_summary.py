"""Summary timing (records.timing: summary): record sizes, per-call gap figures against the simulator's truth and
by hand, the same calls analysed from full and from summary records, and earlier record versions still read."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from analysis.report import analyze
from locustfiles.records import RECORD_VERSION, decode_chunks, record_schema, summarise
from locustfiles.scenario import ScenarioError, parse_scenario
from ttformats.records import expand

from .runs import jsonl, records, ttbench, ttbench_together, write_scenario

pytestmark = pytest.mark.timeout(180)

CHUNKS = 32
#: 32 content chunks a call, 50 ms apart (20 tokens/s), so a client's receive gaps follow the writes closely
SIM = {"defaults": {"chat": {"base_ms": 40, "ttft_jitter_ms": 0, "prefill_ms_per_token": 0,
                             "decode_tokens_per_s": 20, "slowdown_at_full": 0, "slots": 64, "queue": 64,
                             "output_tokens": {"min": CHUNKS, "max": CHUNKS}}}}
SCENARIO = {
    "name": "summary-timing", "seed": 11, "target": "sim", "sim": {"config": SIM}, "users": 6, "spawn_rate": 6,
    "duration": "6s", "stop_timeout": "10s",
    "defaults": {"prompt_tokens": 20, "output_tokens": CHUNKS},
    "mix": [{"endpoint": "chat", "weight": 3, "models": ["gpt-4o-mini"], "stream": 1.0},
            {"endpoint": "chat", "weight": 1, "models": ["gpt-4o-mini"], "stream": 0.0}],
}
#: the figures a summary record keeps in `chunks`, besides n
GAP_KEYS = ("first_us", "sum_us", "p50_us", "p99_us", "max_us", "max_at")


def _args(tmp: Path, name: str, **extra: Any) -> tuple[str, ...]:
    scenario = write_scenario(tmp / f"{name}.yaml", {**SCENARIO, **extra})
    return ("run", str(scenario), "--out", str(tmp / name))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A run in summary timing (alone: its figures are checked against the simulator's clock), and two in full
    timing side by side: the same scenario, and with an overhead section (the per-chunk overhead figures)."""
    tmp = tmp_path_factory.mktemp("summary-timing")
    res = ttbench(*_args(tmp, "summary", records={"timing": "summary"}))
    assert res.returncode == 0, res.stderr[-2000:]
    for res in ttbench_together(_args(tmp, "full"), _args(tmp, "overhead", overhead={"marker": True})):
        assert res.returncode == 0, res.stderr[-2000:]
    return {name: tmp / name for name in ("summary", "full", "overhead")}


def _lines(run: Path) -> list[bytes]:
    return [line for line in (run / "records.jsonl").read_bytes().splitlines() if line]


def _streamed(run: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """(line, record) of the successful streams of CHUNKS chunks."""
    out = []
    for line in _lines(run):
        rec = json.loads(line)
        if rec.get("stream") and (rec.get("chunks") or {}).get("n") == CHUNKS and rec.get("error_kind") is None:
            out.append((line, rec))
    return out


def _percentile(xs: list[int], q: float) -> float:
    """The linear-interpolation percentile, by hand."""
    s = sorted(xs)
    h = (len(s) - 1) * q / 100.0
    lo = math.floor(h)
    return s[lo] + (h - lo) * (s[min(lo + 1, len(s) - 1)] - s[lo])


def _by_hand(rec: dict[str, Any]) -> dict[str, Any]:
    """A full record's gap figures computed here from its decoded chunk times (whole microseconds)."""
    times_us = [round(ms * 1000) for ms in decode_chunks(rec["chunks"])]
    deltas = [times_us[0]] + [b - a for a, b in zip(times_us, times_us[1:], strict=False)]
    gaps = deltas[1:]
    return {"n": len(deltas), "first_us": deltas[0], "sum_us": sum(gaps), "p50_us": _percentile(gaps, 50),
            "p99_us": _percentile(gaps, 99), "max_us": max(gaps), "max_at": gaps.index(max(gaps))}


# --- the scenario key ---------------------------------------------------------------------------------------------

def test_records_timing_is_checked(tmp_path):
    base = {"name": "x", "target": "sim", "mix": [{"endpoint": "chat"}]}
    assert parse_scenario(base, "s.yaml").record_timing == "full"
    assert parse_scenario({**base, "records": {"timing": "summary"}}, "s.yaml").record_timing == "summary"
    with pytest.raises(ScenarioError, match=r"^s\.yaml: records\.timing: unknown timing 'brief' "):
        parse_scenario({**base, "records": {"timing": "brief"}}, "s.yaml")
    with pytest.raises(ScenarioError, match=r"^s\.yaml: records\.keep: unknown key"):
        parse_scenario({**base, "records": {"keep": 1}}, "s.yaml")


# --- a real run in summary timing ---------------------------------------------------------------------------------

def test_summary_records_are_a_quarter_of_full_ones_or_less(runs):
    full = [len(line) for line, _ in _streamed(runs["full"])]
    summ = [len(line) for line, _ in _streamed(runs["summary"])]
    assert len(full) >= 10 and len(summ) >= 10
    assert max(summ) <= 0.25 * min(full), (max(summ), min(full))
    # and call by call: each full record of the run against its own summary record
    for line, rec in _streamed(runs["full"]):
        assert len(json.dumps(summarise(rec), separators=(",", ":"))) <= 0.25 * len(line)


def test_summary_records_follow_the_schema_and_keep_no_chunk_times(runs):
    validator = jsonschema.Draft202012Validator(record_schema())
    recs = records(runs["summary"])
    for rec in recs:
        validator.validate(rec)
        assert rec["v"] == RECORD_VERSION == 5
        assert "us" not in (rec.get("chunks") or {}) and "usage_raw" not in rec and "run_id" not in rec
    assert any(not r.get("stream") for r in recs)  # plain calls too


@pytest.mark.serial  # receive times against write times: runs alone (make test)
def test_summary_figures_match_the_simulators_writes(runs):
    """Each streamed call's kept figures against when the simulator wrote its chunks (the same clock): the
    receive times lag the writes by a few ms (more on a loaded machine, hence medians over the calls)."""
    truth = {e["request_id"]: e for e in jsonl(runs["summary"] / "truth.jsonl")}
    errors: dict[str, list[float]] = {"first": [], "sum": [], "p50": [], "max": []}
    for _, rec in _streamed(runs["summary"]):
        c = rec["chunks"]
        entry = truth[rec["request_id"]]
        written = [t for t, n in zip(entry["chunk_times"], entry["chunk_tokens"], strict=True) if n > 0]
        assert len(written) == c["n"] == CHUNKS
        gaps_ms = [(b - a) * 1000.0 for a, b in zip(written, written[1:], strict=False)]
        errors["first"].append(rec["t_start"] * 1000.0 + c["first_us"] / 1000.0 - written[0] * 1000.0)
        errors["sum"].append(c["sum_us"] / 1000.0 - (written[-1] - written[0]) * 1000.0)
        errors["p50"].append(c["p50_us"] / 1000.0 - _percentile(gaps_ms, 50))
        errors["max"].append(c["max_us"] / 1000.0 - max(gaps_ms))
        assert abs(c["first_us"] / 1000.0 - rec["first_content_ms"]) < 0.0015  # the same anchor, to the µs
        assert 0 < c["p50_us"] <= c["p99_us"] <= c["max_us"] and 0 <= c["max_at"] < CHUNKS - 1
        assert c["sum_us"] >= c["max_us"] and c["sum_us"] <= c["max_us"] * (CHUNKS - 1)
    assert len(errors["first"]) >= 10
    assert min(errors["first"]) > -1.0  # never received before it was written
    for name, errs in errors.items():
        errs.sort()
        assert abs(errs[len(errs) // 2]) < 5.0, (name, errs)
    assert 45.0 < sorted(r["chunks"]["p50_us"] for _, r in _streamed(runs["summary"]))[0] / 1000.0  # 50 ms gaps


def test_the_summary_report_says_what_it_cannot_give(runs):
    _, code = analyze(runs["summary"])
    assert code == 0
    summary = json.loads((runs["summary"] / "summary.json").read_text())
    o = summary["metrics"]["overall"]
    streamed = len(_streamed(runs["summary"]))
    assert summary["timing"]["records"] == "summary"
    assert summary["timing"]["summary_timing_calls"] == o["summary_timing_calls"] == streamed
    assert o["itl_ms"] is None and "summary timing" in o["itl_ms_missing"]
    assert o["itl_per_request_p50_ms"]["n"] == o["itl_per_request_mean_ms"]["n"] == streamed
    assert summary["timing"]["missing"] == ["metrics.*.itl_ms"] and summary["overhead"] is None
    assert any("summary timing" in w for w in summary["warnings"])
    html = (runs["summary"] / "report.html").read_text()
    assert "not available (the run kept summary timing" in html
    assert "ITL per call: p99 gap" in html


# --- the same calls, full and summary ------------------------------------------------------------------------------

def _derived_folder(full: Path, dst: Path, transform: Any) -> Path:
    """A copy of a run folder whose records are transform(record) of the full run's."""
    dst.mkdir()
    for p in full.iterdir():
        if p.is_file() and p.name not in ("records.jsonl", "summary.json", "report.md", "report.html",
                                          "overhead.jsonl") and not p.name.startswith("records."):
            shutil.copyfile(p, dst / p.name)
    with open(dst / "records.jsonl", "w") as f:
        for line in _lines(full):
            f.write(json.dumps(transform(json.loads(line)), separators=(",", ":")) + "\n")
    return dst


def _differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every leaf where two summaries differ: (path, full's value, the other's); floats compared exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in dict.fromkeys([*a, *b]):
            out += _differences(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if (a == b and type(a) is type(b)) else [(path, a, b)]


@pytest.fixture(scope="module")
def same_calls(runs, tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """The full run with an overhead section analysed, and its records turned into summary ones by the worker's own
    function, analysed."""
    tmp = tmp_path_factory.mktemp("same-calls")
    full = _derived_folder(runs["overhead"], tmp / "full", lambda r: r)
    summ = _derived_folder(runs["overhead"], tmp / "summary", summarise)
    out = []
    for run in (full, summ):
        _, code = analyze(run)
        assert code == 0
        out.append(json.loads((run / "summary.json").read_text()))
    return out[0], out[1], summ


def test_summary_records_hold_the_figures_computed_by_hand(runs):
    checked = 0
    for _, rec in _streamed(runs["full"]):
        kept = summarise(rec)["chunks"]
        hand = _by_hand(rec)
        for k in ("n", "first_us", "sum_us", "max_us", "max_at"):
            assert kept[k] == hand[k], k
        for k in ("p50_us", "p99_us"):
            assert kept[k] == pytest.approx(hand[k], rel=1e-12, abs=1e-9), k
        checked += 1
    assert checked >= 10


def test_summary_records_expand_to_the_full_ones(runs):
    """Every left-out key comes back with its value; only the unread keys and the chunk times are gone."""
    for line in _lines(runs["full"]):
        rec = json.loads(line)
        back = expand(json.loads(json.dumps(summarise(rec))))
        for k, v in rec.items():
            if k in ("usage_raw", "traceparent", "request_id_header", "output_chars", "chunks"):
                continue
            if k == "ids" and v is not None and all(x == rec["request_id"] for x in v.values()):
                assert back[k] is None  # no join id besides request_id: the analysis keeps none either
                continue
            assert back[k] == v and type(back[k]) is type(v), k


def test_the_same_calls_give_the_same_figures_from_summary_records(same_calls):
    full, summ, _ = same_calls
    o = full["metrics"]["overall"]
    streamed = o["itl_per_request_mean_ms"]["n"]
    assert streamed >= 10 and o["calls"] > streamed  # streamed and plain calls
    allowed = {
        ".warnings": None, ".timing.records": ("full", "summary"), ".timing.missing": None,
        ".timing.summary_timing_calls": (0, streamed), ".billing.ledger.source": None,
        ".metrics.overall.summary_timing_calls": (0, streamed), ".metrics.overall.itl_ms": None,
        ".metrics.overall.itl_ms_missing": None,
    }
    for key, g in full["metrics"]["groups"].items():
        n = g["itl_per_request_mean_ms"]["n"]
        p = f".metrics.groups.{key}"
        if n:
            allowed.update({f"{p}.summary_timing_calls": (0, n), f"{p}.itl_ms": None, f"{p}.itl_ms_missing": None})
    for key in full["overhead"]["groups"]:
        allowed.update({f".overhead.groups.{key}.added_chunk_ms": None,
                        f".overhead.groups.{key}.added_chunk_ms_missing": None,
                        f".overhead.groups.{key}.net_p50.added_chunk_ms": None})
    for path, a, b in _differences(full, summ):
        assert path in allowed, (path, a, b)
        if allowed[path] is not None:
            assert (a, b) == allowed[path], path
    # what the summary gives in their place, and what it marks missing
    s = summ["metrics"]["overall"]
    assert s["itl_ms"] is None and s["itl_ms_missing"] and o["itl_ms"]["n"] == streamed * (CHUNKS - 1)
    for name in ("itl_per_request_mean_ms", "itl_per_request_p50_ms", "itl_per_request_p99_ms",
                 "itl_per_request_max_ms"):
        assert s[name] == o[name] and s[name]["n"] == streamed
    assert summ["timing"]["missing"] == ["metrics.*.itl_ms", "overhead.groups.*.added_chunk_ms"]
    missing = [g for g in summ["overhead"]["groups"].values() if "added_chunk_ms_missing" in g]
    assert missing and all(g["added_chunk_ms"] is None for g in missing)
    assert any(g["added_chunk_ms"] and g["added_chunk_ms"]["n"] for g in full["overhead"]["groups"].values())
    assert full["harness"]["ttft_timing_error"] == summ["harness"]["ttft_timing_error"] is not None
    html = (same_calls[2] / "report.html").read_text()
    assert "not available: the run kept summary timing" in html  # the overhead table's per-chunk row

def test_the_per_call_figures_are_the_calls_own(same_calls, runs):
    """The report's per-call distributions are over each call's own figures, computed here by hand."""
    full, _, _ = same_calls
    import numpy as np

    hand = [_by_hand(rec) for _, rec in _streamed(runs["overhead"]) if not rec.get("replayed")]
    o = full["metrics"]["overall"]
    assert o["itl_per_request_p99_ms"]["n"] == len(hand)
    assert o["itl_per_request_max_ms"]["max"] == max(h["max_us"] for h in hand) / 1000.0
    assert o["itl_per_request_p50_ms"]["p50"] == pytest.approx(
        float(np.percentile([h["p50_us"] / 1000.0 for h in hand], 50)), rel=1e-12)
    assert o["itl_per_request_mean_ms"]["max"] == pytest.approx(
        max(h["sum_us"] / 1000.0 / (h["n"] - 1) for h in hand), rel=1e-12)


# --- earlier versions ---------------------------------------------------------------------------------------------

def test_version_4_records_of_the_same_calls_give_the_same_figures(runs, same_calls, tmp_path):
    """Version-4 records (every key, every chunk's time) read as they always were."""
    full, _, _ = same_calls
    run = _derived_folder(runs["overhead"], tmp_path / "v4", lambda r: {**r, "v": 4})
    _, code = analyze(run)
    assert code == 0
    v4 = json.loads((run / "summary.json").read_text())
    assert [d[0] for d in _differences(full, v4)] == [".billing.ledger.source"]


# --- what sees records as they come: the master's live figures and exports ----------------------------------------

def test_the_masters_live_figures_and_exports_take_summary_records(runs):
    """A distributed run's master gets summary records and puts their keys back: every live figure and export
    but the chunk gaps is what the full records give; the gaps are missing, not made up."""
    from locustfiles.live import Live
    from locustfiles.telemetry import Telemetry

    def fold(recs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, float]]]:
        seen: list[tuple[str, float]] = []

        class Out:
            def instrument(self, spec: Any, read: Any = None) -> Any:
                return None if spec.kind == "gauge" else (lambda v, a: seen.append((spec.name, v)))

        live, tel = Live(), Telemetry([Out()], lambda: 0.0)  # type: ignore[list-item]
        for rec in recs:
            live.add(rec)
            tel.add(rec)
        # rates aside (they run over the wall time since the Live was made)
        rows = [{k: v for k, v in r.items() if k not in ("rps", "tokens_per_s")} for r in live.rows()]
        snap = live.snapshot()
        return [*rows, {k: snap[k] for k in ("calls", "ok", "tokens_out", "ttft_p95", "itl_p50")}], seen

    full = records(runs["full"])
    rows_full, seen_full = fold(full)
    rows_summ, seen_summ = fold([expand(json.loads(json.dumps(summarise(r)))) for r in full])
    chunk = "gen_ai.client.operation.time_per_output_chunk"
    assert [s for s in seen_summ if s[0] != chunk] == [s for s in seen_full if s[0] != chunk]
    assert sum(s[0] == chunk for s in seen_full) >= 10 * (CHUNKS - 1) and not any(s[0] == chunk for s in seen_summ)
    for a, b in zip(rows_full[:-1], rows_summ[:-1], strict=True):
        assert {**a, "itl_p50": ""} == b
    assert rows_full[-1] == {**rows_summ[-1], "itl_p50": rows_full[-1]["itl_p50"]} and rows_summ[-1]["itl_p50"] is None
    assert rows_full[0]["itl_p50"] != "" and rows_full[-1]["tokens_out"] > 0


def test_the_itl_gate_says_why_it_has_no_value(runs):
    from analysis.gates import evaluate

    summary, _ = analyze(runs["summary"])
    (gate,) = evaluate({"itl_p95_ms": {"max": 100}}, summary)
    assert not gate["ok"] and gate["value"] is None and "summary timing" in gate["reason"]


def test_a_distributed_runs_workers_write_summary_records(tmp_path):
    """Two worker processes summarise their own records; the master writes them as shipped and reads them back."""
    scenario = write_scenario(tmp_path / "dist.yaml", {**SCENARIO, "duration": "5s", "records": {"timing": "summary"}})
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--out", str(out), "--processes", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    validator = jsonschema.Draft202012Validator(record_schema())
    recs = records(out)
    assert {r["worker"] for r in recs} == {0, 1}
    for rec in recs:
        validator.validate(rec)
        assert "us" not in (rec.get("chunks") or {}) and "run_id" not in rec
    streamed = [r for r in recs if r.get("stream") and (r.get("chunks") or {}).get("n") == CHUNKS]
    assert len(streamed) >= 5 and all(set(GAP_KEYS) <= set(r["chunks"]) for r in streamed)
    summary, code = analyze(out)
    assert code == 0 and summary["timing"]["records"] == "summary"
    assert summary["metrics"]["overall"]["itl_per_request_p50_ms"]["n"] == len(
        [r for r in streamed if r.get("error_kind") is None and not r.get("replayed")])


def test_the_limit_report_reads_summary_records(tmp_path):
    """The rate-limit headers are found by attempt id, which a summary record leaves out (it follows from call_id)."""
    from analysis.limits import limits_report, read_headers
    from analysis.records import load_records

    from .test_analysis_limits import T0, rec3, req_headers

    def one(i: int, **kw: Any) -> dict[str, Any]:
        call = f"r-w0-{i}"
        return rec3(i, T0 + i, call=call, v=5, run_id="r", attempt_id=f"{call}-a1", idempotency_key=call, **kw)

    full = [one(1, rl=req_headers(10, 9, 6.0)), one(2, rl=req_headers(10, 8, 5.5)),
            one(3, status=429, refusal="rate_limit", rl=req_headers(10, 0, 5.0)), one(4, status=429)]
    reports = []
    for name, recs in (("full", full), ("summary", [summarise(r) for r in full])):
        p = tmp_path / name / "records.jsonl"
        p.parent.mkdir()
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
        headers = read_headers(p)
        assert len(headers) == 4 and headers["r-w0-3-a1"][0]["requests"]["remaining"] == 0
        out, _ = limits_report(load_records(p), p, {"tenants": {"a": {"rpm": 10}}})
        reports.append((headers, json.dumps(out, sort_keys=True)))
    assert all("attempt_id" not in summarise(r) for r in full)
    assert reports[0] == reports[1]
