"""Idempotent retries under injected faults, the retry budget, Retry-After, and the spend cap."""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from decimal import Decimal

import pytest

from ttbench.simproc import SimProcess

from .conftest import write_config
from .runs import jsonl, records, ttbench, write_scenario

pytestmark = pytest.mark.timeout(180)

FAST = {"defaults": {"chat": {"base_ms": 5, "ttft_jitter_ms": 1, "decode_tokens_per_s": 400,
                              "output_tokens": {"min": 8, "max": 16}}}}


def by_call(recs):
    calls = defaultdict(list)
    for r in recs:
        calls[r["call_id"]].append(r)
    for atts in calls.values():
        atts.sort(key=lambda r: r["attempt"])
    return calls


def test_retries_reuse_the_key_and_are_billed_once(tmp_path):
    sim = dict(FAST, faults={"rate": 0.3, "weights": {"server_error": 1, "reset": 1, "stream_error": 1,
                                                       "disconnect_after_billing": 2}})
    scenario = write_scenario(tmp_path / "faulty.yaml", {
        "name": "faulty", "seed": 3, "sim": {"config": sim}, "users": 6, "duration": "6s",
        "retry": {"max_attempts": 8, "base_s": 0.01, "cap_s": 0.05, "budget": 100000},
        "defaults": {"prompt_tokens": 20, "output_tokens": 12},
        "mix": [{"endpoint": "chat", "stream": 0.5}, {"endpoint": "messages", "stream": 0.5},
                {"endpoint": "gemini", "stream": 0.5}, {"endpoint": "embeddings"}]})
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    recs = records(out)
    calls = by_call(recs)
    truth = jsonl(out / "truth.jsonl")
    ledger = [r for r in jsonl(out / "ledger.jsonl") if r["type"] == "charge"]
    assert any(len(a) > 1 for a in calls.values())
    for call_id, atts in calls.items():
        assert [a["attempt"] for a in atts] == list(range(1, len(atts) + 1))
        assert {a["idempotency_key"] for a in atts} == {call_id}
        assert [a["final"] for a in atts] == [False] * (len(atts) - 1) + [True]
    by_attempt = {r["attempt_id"]: r for r in recs}
    truth_of = defaultdict(list)
    for t in truth:
        truth_of[t["client_attempt_id"]].append(t)
    dab = [e for e in truth if e["fault"] == "disconnect_after_billing"]
    assert len(dab) >= 5
    for e in dab:
        rec = by_attempt[e["client_attempt_id"]]
        assert rec["error_kind"] in ("truncated", "reset")
        atts = calls[rec["call_id"]]
        final = atts[-1]
        if not final["ok"]:  # every retry met the replay's own faults (a 5xx or a reset) until attempts ran out
            later = [t for a in atts[rec["attempt"]:] for t in truth_of[a["attempt_id"]]]
            assert len(atts) == 8 and later and all(t["replay_of"] == e["request_id"] and t["fault"] in
                                                    ("server_error", "reset") for t in later), final
            continue
        assert final["replayed"], final
    dab_calls = {by_attempt[e["client_attempt_id"]]["call_id"] for e in dab}  # billed once, whatever came next
    charges = defaultdict(int)
    for row in ledger:
        charges[row["idempotency_key"]] += 1
    for call_id, atts in calls.items():
        expected = 1 if (atts[-1]["ok"] and atts[-1]["error_kind"] is None) or call_id in dab_calls else 0
        if atts[-1]["error_kind"] == "cancelled":
            continue
        assert charges.pop(call_id, 0) == expected, (call_id, [a["error_kind"] for a in atts])
    assert not charges  # no charge for a key the client never used


