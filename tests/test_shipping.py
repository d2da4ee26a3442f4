"""A worker's records on their way to a master that cannot keep up: held on the worker in a bounded window, past a
bound in a spill file, shipped in order, nothing dropped; and a real distributed run whose workers offer the master
far more records a second than it takes: it ends on time, loses no worker, and every record lands."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from locustfiles.records import encode_chunks
from locustfiles.shipping import Shipper, window

from .runs import ROOT, records, write_scenario

pytestmark = pytest.mark.timeout(240)


class Master:
    """Stands where the master is: keeps every message, acknowledges a batch only when told to."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[dict[str, Any]], dict[str, int]]] = []
        self.unanswered: list[int] = []

    def __call__(self, batch: list[dict[str, Any]], counts: dict[str, int]) -> None:
        self.messages.append((batch, dict(counts)))
        if batch:
            self.unanswered.append(len(batch))

    def ack_all(self, shipper: Shipper, window: int | None = None) -> None:
        while self.unanswered:
            shipper.on_ack(self.unanswered.pop(0), window)

    def received(self) -> list[int]:
        return [r["n"] for batch, _ in self.messages for r in batch]


def test_the_window_holds_what_the_master_has_not_acknowledged():
    master = Master()
    s = Shipper(master, max_batch=3, max_unacked=2)
    for n in range(10):
        s.add({"n": n})
    s.flush(always=True)
    assert master.received() == [0, 1, 2, 3, 4, 5]  # two batches of three, then the window is full
    assert s.pending() == 4 and s.held_peak == 4 and s.unacked == 2
    s.flush(always=True)  # nothing may go: a message with the worker's state only
    assert master.messages[-1] == ([], {"pending": 4, "held_peak": 4, "spilled": 0, "shipped": 6})
    master.ack_all(s)  # each acknowledgement ships the next batch at once
    master.ack_all(s)
    assert master.received() == list(range(10)) and s.pending() == 0 and s.acked == 10
    # the master may widen the window
    for n in range(10, 25):
        s.add({"n": n})
    s.on_ack(0, 4)
    s.flush()
    assert master.received() == list(range(22)) and s.pending() == 3  # four batches of three on their way


def test_past_the_bound_records_wait_in_a_spill_file_and_leave_it_oldest_first(tmp_path):
    master = Master()
    s = Shipper(master, max_batch=4, max_unacked=1, max_held=5, spill_dir=str(tmp_path))
    for n in range(23):
        s.add({"n": n})
    spill = list(tmp_path.glob("records-spill-*.jsonl"))
    assert len(spill) == 1 and s.spilled == 18 and s.pending() == 23  # three spills of six; five still in memory
    assert [json.loads(line)["n"] for line in spill[0].read_text().splitlines()] == list(range(18))
    s.flush()
    for _ in range(10):
        master.ack_all(s)
    assert master.received() == list(range(23))
    assert not list(tmp_path.glob("records-spill-*.jsonl"))  # emptied: removed


def test_what_never_reached_the_master_is_left_in_a_named_file(tmp_path, capsys):
    master = Master()
    s = Shipper(master, max_batch=2, max_unacked=1, max_held=3, spill_dir=str(tmp_path))
    for n in range(9):
        s.add({"n": n})
    s.flush()
    s.close()  # the master never answered
    s.add({"n": 9})  # a call that ended after the close
    assert master.received() == [0, 1]
    assert s.left_behind is not None
    left = [json.loads(line)["n"] for line in Path(s.left_behind).read_text().splitlines()]
    assert left == list(range(2, 10))
    assert f"7 records never reached the master; they are in {s.left_behind}" in capsys.readouterr().err


def test_the_window_is_about_a_second_of_the_masters_work():
    assert window(1, 200e-6) == 16 and window(2, 200e-6) == 12 and window(10, 200e-6) == 2
    assert window(2, 2e-3) == 1 and window(100, 200e-6) == 1  # never below one batch


@pytest.mark.serial  # ends on time under load: runs alone (make test)
def test_a_master_offered_more_than_it_takes_ends_on_time_and_loses_nothing(tmp_path):
    # one real record of a streamed chat (from the reference run), copied by users that make no calls
    with gzip.open(ROOT / "tests" / "data" / "reference_run" / "records.jsonl.gz", "rt") as f:
        rec = next(r for r in map(json.loads, f) if r["ok"] and r["endpoint"] == "chat" and r["stream"])
    # heavy for the master, light for the workers: 6,000 chunk times, which the master's live figures decode
    rec["chunks"] = encode_chunks([rec["t_start"] + i / 1000 for i in range(1, 6001)], rec["t_start"])
    (tmp_path / "record.json").write_text(json.dumps(rec))
    scenario = write_scenario(tmp_path / "ingest.yaml", {
        "name": "ingest", "seed": 3, "target": "http://127.0.0.1:9", "users": 1, "spawn_rate": 1, "duration": "60s",
        "stop_timeout": "5s", "retry": {"max_attempts": 1, "budget": 0},
        "mix": [{"endpoint": "chat", "models": ["gpt-4o-mini"], "stream": 1.0}]})
    out = tmp_path / "run"
    users, pace, duration = 200, 0.05, 3  # 4,000 records a second offered for 3 s: more than the master takes
    env = dict(os.environ, INGEST_RECORD=str(tmp_path / "record.json"), INGEST_PACE_S=str(pace),
               TT_API_KEY="ingest-no-calls", PYTHONPATH=str(ROOT))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / "_ingest_locustfile.py"), "SyntheticUser",
         "--headless", "--only-summary", "-u", str(users), "-r", str(users), "--ttbench-duration", str(duration),
         "--scenario", str(scenario), "--ttbench-out", str(out), "--run-id", "ingest", "-H", "http://127.0.0.1:9",
         "--max-spend", "1e12", "--stop-timeout", "5", "--processes", "2", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=200)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    harness = json.loads((out / "harness.json").read_text())
    assert harness["lost_workers"] == [] and harness["shipping"]["left_on_workers"] == 0
    # every record each worker made landed once: its sequence numbers run 1..n with no gap
    seqs: dict[int, list[int]] = {}
    for r in records(out):
        seqs.setdefault(r["worker"], []).append(int(r["call_id"].rsplit("-", 1)[1]))
    assert sorted(seqs) == [0, 1]
    for w, s in seqs.items():
        assert sorted(s) == list(range(1, len(s) + 1)), w
    made = sum(len(s) for s in seqs.values())
    by_worker = {w["worker_index"]: w for w in harness["workers"]}
    assert {w: by_worker[w]["records"] for w in seqs} == {w: len(s) for w, s in seqs.items()}
    # the load was not slowed: the users made their records at their pace (a loaded 2-core machine: a third of it),
    # and stopped when the master's clock said so: that clock is not starved by the records it takes
    assert made >= 0.3 * users / pace * duration, made
    starts = [r["t_start"] for r in records(out)]
    assert max(starts) - min(starts) < duration + 1.5, max(starts) - min(starts)
    # the master fell behind and the workers held records for it; it says so when they still hold some once the
    # users have stopped (a fast machine's master may have caught up by then: then it says nothing)
    assert harness["shipping"]["held_peak"] > 0
    said = "the workers still hold" in proc.stderr and "records the master has not taken; waiting" in proc.stderr
    assert said == (harness["shipping"]["pending_at_stop"] > 0), (harness["shipping"], proc.stderr[-2000:])
    print(f"{made} records in {took:.1f} s, held peak {harness['shipping']['held_peak']}")
    assert took < duration + 100
