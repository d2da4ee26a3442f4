"""Locust users for benchmarks/sim_throughput.py: back-to-back plain or streamed chat against gatewaysim.

Settings come from the environment: SIM_API_KEY, SIM_MODEL, SIM_MAX_TOKENS. Pick one class on the
command line (PlainChat or StreamChat).
"""

from __future__ import annotations

import os
import time

from locust import FastHttpUser, constant, task

API_KEY = os.environ.get("SIM_API_KEY", "tt-sim-local-key")
MODEL = os.environ.get("SIM_MODEL", "gpt-4o-mini")
MAX_TOKENS = int(os.environ.get("SIM_MAX_TOKENS", "32"))
# role chunk + one chunk per token + finish chunk + usage chunk + [DONE]
EXPECTED_EVENTS = MAX_TOKENS + 4
MESSAGES = [{"role": "user", "content": "Say something short about load testing."}]
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Accept-Encoding": "identity"}
STREAM_HEADERS = {**HEADERS, "Accept": "text/event-stream"}


class PlainChat(FastHttpUser):
    """POST /v1/chat/completions with a JSON answer."""

    wait_time = constant(0)

    @task
    def chat(self) -> None:
        """One plain chat call; any non-2xx status counts as a failure."""
        self.client.post("/v1/chat/completions", name="chat plain", headers=HEADERS,
                         json={"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS})


class StreamChat(FastHttpUser):
    """POST /v1/chat/completions with stream=true, every SSE line read to EOF."""

    wait_time = constant(0)

    @task
    def chat(self) -> None:
        """One streamed chat call, read line by line with the raw geventhttpclient readline."""
        body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "stream": True,
                "stream_options": {"include_usage": True}}
        t0 = time.perf_counter()
        with self.client.post("/v1/chat/completions", name="chat stream", headers=STREAM_HEADERS, json=body,
                              stream=True, catch_response=True) as r:
            events = 0
            done = False
            nbytes = 0
            try:
                while line := r._response.readline(b"\n"):
                    nbytes += len(line)
                    if line.startswith(b"data:"):
                        events += 1
                        if line.startswith(b"data: [DONE]"):
                            done = True  # keep reading to EOF so the connection is reused
            except Exception as exc:  # a cut mid-stream surfaces here
                r.failure(f"stream error: {type(exc).__name__}: {exc}")
            else:
                if r.status_code != 200:
                    r.failure(f"HTTP {r.status_code}")
                elif not done or events != EXPECTED_EVENTS:
                    r.failure(f"stream incomplete: {events} events, [DONE] {'seen' if done else 'missing'}")
            r.request_meta["response_time"] = (time.perf_counter() - t0) * 1000
            r.request_meta["response_length"] = nbytes
