"""The bare baseline for benchmarks/harness_throughput.py: streamed chat read line by line, nothing parsed.

A FastHttpUser POSTs one fixed streamed chat request and reads the body with geventhttpclient's raw
`readline(b"\\n")` to EOF (so the connection is reused); the only check is the status code.
Settings come from the environment: BARE_API_KEY, BARE_MODEL.
"""

from __future__ import annotations

import json
import os
import time

from locust import FastHttpUser, constant, task

API_KEY = os.environ.get("BARE_API_KEY", "canned-key")
MODEL = os.environ.get("BARE_MODEL", "gpt-4o-mini")
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Accept-Encoding": "identity", "Accept": "text/event-stream",
           "Content-Type": "application/json"}
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Say something about load testing."}],
                   "max_tokens": 32, "stream": True, "stream_options": {"include_usage": True}}).encode()


class BareStream(FastHttpUser):
    """Back-to-back streamed chat calls, each body read line by line to EOF."""

    wait_time = constant(0)

    @task
    def chat(self) -> None:
        """One streamed call; a cut stream or a non-200 status is a failure."""
        t0 = time.perf_counter()
        with self.client.post("/v1/chat/completions", name="chat stream bare", headers=HEADERS, data=BODY,
                              stream=True, catch_response=True) as r:
            nbytes = 0
            try:
                while line := r._response.readline(b"\n"):
                    nbytes += len(line)
            except Exception as exc:  # a cut mid-stream surfaces here
                r.failure(f"stream error: {type(exc).__name__}: {exc}")
            else:
                if r.status_code != 200:
                    r.failure(f"HTTP {r.status_code}")
            r.request_meta["response_time"] = (time.perf_counter() - t0) * 1000
            r.request_meta["response_length"] = nbytes
