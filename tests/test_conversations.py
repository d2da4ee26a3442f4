"""Multi-turn conversations against the simulator's prefix cache: cached tokens, TTFT, billing by turn."""

from __future__ import annotations

import json

import pytest

from .runs import jsonl, records, ttbench, write_scenario

pytestmark = pytest.mark.timeout(180)

SIM = {"defaults": {"chat": {"base_ms": 5, "ttft_jitter_ms": 0, "prefill_ms_per_token": 1.0,
                             "decode_tokens_per_s": 400, "slots": 64, "queue": 64}}}


def scenario(tmp_path, name: str, extra_sim: dict | None = None) -> object:
    sim = {**SIM, **(extra_sim or {})}
    return write_scenario(tmp_path / f"{name}.yaml", {
        "name": name, "seed": 12, "sim": {"config": sim}, "users": 4, "spawn_rate": 4, "duration": "8s",
        "stop_timeout": "20s", "think_time": {"min_s": 0, "max_s": 0.05},
        "conversations": {"share": 1.0, "turns": 4, "think_time": {"min_s": 0, "max_s": 0.05}},
        "defaults": {"prompt_tokens": 150, "output_tokens": 16},
        "mix": [{"endpoint": "chat", "stream": 1.0}, {"endpoint": "messages", "stream": 1.0},
                {"endpoint": "gemini", "stream": 1.0}]})


@pytest.mark.serial  # every first token within 25 ms of its write: runs alone (make test)
def test_cached_tokens_rise_by_turn_and_ttft_follows_the_truth(tmp_path):
    out = tmp_path / "run"
    res = ttbench("run", str(scenario(tmp_path, "conv")), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    recs = [r for r in records(out) if r["ok"]]
    assert all(r["session_id"] and r["turn"] for r in recs)
    by_turn: dict[int, list[dict]] = {}
    for r in recs:
        by_turn.setdefault(r["turn"], []).append(r)
    cached = {t: sum(r["usage"]["cached_input"] for r in rs) / len(rs) for t, rs in sorted(by_turn.items())}
    assert cached[1] == 0 and 0 < cached[2] < cached[3] < cached[4], cached
    truth = {e["request_id"]: e for e in jsonl(out / "truth.jsonl")}
    faster = 0
    for r in recs:
        e = truth[r["request_id"]]
        assert r["usage"]["cached_input"] == (e.get("cache") or {}).get("cached_tokens", 0)
        first_write = next(t for t, n in zip(e["chunk_times"], e["chunk_tokens"], strict=True) if n)
        truth_ttft = (first_write - e["received"]) * 1000
        received = r["t_start"] + r["first_content_ms"] / 1000
        assert abs(received - first_write) * 1000 <= 25  # the client sees the first token when the gateway sent it
        if r["usage"]["cached_input"]:
            uncached_prediction = 5 + 1.0 * r["usage"]["input"]
            assert truth_ttft < uncached_prediction  # a cached prefix prefills faster ...
            faster += 1
    assert faster > 10
    summary = json.loads((out / "summary.json").read_text())
    conv = summary["conversations"]
    assert [t["turn"] for t in conv["by_turn"]] == [1, 2, 3, 4]
    shares = [t["cached_share"] for t in conv["by_turn"]]
    assert shares[0] == 0 and shares == sorted(shares)
    assert conv["by_context_length"] and "alt='ttft_vs_input'" in (out / "report.html").read_text()
    assert summary["billing"]["accuracy"] == 1.0 and summary["billing"]["findings"] == []


def test_cache_discount_missing_is_found_as_planted(tmp_path):
    out = tmp_path / "run"
    sc = scenario(tmp_path, "conv-bill", {"billing_errors": {"quota": {"cache_discount_missing": 6}, "quota_rate": 1.0}})
    res = ttbench("run", str(sc), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    planted = {(e["billing_error"], e["request_id"]) for e in jsonl(out / "truth.jsonl") if e["billing_error"]}
    assert len(planted) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert {(f["kind"], f["request_id"]) for f in summary["billing"]["findings"]} == planted
