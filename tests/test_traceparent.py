"""W3C trace context: one trace per logical call, a span per attempt, and the simulator's truth shows it."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from .helpers import chat
from .runs import jsonl, records, ttbench, write_scenario

pytestmark = pytest.mark.timeout(180)

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


def test_truth_keeps_the_traceparent_header(sim):
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    rid = chat(sim, attempt="tp-only-1", traceparent=tp).headers["X-TT-Request-ID"]
    rid2 = chat(sim, attempt="tp-only-2").headers["X-TT-Request-ID"]
    truth = {e["request_id"]: e for e in sim.truth()}
    assert truth[rid]["traceparent"] == tp == truth[rid]["client_headers"]["traceparent"]
    assert truth[rid2]["traceparent"] is None


def test_attempts_share_the_trace_id_and_the_truth_shows_each_span(tmp_path):
    sim = {"defaults": {"chat": {"base_ms": 5, "ttft_jitter_ms": 1, "decode_tokens_per_s": 400,
                                 "output_tokens": {"min": 8, "max": 16}}},
           "faults": {"rate": 0.3, "weights": {"server_error": 1}}}
    scenario = write_scenario(tmp_path / "tp.yaml", {
        "name": "tp", "seed": 5, "sim": {"config": sim}, "users": 4, "duration": "4s",
        "retry": {"max_attempts": 8, "base_s": 0.01, "cap_s": 0.05, "budget": 100000},
        "defaults": {"prompt_tokens": 20, "output_tokens": 12},
        "mix": [{"endpoint": "chat", "stream": 0.5}, {"endpoint": "messages"}]})
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    recs = records(out)
    truth = {e["client_attempt_id"]: e for e in jsonl(out / "truth.jsonl") if e.get("client_attempt_id")}
    calls: dict[str, list[dict]] = defaultdict(list)
    joined = 0
    for r in recs:
        if r["traceparent"] is None:  # only a stop marker (never sent) has none
            assert r["error_kind"] == "cancelled" and r["attempt"] > 1, r
            continue
        m = TRACEPARENT.match(r["traceparent"])
        assert m, r["traceparent"]
        assert m.group(1) != "0" * 32 and m.group(2) != "0" * 16
        calls[r["call_id"]].append(r)
        entry = truth.get(r["attempt_id"])
        if entry is None:
            assert r["error_kind"] == "cancelled", r  # cut by the stop before it reached the simulator
            continue
        assert entry["traceparent"] == r["traceparent"]
        joined += 1
    assert joined >= 20
    retried = [atts for atts in calls.values() if len(atts) > 1]
    assert len(retried) >= 3  # server errors forced retries
    assert any(e["fault"] == "server_error" for e in truth.values())
    for atts in calls.values():
        traces = {TRACEPARENT.match(a["traceparent"]).group(1) for a in atts}
        spans = [TRACEPARENT.match(a["traceparent"]).group(2) for a in atts]
        assert len(traces) == 1
        assert len(set(spans)) == len(spans)
    trace_ids = [TRACEPARENT.match(atts[0]["traceparent"]).group(1) for atts in calls.values()]
    assert len(set(trace_ids)) == len(trace_ids)  # a new trace per logical call
