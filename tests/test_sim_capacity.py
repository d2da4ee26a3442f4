"""Finite capacity: slots, a bounded queue, 429 with Retry-After, and the published capacity formula."""

from __future__ import annotations

import threading

import pytest

from .helpers import chat, truth_by_id

pytestmark = pytest.mark.timeout(60)

SLOW = {"defaults": {"chat": {"slots": 1, "queue": 1, "decode_tokens_per_s": 40,
                              "output_tokens": {"min": 12, "max": 12}}}}


def test_queue_full_gives_429_with_retry_after(make_sim):
    sim = make_sim(SLOW)
    results = []
    lock = threading.Lock()

    def call(i):
        r = chat(sim, attempt=f"q{i}")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 200, 429, 429]
    for r in results:
        if r.status_code == 429:
            assert 1 <= int(r.headers["Retry-After"]) <= 60
    queued = [e["queue_ms"] for e in truth_by_id(sim).values() if e["queue_ms"]]
    assert max(queued) > 100  # the second call waited for the first one's slot
    pools = sim.admin("/_sim/stats").json()["pools"]["gpt-4o-mini"]
    assert pools["refused"] == 2 and pools["peak_queue"] == 1


def test_capacity_route_serves_the_documented_formula(make_sim):
    over = {"defaults": {"chat": {"slots": 8, "base_ms": 40, "prefill_ms_per_token": 0.5, "ttft_jitter_ms": 20,
                                  "decode_tokens_per_s": 100, "slowdown_at_full": 0.2}}}
    sim = make_sim(over, fast=False)
    cap = sim.admin("/_sim/capacity", model="gpt-4o-mini", input_tokens=200, output_tokens=80).json()
    service = (40 + 10 + 0.5 * 200) / 1000 + 80 / (100 * 0.8)
    assert cap["service_time_s"] == pytest.approx(service)
    assert cap["service_rate_rps"] == pytest.approx(8 / service)
    assert cap["max_sustainable_rps"] == pytest.approx(8 / service / 0.95)
    assert 1 < cap["max_sustainable_rps"] < 100  # tens of requests/s, not thousands
    assert sim.admin("/_sim/capacity", model="nope").status_code == 404
    assert sim.admin("/_sim/capacity", model="gpt-4o-mini", input_tokens="x").status_code == 400


def test_decode_slows_down_with_occupancy(make_sim):
    over = {"defaults": {"chat": {"slots": 4, "queue": 4, "decode_tokens_per_s": 100, "slowdown_at_full": 0.5,
                                  "base_ms": 0, "ttft_jitter_ms": 0, "output_tokens": {"min": 30, "max": 30}}}}
    sim = make_sim(over, fast=False)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 30, "stream": True}
    alone = chat(sim, body, attempt="solo")
    threads = [threading.Thread(target=chat, args=(sim, body), kwargs={"attempt": f"c{i}"}) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = truth_by_id(sim)

    def gap(e):
        t = e["chunk_times"]
        return (t[-3] - t[1]) / (len(t) - 4)

    solo = gap(entries[alone.headers["X-TT-Request-ID"]])
    busy = [gap(e) for e in entries.values() if (e["client_attempt_id"] or "").startswith("c")]
    assert solo == pytest.approx(0.01, rel=0.3)
    assert min(busy) > solo * 1.4  # four streams at once: each decodes at (1 - 0.5) of full speed
