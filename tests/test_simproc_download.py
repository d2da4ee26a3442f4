"""Collecting the simulator's truth and ledger into a run folder: streamed to disk, byte for byte what it serves."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)


def test_truth_and_ledger_are_streamed_to_files_equal_to_what_the_simulator_serves(sim, tmp_path):
    with httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {sim.api_key}"}, timeout=30) as c:
        for i in range(12):
            r = c.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "max_tokens": 5,
                                                     "messages": [{"role": "user", "content": f"download {i}"}]})
            assert r.status_code == 200, r.text
    for route, name in (("/_sim/truth", "truth.jsonl"), ("/_sim/ledger", "ledger.jsonl")):
        served = sim.admin(route).content
        dest = tmp_path / name
        written = sim.download(route, dest)
        body = dest.read_bytes()
        assert written == len(body) and body[: len(served)] == served[: len(body)]
        assert len(body) >= len(served) > 0  # the session's simulator may have answered more meanwhile
        assert not (tmp_path / (name + ".part")).exists()
        assert sum(1 for line in body.splitlines() if json.loads(line)) >= 12
