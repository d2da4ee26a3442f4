"""Timing truth: the client's chunk receive times against the simulator's write times, every streaming dialect."""

from __future__ import annotations

import pytest

from locustfiles.records import decode_chunks

from .runs import jsonl, records, ttbench, write_scenario

pytestmark = [pytest.mark.timeout(180), pytest.mark.serial]  # timing under load: runs alone (make test)

SIM = {"defaults": {"chat": {"base_ms": 60, "ttft_jitter_ms": 0, "prefill_ms_per_token": 0,
                             "decode_tokens_per_s": 20, "slowdown_at_full": 0, "slots": 64, "queue": 64,
                             "output_tokens": {"min": 20, "max": 20}}}}
SCENARIO = {
    "name": "timing", "seed": 5, "target": "sim", "sim": {"config": SIM}, "users": 10, "spawn_rate": 10,
    "duration": "7s", "stop_timeout": "10s",
    "defaults": {"prompt_tokens": 20, "output_tokens": 20},
    "mix": [
        {"endpoint": "chat", "weight": 1, "stream": 1.0},
        {"endpoint": "messages", "weight": 1, "stream": 1.0},
        {"endpoint": "gemini", "weight": 2, "stream": 1.0, "json_array": 0.5},
    ],
}


def test_chunk_receive_times_match_write_times(tmp_path):
    scenario = write_scenario(tmp_path / "timing.yaml", SCENARIO)
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    truth = {e["request_id"]: e for e in jsonl(out / "truth.jsonl")}
    errors_ms: dict[tuple[str, str], list[float]] = {}
    for rec in records(out):
        if not rec["ok"]:
            continue
        entry = truth[rec["request_id"]]
        written = [t for t, n in zip(entry["chunk_times"], entry["chunk_tokens"], strict=True) if n > 0]
        received = [rec["t_start"] + ms / 1000.0 for ms in decode_chunks(rec["chunks"])]
        assert len(received) == len(written) == 20, rec["name"]
        errors = errors_ms.setdefault((rec["endpoint"], rec["stream_format"]), [])
        errors += [(r - w) * 1000.0 for r, w in zip(received, written, strict=True)]
        gaps = sorted(b - a for a, b in zip(written, written[1:], strict=False))
        assert gaps[len(gaps) // 2] >= 0.045  # the model's 50 ms gaps, so any buffering would show
    assert set(errors_ms) == {("chat", "sse"), ("messages", "sse"), ("gemini", "sse"), ("gemini", "json_array")}
    for fmt, errors in errors_ms.items():
        assert len(errors) >= 200, fmt
        errors.sort()
        median = errors[len(errors) // 2]
        late = sum(e > 20.0 for e in errors) / len(errors)
        assert errors[0] > -1.0, fmt  # never received before it was written (same clock)
        # an event held back until the next one arrives is late by a whole 50 ms gap, so holding back even one
        # event in twenty makes 5% of this format's events that late; alone on this 2-core machine p99 is
        # 0.8-1.8 ms and a loaded box in a full suite adds a few ms (p99 5.03 ms once), far from 20 ms. No bound
        # on the single latest event: a loaded box stalls a process now and then (every stream late by 10-14 ms
        # at one moment alone, one event 52 ms late once in a full suite), which says nothing of buffering
        assert late < 0.02, f"{fmt}: {late:.1%} of events more than 20 ms late"
        assert median <= 5.0, f"{fmt}: median {median:.2f} ms"
