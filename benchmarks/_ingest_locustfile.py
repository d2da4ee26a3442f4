"""Workers for benchmarks/master_ingest.py: ttbench's runtime, with users that make no HTTP calls.

Each user emits, at a fixed pace, a copy of one real attempt record (INGEST_RECORD: a JSON file holding it)
through the worker's own record path (the runtime's sink, shipped to the master at every flush), with fresh
ids and start time. The master is ttbench's own: it receives, writes records.jsonl, keeps live figures.
Settings from the environment: INGEST_RECORD, INGEST_PACE_S (seconds between one user's records).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from locust import User, constant_pacing, events, task  # noqa: E402

from locustfiles.runtime import Runtime, install  # noqa: E402
from locustfiles.telemetry import add_arguments as add_metrics_arguments  # noqa: E402

install()
events.init_command_line_parser.add_listener(lambda parser, **_kw: add_metrics_arguments(parser))

with open(os.environ["INGEST_RECORD"], encoding="utf-8") as _f:
    TEMPLATE = json.load(_f)
_SEQ = itertools.count(1)


class SyntheticUser(User):
    """Emits one synthetic record per pace, as if a call had just finished."""

    wait_time = constant_pacing(float(os.environ.get("INGEST_PACE_S", "0.1")))

    @task
    def emit(self) -> None:
        """One record through the runtime's sink."""
        rt = Runtime.get()
        n = next(_SEQ)
        call = f"{rt.run_id}-w{rt.worker}-{n}"
        rec = dict(TEMPLATE, run_id=rt.run_id, worker=rt.worker, call_id=call, idempotency_key=call,
                   attempt_id=f"{call}-a1", request_id=f"req_{rt.worker:04x}{n:020x}", t_start=time.time())
        rt._emit(rec)
