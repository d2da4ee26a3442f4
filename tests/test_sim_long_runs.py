"""A simulator that runs for a day: the truth and the ledger on disk as requests finish, streamed back."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from gatewaysim.truth import Truth

from .helpers import STREAM_CHAT, auth, chat

pytestmark = pytest.mark.timeout(90)


def test_finished_entries_live_only_in_the_file_and_stream_back_with_those_in_flight(tmp_path):
    path = tmp_path / "truth.jsonl"
    path.write_text('{"request_id":"from-an-earlier-simulator"}\n')
    truth = Truth(str(path))
    a = truth.open("req_a", endpoint="chat")
    b = truth.open("req_b", endpoint="messages")
    a["outcome"] = "ok"
    truth.close(a)
    truth.close(a)  # a second close writes nothing
    assert list(truth.open_entries) == ["req_b"]
    lines = [json.loads(x) for x in b"".join(truth.chunks(size=7)).decode().splitlines()]
    assert [(e["request_id"], e["outcome"]) for e in lines] == [("req_a", "ok"), ("req_b", "open")]
    truth.close(b)
    assert truth.open_entries == {}
    assert [json.loads(x)["request_id"] for x in path.read_text().splitlines()] == \
        ["from-an-earlier-simulator", "req_a", "req_b"]
    truth.close_file()


def test_the_truth_file_holds_every_entry_the_download_does(make_sim, tmp_path):
    """With --truth FILE the file is complete: planted never-sent requests included."""
    path = tmp_path / "truth.jsonl"
    sim = make_sim({"billing_errors": {"rate": 1.0, "weights": {"unknown_request": 1}}},
                   extra_args=["--truth", str(path)])
    for i in range(3):
        assert chat(sim, attempt=f"att-{i}").status_code == 200
    downloaded = sim.truth()
    ghosts = [e for e in downloaded if e["outcome"] == "never_sent"]
    assert len(ghosts) == 3 and len(downloaded) == 6
    on_disk = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(e["request_id"] for e in on_disk) == sorted(e["request_id"] for e in downloaded)


def test_the_ledger_downloads_while_calls_are_billed(make_sim, tmp_path):
    """A download reads the ledger file on its own connection: calls go on being billed meanwhile, none lost."""
    ledger = tmp_path / "ledger.sqlite"
    sim = make_sim(extra_args=["--ledger", str(ledger)])
    stop = threading.Event()
    done: list[int] = []

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(sim.url + "/v1/chat/completions", json=STREAM_CHAT, headers=auth(sim))
                done.append(r.status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        sizes = []
        for _ in range(5):
            seen = len(done)
            deadline = time.monotonic() + 20
            while len(done) < seen + 3 and time.monotonic() < deadline:  # calls billed since the last download
                time.sleep(0.01)
            rows = sim.ledger()
            assert all(r["type"] in ("hold", "release", "charge") for r in rows)
            csv_text = sim.admin("/_sim/ledger", format="csv").text
            assert csv_text.startswith("time,type,request_id,")
            sizes.append(len(rows))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    assert done and set(done) == {200}
    charges = [r for r in sim.ledger() if r["type"] == "charge"]
    assert len(charges) == len(done)  # one charge per call, every call's charge there
    assert Path(ledger).exists()
