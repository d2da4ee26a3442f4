"""The API key never reaches an artifact: not the records, Locust's files, the reports, nor the run's output.

A distinctive key is searched for in every file of the run folder and in the run's
stdout and stderr, whole and in pieces, and so is any `key=` query parameter (Gemini's
other way to pass a key). One run against the simulator target, one against a URL
target (a simulator started by hand with that key); both mixes include every Gemini mode,
and some faults so that error paths write their records too.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from ttbench.simproc import SimProcess

from .conftest import write_config
from .runs import records, ttbench, write_scenario

pytestmark = pytest.mark.timeout(120)

MIX = [
    {"endpoint": "chat", "weight": 2, "stream": 0.5, "dry_run": 0.1, "tools": 0.2},
    {"endpoint": "messages", "weight": 2, "stream": 0.5, "reasoning": 0.2},
    {"endpoint": "gemini", "weight": 3, "stream": 0.7, "json_array": 0.5, "tools": 0.2, "dry_run": 0.1},
    {"endpoint": "embeddings", "weight": 1},
    {"endpoint": "images", "weight": 1, "images": {"n": [2], "quality": "low"}},
    {"endpoint": "models", "weight": 0.5},
]
FAULTS = {"rate": 0.15, "stall_ms": 200,
          "weights": {"server_error": 1, "rate_limited": 1, "reset": 1, "stream_error": 1, "malformed_chunk": 1,
                      "disconnect_after_billing": 1}}


def new_key() -> str:
    return f"ttbSECRET{uuid.uuid4().hex}"


def leaks(key: str, data: bytes) -> list[str]:
    """Where the key (whole, any 12-character piece of it, base64, or a key= parameter) shows in the bytes."""
    found = []
    if key.encode() in data:
        found.append("the key")
    pieces = {key[i : i + 12] for i in range(len(key) - 11)}
    found += [f"piece {p!r}" for p in sorted(pieces) if p.encode() in data][:3]
    if base64.b64encode(key.encode())[:16] in data:
        found.append("base64")
    if re.search(rb"[?&]key=", data):
        found.append("a key= parameter")
    return found


def assert_no_leak(key: str, out: Path, res: Any) -> None:
    files = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    for expected in ("records.jsonl", "locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv",
                     "locust.html", "report.md", "report.html", "summary.json", "run.json", "harness.json",
                     "scenario.yaml"):
        assert expected in names, expected  # every artifact is there to be searched
    bad = {str(p.relative_to(out)): leaks(key, p.read_bytes()) for p in files}
    bad = {k: v for k, v in bad.items() if v}
    for name, text in (("stdout", res.stdout), ("stderr", res.stderr)):
        if leaks(key, text.encode()):
            bad[name] = leaks(key, text.encode())
    assert not bad, bad


def scenario(tmp: Path, name: str, **extra: Any) -> Path:
    return write_scenario(tmp / f"{name}.yaml", {
        "name": name, "seed": 9, "users": 4, "duration": "4s", "stop_timeout": "5s",
        "think_time": {"min_s": 0, "max_s": 0.05}, "timeouts": {"first_byte_s": 2, "idle_s": 2, "total_s": 10},
        "retry": {"max_attempts": 3, "base_s": 0.01, "cap_s": 0.05},
        "defaults": {"prompt_tokens": 12, "output_tokens": 8}, "mix": MIX, **extra})


def check_run(out: Path) -> None:
    recs = records(out)
    ok = {(r["endpoint"], r["stream_format"]) for r in recs if r["ok"]}
    assert {("gemini", "sse"), ("gemini", "json_array"), ("gemini", None)} <= ok  # every Gemini mode was used
    assert any(not r["ok"] for r in recs)  # and error paths wrote records too


def test_no_key_in_any_artifact_of_a_simulator_run(tmp_path):
    key = new_key()
    sim = {"defaults": {"chat": {"base_ms": 5, "decode_tokens_per_s": 2000, "output_tokens": {"min": 4, "max": 12}},
                        "image": {"base_ms": 5, "per_image_ms": 5}}, "faults": FAULTS}
    out = tmp_path / "run"
    res = ttbench("run", str(scenario(tmp_path, "secret-sim", sim={"config": sim})), "--out", str(out),
                  env=dict(os.environ, TT_API_KEY=key), timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]
    check_run(out)
    assert (out / "truth.jsonl").is_file() and (out / "ledger.jsonl").is_file()  # searched as well
    assert_no_leak(key, out, res)


def test_no_key_in_any_artifact_of_a_url_target_run(tmp_path):
    key = new_key()
    cfg = write_config(tmp_path / "sim.yaml", {"faults": FAULTS})
    with SimProcess(config=cfg, seed=4, api_key=key) as sim:
        out = tmp_path / "run"
        res = ttbench("run", str(scenario(tmp_path, "secret-url")), "--target", sim.url, "--out", str(out),
                      "--max-spend", "0.5", env=dict(os.environ, TT_API_KEY=key), timeout=90)
        assert res.returncode == 0, res.stderr[-2000:]
        truth = sim.truth()
    check_run(out)
    assert any(e["endpoint"] == "gemini" and e["status"] == 200 for e in truth)  # the key was accepted ...
    assert_no_leak(key, out, res)  # ... and written down nowhere
    # and a refused key is named by its status, never echoed
    with SimProcess(config=cfg, seed=4, api_key=new_key()) as other:
        res = ttbench("run", str(scenario(tmp_path, "refused")), "--target", other.url, "--out",
                      str(tmp_path / "refused"), env=dict(os.environ, TT_API_KEY=key), timeout=60)
    assert res.returncode == 2 and "refused the API key" in res.stderr
    assert not leaks(key, (res.stdout + res.stderr).encode())
