"""The OpenAI Responses API end to end: ttbench's users against the simulator, checked against its truth and
ledger (usage, anchors, conversations by previous_response_id, planted billing errors found exactly)."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from locustfiles.calls import CallSpec
from locustfiles.dialects import DIALECTS, TEXT_ENDPOINTS
from locustfiles.sessions import Conversation

from .runs import jsonl, records, ttbench, write_scenario

pytestmark = pytest.mark.timeout(180)

FAST = {"defaults": {"chat": {"base_ms": 5, "ttft_jitter_ms": 1, "decode_tokens_per_s": 1000,
                              "output_tokens": {"min": 20, "max": 40}}}}


def test_the_dialect_declares_itself_and_clamps_its_cap():
    mod = DIALECTS["responses"]
    assert "responses" in TEXT_ENDPOINTS and mod.DECLARATION.family == "openai"
    wire = mod.build(CallSpec(endpoint="responses", model="gpt-4o-mini", name="x", prompt="hi", max_tokens=8))
    assert wire.path == "/v1/responses" and json.loads(wire.body)["max_output_tokens"] == 16  # the API's minimum


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("responses")
    sim = dict(FAST, faults={"rate": 0.1, "weights": {"disconnect_after_billing": 1}},
               billing_errors={"quota": {"amount_mismatch": 4, "token_mismatch": 4, "missing_charge": 4,
                                         "double_charge": 2}, "quota_rate": 0.5})
    scenario = write_scenario(tmp / "responses.yaml", {
        "name": "responses", "seed": 5, "sim": {"config": sim}, "users": 4, "spawn_rate": 4, "duration": "8s",
        "retry": {"max_attempts": 4, "base_s": 0.02, "cap_s": 0.1, "budget": 1000},
        "defaults": {"prompt_tokens": 30, "output_tokens": {"dist": "uniform", "min": 8, "max": 24}},
        "conversations": {"share": 0.3, "turns": 3, "think_time": {"min_s": 0, "max_s": 0.05}, "server_state": True},
        "mix": [{"endpoint": "responses", "stream": 0.7, "tools": 0.2, "reasoning": 0.2, "dry_run": 0.05}]})
    out = tmp / "run"
    res = ttbench("run", str(scenario), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_records_agree_with_the_simulators_truth(run):
    recs = records(run)
    truth = {e["request_id"]: e for e in jsonl(run / "truth.jsonl")}
    ok = [r for r in recs if r["ok"] and not r["dry_run"]]
    assert ok and {r["endpoint"] for r in recs} == {"responses"}
    streamed = [r for r in ok if r["stream"] and not r["replayed"]]
    assert streamed and all(r["first_content_ms"] is not None and r["chunks"]["n"] > 0 for r in streamed)
    for r in ok:
        t = truth[r["request_id"]]
        assert r["usage"]["input"] == t["usage"]["input_tokens"]
        assert r["usage"]["output"] == t["usage"]["output_tokens"]
        assert r["finish_reason"] in ("completed", "max_output_tokens")
    capped = [r for r in ok if r["finish_reason"] == "max_output_tokens"]
    assert capped  # an answer cut by max_output_tokens is a normal end, not `truncated`
    dry = [r for r in recs if r["dry_run"] and r["ok"]]
    assert dry and all(r["estimate"]["dry_run"] for r in dry)


def test_conversations_go_on_by_previous_response_id(run):
    recs = [r for r in records(run) if r["session_id"] and r["final"] and r["ok"]]
    truth = {e["client_attempt_id"]: e for e in jsonl(run / "truth.jsonl") if e.get("client_attempt_id")}
    by_session = defaultdict(list)
    for r in recs:
        by_session[r["session_id"]].append(r)
    later = [r for turns in by_session.values() for r in sorted(turns, key=lambda r: r["turn"])[1:]]
    assert later
    for r in later:  # the follow-up sent only its new message, yet its input counts the whole conversation
        first = min(by_session[r["session_id"]], key=lambda x: x["turn"])
        assert r["usage"]["input"] > first["usage"]["input"] + first["usage"]["output"]
        assert truth[r["attempt_id"]]["outcome"] == "ok"


def test_a_server_side_conversation_sends_only_the_new_message():
    import random

    conv = Conversation("s", 3, server_state=True)
    spec = CallSpec(endpoint="responses", model="gpt-4o-mini", name="x", prompt="first question")
    first = conv.next_turn(spec, random.Random(1))
    assert first.previous_response_id is None and len(first.messages) == 1
    conv.answer("an answer", "resp_123")
    nxt = conv.next_turn(CallSpec(endpoint="responses", model="gpt-4o-mini", name="x", prompt="second"),
                         random.Random(1))
    body = json.loads(DIALECTS["responses"].build(nxt).body)
    assert body["previous_response_id"] == "resp_123" and body["input"] == [{"role": "user", "content": "second"}]
    resend = Conversation("t", 3)  # without server state the whole conversation is resent
    resend.next_turn(CallSpec(endpoint="responses", model="m", name="x", prompt="q1"), random.Random(1))
    resend.answer("a1", "resp_9")
    again = resend.next_turn(CallSpec(endpoint="responses", model="m", name="x", prompt="q2"), random.Random(1))
    assert again.previous_response_id is None and [m["content"] for m in again.messages] == ["q1", "a1", "q2"]


def test_planted_billing_errors_are_found_exactly(run):
    truth = jsonl(run / "truth.jsonl")
    planted = {(e["billing_error"], e["request_id"]) for e in truth if e.get("billing_error")}
    assert {k for k, _ in planted} >= {"amount_mismatch", "token_mismatch", "missing_charge"}
    summary = json.loads((run / "summary.json").read_text())
    found = {(f["kind"], f["request_id"]) for f in summary["billing"]["findings"]}
    assert found == planted