def test_all_503s_spend_the_budget_then_stop(tmp_path):
    sim = dict(FAST, faults={"rate": 1.0, "weights": {"server_error": 1}, "server_error_statuses": [503],
                             "retry_after_s": 1})
    scenario = write_scenario(tmp_path / "down.yaml", {
        "name": "down", "seed": 4, "sim": {"config": sim}, "users": 2, "duration": "6s",
        "retry": {"max_attempts": 3, "base_s": 0.2, "cap_s": 1, "budget": 6},
        "mix": [{"endpoint": "chat"}]})
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    calls = sorted(by_call(records(out)).values(), key=lambda a: a[0]["t_start"])
    attempts = [len(a) for a in calls]
    assert sum(n - 1 for n in attempts) == 6  # the whole budget, and no more
    assert max(attempts) == 3 and attempts[0] == 3
    assert attempts[-3:] == [1, 1, 1]  # once the budget is spent, no retries
    gaps = [b["t_start"] - (a["t_start"] + a["end_ms"] / 1000) for atts in calls for a, b in zip(atts, atts[1:], strict=False)]
    assert min(gaps) >= 1.0  # Retry-After: 1
    assert len({round(g, 3) for g in gaps}) > 1  # jittered, not all equal
    assert all(a[-1]["error_kind"] == "http_5xx" and a[-1]["status"] == 503 for a in calls)
    harness = json.loads((out / "harness.json").read_text())
    assert harness["retry_budget"]["spent"] == 6 and harness["retry_budget"]["denied"] > 0


def test_spend_cap_against_a_url_target(tmp_path):
    cfg = write_config(tmp_path / "sim.yaml", FAST, fast=False)
    with SimProcess(config=cfg, seed=2, api_key="url-target-key") as sim:
        scenario = write_scenario(tmp_path / "spend.yaml", {
            "name": "spend", "target": sim.url, "users": 1, "duration": "60s",
            "defaults": {"prompt_tokens": 40, "output_tokens": 16}, "mix": [{"endpoint": "chat"}]})
        out = tmp_path / "run"
        cap = Decimal("0.0002")
        t0 = time.time()
        res = ttbench("run", str(scenario), "--out", str(out), "--max-spend", str(cap),
                      env=dict(os.environ, TT_API_KEY="url-target-key"))
        assert res.returncode == 0, res.stderr[-2000:]
        assert time.time() - t0 < 40  # stopped long before the 60 s
        assert "spend cap reached" in res.stderr
        charged = [Decimal(r["amount"]) for r in sim.ledger() if r["type"] == "charge"]
    assert sum(charged) >= cap
    assert sum(charged) - cap < max(charged)  # within one call of the cap
    assert not (out / "ledger.jsonl").exists()  # a URL target: ttbench has no ledger of its own to fetch


def test_dead_target_and_refused_key_fail_fast(tmp_path):
    scenario = write_scenario(tmp_path / "s.yaml", {"name": "s", "users": 1, "duration": "5s",
                                                    "mix": [{"endpoint": "chat"}]})
    t0 = time.time()
    res = ttbench("run", str(scenario), "--target", "http://127.0.0.1:9", "--out", str(tmp_path / "a"),
                  env=dict(os.environ, TT_API_KEY="whatever"))
    assert res.returncode == 2 and time.time() - t0 < 10
    assert res.stderr.strip().splitlines()[-1].startswith("ttbench: error: target http://127.0.0.1:9 does not answer")
    with SimProcess(api_key="the-right-key") as sim:
        res = ttbench("run", str(scenario), "--target", sim.url, "--out", str(tmp_path / "b"),
                      env=dict(os.environ, TT_API_KEY="a-wrong-key"))
    assert res.returncode == 2 and "refused the API key" in res.stderr
    assert "a-wrong-key" not in res.stderr
    env = {k: v for k, v in os.environ.items() if k != "TT_API_KEY"}
    res = ttbench("run", str(scenario), "--target", "http://127.0.0.1:9", "--out", str(tmp_path / "c"), env=env)
    assert res.returncode == 2 and "environment variable TT_API_KEY is not set" in res.stderr
