"""Idempotency-Key rules: replay, 422, 409, failed attempts store nothing, dry-run fingerprint, expiry."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from .helpers import CHAT, STREAM_CHAT, auth, charges, chat, truth_by_id

pytestmark = pytest.mark.timeout(60)


def test_replay_same_body_is_marked_and_not_charged(sim):
    first = chat(sim, key="idem-replay-1")
    second = chat(sim, key="idem-replay-1")
    assert first.status_code == second.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["X-TT-Original-Request-ID"] == first.headers["X-TT-Request-ID"]
    assert second.headers["X-TT-Request-ID"] != first.headers["X-TT-Request-ID"]
    assert second.content == first.content
    rids = {first.headers["X-TT-Request-ID"], second.headers["X-TT-Request-ID"]}
    assert len([c for c in charges(sim) if c["request_id"] in rids]) == 1
    entry = truth_by_id(sim)[second.headers["X-TT-Request-ID"]]
    assert entry["replay_of"] == first.headers["X-TT-Request-ID"]


def test_quoted_key_is_the_same_key(sim):
    first = chat(sim, key="idem-quoted")
    second = chat(sim, key='"idem-quoted"')
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.content == first.content


def test_stream_is_replayed_as_its_events(sim):
    first = chat(sim, STREAM_CHAT, key="idem-stream-1")
    second = chat(sim, STREAM_CHAT, key="idem-stream-1")
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["content-type"].startswith("text/event-stream")
    assert second.text.replace(first.headers["X-TT-Request-ID"], "") == first.text.replace(
        first.headers["X-TT-Request-ID"], "")
    assert second.text.rstrip().endswith("data: [DONE]")


def test_different_body_same_key_is_422(sim):
    chat(sim, key="idem-mismatch")
    other = chat(sim, dict(CHAT, max_tokens=5), key="idem-mismatch")
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert other.headers["x-should-retry"] == "false"


def test_dry_run_flag_is_part_of_the_fingerprint(sim):
    dry = chat(sim, key="idem-dry", **{"X-TT-Dry-Run": "true"})
    assert dry.json()["object"] == "billing.estimate"
    real = chat(sim, key="idem-dry")
    assert real.status_code == 422


def test_in_flight_is_409_with_retry_after(make_sim):
    sim = make_sim({"defaults": {"chat": {"decode_tokens_per_s": 20, "output_tokens": {"min": 20, "max": 20}}}})
    results = {}

    def slow():
        results["first"] = chat(sim, key="idem-flight")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    second = chat(sim, key="idem-flight")
    t.join()
    assert second.status_code == 409
    assert second.headers["Retry-After"] == "1"
    assert second.json()["error"]["code"] == "idempotency_key_in_use"
    assert results["first"].status_code == 200
    third = chat(sim, key="idem-flight")
    assert third.headers["Idempotent-Replayed"] == "true"


def test_failed_attempt_stores_nothing_and_retry_runs_for_real(make_sim):
    sim = make_sim({"faults": {"quota": {"server_error": 1}, "quota_rate": 1.0}})
    failed = chat(sim, key="idem-fail", attempt="a1")
    assert failed.status_code >= 500
    retry = chat(sim, key="idem-fail", attempt="a2")
    assert retry.status_code == 200
    assert "Idempotent-Replayed" not in retry.headers
    rows = charges(sim)
    assert [r["request_id"] for r in rows] == [retry.headers["X-TT-Request-ID"]]
    assert rows[0]["idempotency_key"] == "idem-fail"


def test_keys_expire(make_sim):
    sim = make_sim({"idempotency": {"ttl_s": 1}})
    chat(sim, key="idem-ttl")
    assert chat(sim, key="idem-ttl").headers.get("Idempotent-Replayed") == "true"
    time.sleep(1.2)
    again = chat(sim, key="idem-ttl")
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
    assert len(charges(sim)) == 2


def test_key_scope_includes_the_path(sim):
    chat(sim, key="idem-scope")
    body = {"model": "text-embedding-3-small", "input": "x"}
    r = httpx.post(sim.url + "/v1/embeddings", json=body, headers={**auth(sim), "Idempotency-Key": "idem-scope"})
    assert r.status_code == 200 and "Idempotent-Replayed" not in r.headers


def test_expired_answers_are_deleted_though_their_keys_never_come_back(make_sim):
    """The store is bounded by the TTL: an answer nobody asks for again is deleted, not kept forever."""
    sim = make_sim({"idempotency": {"ttl_s": 1}})
    for key in ("idem-a", "idem-b", "idem-c"):
        assert chat(sim, key=key).status_code == 200
    assert sim.admin("/_sim/stats").json()["idempotency_keys"] == 3
    time.sleep(2.1)  # past the TTL and the once-a-second sweep
    assert chat(sim, key="idem-d").status_code == 200
    assert sim.admin("/_sim/stats").json()["idempotency_keys"] == 1


def test_the_store_replays_answers_before_and_after_they_are_written_to_its_file(tmp_path):
    """Completed answers wait in memory and are written a batch at a time: replay, mismatch and expiry are the
    same on either side of the write."""
    from gatewaysim.idempotency import FLUSH_AT, IdempotencyStore, StoredResponse

    store = IdempotencyStore(ttl_s=1.5, path=str(tmp_path / "idem.sqlite"))
    n = FLUSH_AT + 44  # one batch written at FLUSH_AT, the rest still in memory
    scopes = [("key", "POST", "/v1/chat/completions", f"k{i}") for i in range(n)]
    for i, scope in enumerate(scopes):
        assert store.begin(scope, f"fp{i}") == ("new", None)
        store.complete(scope, StoredResponse(200, {"X": str(i)}, None, [b"data: %d\n\n" % i], f"req_{i}"))
    for i, scope in enumerate(scopes):
        kind, stored = store.begin(scope, f"fp{i}")
        assert kind == "replay" and stored is not None, i
        assert (stored.request_id, stored.headers, stored.frames) == (f"req_{i}", {"X": str(i)}, [b"data: %d\n\n" % i])
        assert store.begin(scope, "other") == ("mismatch", None)
    assert len(store) == n
    time.sleep(1.6)  # past the TTL: every answer expires, written or not
    assert store.begin(scopes[0], "fp0") == ("new", None)
    assert store.begin(scopes[-1], f"fp{n - 1}") == ("new", None)
    assert len(store) == 0
    store.close()
