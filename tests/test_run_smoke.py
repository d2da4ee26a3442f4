"""End to end: `ttbench run` of the smoke scenario against the simulator, checked against its truth."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from locustfiles.records import record_schema

from .runs import jsonl, locust_rows, records, ttbench

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "run"
    res = ttbench("run", "scenarios/smoke.yaml", "--out", str(out), "-t", "6s")
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def test_run_folder_has_every_artifact(smoke):
    for name in ("records.jsonl", "locust_stats.csv", "locust.html", "scenario.yaml", "prices.yaml", "run.json",
                 "ledger.jsonl", "truth.jsonl", "harness.json"):
        assert (smoke / name).is_file(), name
    run = json.loads((smoke / "run.json").read_text())
    assert run["seed"] == 1 and run["target"] == "sim" and run["versions"]["locust"]
    assert run["end"] > run["start"] and run["git_commit"]


def test_records_follow_the_schema(smoke):
    schema = record_schema()
    assert "responses" in schema["properties"]["endpoint"]["enum"]
    validator = jsonschema.Draft202012Validator(schema)
    for rec in records(smoke):
        validator.validate(rec)


def test_every_endpoint_and_both_stream_modes(smoke):
    recs = [r for r in records(smoke) if r["ok"]]
    seen = {(r["endpoint"], r["stream"]) for r in recs}
    for endpoint in ("chat", "messages", "gemini"):
        assert (endpoint, True) in seen and (endpoint, False) in seen, endpoint
    for endpoint in ("embeddings", "images", "models"):
        assert (endpoint, False) in seen, endpoint
    assert {r["stream_format"] for r in recs if r["endpoint"] == "gemini" and r["stream"]} == {"sse", "json_array"}
    assert any(r["dry_run"] and r["estimate"]["object"] == "billing.estimate" for r in recs)
    assert any(r["first_tool_ms"] is not None for r in recs)
    assert any(r["first_reasoning_ms"] is not None for r in recs)


def test_records_and_truth_join_both_ways(smoke):
    recs = records(smoke)
    truth = jsonl(smoke / "truth.jsonl")
    by_rid = {r["request_id"]: r for r in recs if r["request_id"]}
    by_attempt = {r["attempt_id"]: r for r in recs}
    for entry in truth:
        if entry["outcome"] == "never_sent":
            continue
        assert entry["request_id"] in by_rid or entry["client_attempt_id"] in by_attempt, entry
    truth_ids = {e["request_id"] for e in truth}
    assert set(by_rid) <= truth_ids
    assert len({r["attempt_id"] for r in recs}) == len(recs)  # nothing duplicated


def test_usage_matches_the_truth(smoke):
    truth = {e["request_id"]: e for e in jsonl(smoke / "truth.jsonl")}
    checked = 0
    for r in records(smoke):
        if not r["ok"] or r["dry_run"] or r["endpoint"] in ("models", "images"):
            continue
        usage = truth[r["request_id"]]["usage"]
        assert r["usage"]["input"] == usage["input_tokens"]
        assert r["usage"]["output"] == usage["output_tokens"]
        checked += 1
    assert checked > 20


def test_logical_calls_equal_locusts_request_count(smoke):
    recs = records(smoke)
    calls = {r["call_id"] for r in recs if r["final"] and r["error_kind"] != "cancelled"}
    rows = locust_rows(smoke)
    aggregated = next(row for row in rows if row["Name"] == "Aggregated")
    assert int(aggregated["Request Count"]) == len(calls)
    per_type = {}
    for row in rows:
        if row["Name"] != "Aggregated":
            per_type[row["Type"]] = per_type.get(row["Type"], 0) + int(row["Request Count"])
    assert per_type["TTFT (bucketed)"] > 0  # TTFT rows exist, labelled as Locust's bucketed view ...
    assert per_type["POST"] + per_type.get("GET", 0) == len(calls)  # ... and do not inflate the request counts
    assert not any("key" in row["Name"].lower() for row in rows)


def test_stream_timings_are_ordered(smoke):
    for r in records(smoke):
        if r["ok"] and r["stream"] and not r["dry_run"]:
            assert r["headers_ms"] <= r["first_event_ms"] <= r["first_content_ms"] <= r["end_ms"]
            assert r["chunks"]["n"] >= 1
            assert r["finish_reason"]


def test_the_api_key_is_nowhere_in_the_run_folder(smoke):
    for path in (p for p in smoke.rglob("*") if p.is_file()):
        assert b"tt-sim-local-key" not in path.read_bytes(), path.name


def test_the_reported_ttft_timing_error_is_the_first_chunks_receive_minus_write_time(smoke):
    """harness.ttft_timing_error of summary.json, computed here from the raw records and the simulator's truth:
    the first content chunk's receive time (start + first delta) minus the time the simulator wrote it."""
    import base64
    import struct

    import numpy as np

    truth = {e["request_id"]: e for e in jsonl(smoke / "truth.jsonl")}
    errs = []
    for r in records(smoke):
        if not (r["ok"] and r["stream"] and not r["dry_run"] and not r.get("replayed") and r["chunks"]["n"]):
            continue
        e = truth.get(r["request_id"])
        written = [t for t, n in zip(e["chunk_times"], e["chunk_tokens"], strict=False) if n] if e else []
        if written:
            first_us = struct.unpack("<I", base64.b64decode(r["chunks"]["us"])[:4])[0]
            errs.append((r["t_start"] + first_us / 1e6 - written[0]) * 1000.0)
    got = json.loads((smoke / "summary.json").read_text())["harness"]["ttft_timing_error"]
    assert len(errs) >= 10 and got["n"] == len(errs)
    assert got["p50_ms"] == pytest.approx(float(np.percentile(errs, 50)), abs=1e-6)
    assert got["max_ms"] == pytest.approx(max(errs), abs=1e-6)
    assert 0 <= got["p50_ms"] < 50  # received after it was written, and soon after
