"""Locust's periodic CSV writer is ended at quitting, before Locust's shutdown closes its files."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent

# In a process of its own: importing locust monkey-patches the process for gevent.
SCRIPT = """
import sys
import gevent
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter
from locustfiles.runtime import stop_csv_writer

env = Environment()
env.create_local_runner()
env.stats.log_request("GET", "/a", 12, 100)
writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, sys.argv[1], full_history=False)
greenlet = gevent.spawn(writer.stats_writer)
failed = []
greenlet.link_exception(lambda g: failed.append(repr(g.exception)))
gevent.sleep(0.2)  # it has written once and sleeps until its next pass
ended = stop_csv_writer()
dead = greenlet.dead
writer.close_files()  # what Locust's shutdown does next
gevent.sleep(1.5)  # past the writer's next pass: a writer still alive now fails on the closed files
print(ended, dead, failed, stop_csv_writer())
"""


def test_the_csv_writer_ends_before_its_files_close(tmp_path):
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "locust")], cwd=ROOT, capture_output=True,
                         text=True, timeout=50)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split("\n")[-2] == "1 True [] 0", res.stdout + res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    with open(tmp_path / "locust_stats.csv", newline="") as f:  # flushed: the row written before the end is there
        rows = list(csv.DictReader(f))
    assert [(r["Name"], r["Request Count"]) for r in rows] == [("/a", "1"), ("Aggregated", "1")]
