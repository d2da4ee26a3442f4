"""The fault matrix: one run against the simulator with every fault kind at a 20% rate, checked against its truth.

The harness must keep measuring (exit 0, calls succeeding after faults), write a record for
every attempt the simulator saw, classify each one as the fault table says, and, with
the gateway honouring idempotency, never end a call charged twice.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from .runs import jsonl, records, ttbench, write_scenario

pytestmark = pytest.mark.timeout(150)

KINDS = ("server_error", "rate_limited", "reset", "disconnect_midstream", "stream_error", "malformed_chunk", "stall",
         "fewer_images", "disconnect_after_billing")
STALL_MS = 1500
FIRST_BYTE_S = 0.8
USERS = 9

SIM = {
    "defaults": {
        "chat": {"base_ms": 5, "ttft_jitter_ms": 2, "decode_tokens_per_s": 1000, "output_tokens": {"min": 8, "max": 24}},
        "embedding": {"base_ms": 2, "ttft_jitter_ms": 1},
        "image": {"base_ms": 5, "per_image_ms": 5, "ttft_jitter_ms": 1},
    },
    "faults": {"rate": 0.2, "stall_ms": STALL_MS, "retry_after_s": 1,
               "weights": {"server_error": 1, "rate_limited": 1, "reset": 1, "disconnect_midstream": 2,
                           "stream_error": 2, "malformed_chunk": 3, "stall": 1, "fewer_images": 6,
                           "disconnect_after_billing": 1}},
}
SCENARIO = {
    "name": "fault-matrix", "seed": 11, "sim": {"config": SIM}, "users": USERS, "spawn_rate": USERS,
    "duration": "10s", "stop_timeout": "15s", "think_time": {"min_s": 0, "max_s": 0.05},
    "timeouts": {"connect_s": 3, "first_byte_s": FIRST_BYTE_S, "idle_s": 3, "total_s": 10},
    "retry": {"max_attempts": 6, "base_s": 0.02, "cap_s": 0.2, "budget": 100000},
    "defaults": {"prompt_tokens": {"dist": "uniform", "min": 10, "max": 60}, "output_tokens": 16},
    "mix": [
        {"endpoint": "chat", "weight": 4, "stream": 0.6, "dry_run": 0.05},
        {"endpoint": "messages", "weight": 2, "stream": 0.6},
        {"endpoint": "gemini", "weight": 3, "stream": 0.7, "json_array": 0.5},
        {"endpoint": "embeddings", "weight": 1, "inputs": {"dist": "uniform", "min": 1, "max": 4}},
        {"endpoint": "images", "weight": 3, "images": {"n": [2, 3], "size": "1024x1024", "quality": "low"}},
    ],
}


def expected_kinds(entry: dict[str, Any], rec: dict[str, Any]) -> set[str | None]:
    """The client error kinds the fault table allows for one attempt (None: a success). Written out in full."""
    fault = entry["fault"]
    if fault is None:
        if (entry.get("fault_detail") or {}).get("queue_full"):
            return {"http_429"}  # the model's queue was full: capacity, not a planted fault
        if entry["status"] == 409:
            return {"http_4xx"}  # the retry of a stalled attempt arrived before the gateway let go of the key
        return {None}
    if fault == "stall":  # `timeout` only when the stall outlasts the client's first-byte timeout
        return {"timeout"} if STALL_MS / 1000 > FIRST_BYTE_S else {None}
    return {
        "server_error": {"http_5xx"},
        "rate_limited": {"http_429"},
        "reset": {"reset"},
        "disconnect_midstream": {"truncated"},
        "stream_error": {"stream_error"},
        "malformed_chunk": {"protocol"},
        "fewer_images": {None},  # a success with fewer images
        "disconnect_after_billing": {"truncated", "reset"},  # cut before the last bytes, or before the headers
    }[fault]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("matrix")
    scenario = write_scenario(tmp / "fault-matrix.yaml", SCENARIO)
    out = tmp / "run"
    res = ttbench("run", str(scenario), "--out", str(out), timeout=120)
    return {"res": res, "out": out, "recs": records(out) if (out / "records.jsonl").exists() else [],
            "truth": jsonl(out / "truth.jsonl") if (out / "truth.jsonl").exists() else []}


def by_call(recs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        calls[r["call_id"]].append(r)
    for atts in calls.values():
        atts.sort(key=lambda r: r["attempt"])
    return calls


def test_the_harness_keeps_running_through_every_fault(matrix):
    res, recs, truth = matrix["res"], matrix["recs"], matrix["truth"]
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    met = Counter(e["fault"] for e in truth if e["fault"])
    assert set(met) == set(KINDS), met  # every kind struck
    calls = by_call(recs)
    finals = [a[-1] for a in calls.values() if a[-1]["error_kind"] != "cancelled"]
    assert len(finals) > 150
    assert sum(f["ok"] for f in finals) / len(finals) > 0.95  # retries carry calls through the faults
    # calls keep succeeding after faults: successes in the last quarter of the run, after most faults struck
    t0 = min(r["t_start"] for r in recs)
    t1 = max(r["t_start"] for r in recs)
    late = [r for r in recs if r["t_start"] > t0 + 0.75 * (t1 - t0)]
    assert sum(r["ok"] for r in late) > 20
    assert sum(1 for r in late if not r["ok"]) > 0
    cancelled = [r for r in recs if r["error_kind"] == "cancelled"]
    assert len(cancelled) <= USERS  # only calls cut by the end of the run


def test_every_attempt_the_simulator_saw_has_a_record(matrix):
    recs, truth = matrix["recs"], matrix["truth"]
    by_rid = {r["request_id"]: r for r in recs if r["request_id"]}
    by_attempt = {r["attempt_id"]: r for r in recs}
    assert len(by_attempt) == len(recs)  # nothing written twice
    seen = [e for e in truth if e["outcome"] != "never_sent"]
    missing = [e["request_id"] for e in seen
               if e["request_id"] not in by_rid and e["client_attempt_id"] not in by_attempt]
    assert not missing, missing[:5]
    no_headers = [e for e in seen if e["request_id"] not in by_rid]
    assert no_headers  # resets and stalls left no request id: they joined by attempt id
    assert set(by_rid) <= {e["request_id"] for e in truth}  # and no record claims a request the gateway never had


def test_each_record_has_the_error_kind_of_its_fault(matrix):
    recs, truth = matrix["recs"], matrix["truth"]
    by_rid = {r["request_id"]: r for r in recs if r["request_id"]}
    by_attempt = {r["attempt_id"]: r for r in recs}
    wrong = []
    checked: Counter[str] = Counter()
    for e in truth:
        if e["outcome"] == "never_sent":
            continue
        rec = by_rid.get(e["request_id"]) or by_attempt[e["client_attempt_id"]]
        if rec["error_kind"] == "cancelled":
            continue  # cut by the harness at the end of the run, whatever the gateway was doing
        allowed = expected_kinds(e, rec)
        if rec["error_kind"] not in allowed:
            wrong.append((e["fault"], e["status"], rec["endpoint"], rec["stream_format"], rec["error_kind"],
                          rec["error"], sorted(map(str, allowed))))
        checked[e["fault"] or "none"] += 1
        if e["fault"] == "fewer_images":
            assert rec["ok"] and 1 <= rec["images_returned"] < rec["images_requested"], rec
        if e["replay_of"] is not None:
            assert e["fault"] in (None, "server_error", "rate_limited", "reset", "stall"), e
            if rec["ok"]:
                assert rec["replayed"] and rec["original_request_id"] == e["replay_of"]
    assert not wrong, wrong[:10]
    assert set(checked) == {*KINDS, "none"}, checked
    # a disconnect after billing is retried into a replay, never into a second generation
    for e in truth:
        if e["fault"] == "disconnect_after_billing":
            rec = by_rid.get(e["request_id"]) or by_attempt[e["client_attempt_id"]]
            later = [r for r in recs if r["call_id"] == rec["call_id"] and r["attempt"] > rec["attempt"] and r["ok"]]
            assert all(r["replayed"] for r in later), later


def test_no_double_charges(matrix):
    out, recs = matrix["out"], matrix["recs"]
    charges = [r for r in jsonl(out / "ledger.jsonl") if r["type"] == "charge"]
    per_key = Counter(r["idempotency_key"] for r in charges)
    calls = by_call(recs)
    assert set(per_key) <= set(calls)  # every charge belongs to a call the harness made
    twice = {k: n for k, n in per_key.items() if n > 1}
    assert not twice, twice
    billed = [k for k, atts in calls.items()
              if atts[-1]["ok"] and not atts[-1]["dry_run"] and atts[-1]["endpoint"] != "models"]
    assert billed and all(per_key[k] == 1 for k in billed)  # each successful call charged exactly once
    replayed = [k for k, atts in calls.items() if atts[-1]["ok"] and atts[-1]["replayed"]]
    assert replayed  # the retries after disconnect_after_billing got replays ...
    assert all(per_key[k] == 1 for k in replayed)  # ... and no second charge
    summary = json.loads((out / "summary.json").read_text())
    assert summary["billing"]["counts"]["double_charge"] == 0
    errors = summary["metrics"]["overall"]["errors"]
    assert {"http_5xx", "http_429", "reset", "truncated", "stream_error", "protocol", "timeout"} <= set(errors)


def test_the_report_counts_what_the_records_hold(matrix):
    out: Path = matrix["out"]
    recs = matrix["recs"]
    summary = json.loads((out / "summary.json").read_text())
    errors = summary["metrics"]["overall"]["errors"]
    counted = Counter(r["error_kind"] for r in recs if r["error_kind"] and r["error_kind"] != "cancelled")
    assert errors == dict(counted)
    harness = json.loads((out / "harness.json").read_text())
    assert harness["records"] == len(recs)
