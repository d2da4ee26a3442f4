"""Each injected fault as a client sees it, the truth's record of it, and the same plan for the same seed."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .helpers import CHAT, GEMINI, MESSAGES, STREAM_CHAT, auth, charges, chat, truth_by_id

pytestmark = pytest.mark.timeout(60)


def only(kind: str, count: int = 50, **extra):
    """A config that plants `kind` on every eligible attempt, up to `count` times."""
    return {"faults": {"quota": {kind: count}, "quota_rate": 1.0, **extra}}


def stream_lines(sim, body, headers=None, path="/v1/chat/completions", params=None):
    """Read a stream line by line; returns (lines, exception or None, response headers)."""
    lines, error = [], None
    with httpx.stream("POST", sim.url + path, json=body, headers={**auth(sim), **(headers or {})},
                      params=params, timeout=10) as r:
        try:
            for line in r.iter_lines():
                lines.append(line)
        except httpx.TransportError as exc:
            error = exc
        return lines, error, r.headers, r.status_code


def test_server_error_statuses_and_no_charge(make_sim):
    sim = make_sim(only("server_error"))
    statuses = {chat(sim, attempt=f"s{i}").status_code for i in range(12)}
    assert statuses <= {500, 502, 503} and len(statuses) >= 2
    msg = httpx.post(sim.url + "/v1/messages", json=MESSAGES, headers={**auth(sim, "anthropic"),
                                                                        "X-Client-Attempt-ID": "m1"})
    assert msg.status_code in (500, 529) and msg.json()["type"] == "error"
    assert charges(sim) == []
    for e in sim.truth():
        assert e["fault"] == "server_error" and e["expected_error_kind"] == "http_5xx"


def test_rate_limited_has_retry_after(make_sim):
    sim = make_sim(only("rate_limited", retry_after_s=2))
    r = chat(sim, attempt="r1")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    g = httpx.post(sim.url + "/v1beta/models/gemini-1.5-pro:generateContent", json=GEMINI, headers=auth(sim, "gemini"))
    assert g.status_code == 429 and g.json()["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_reset_before_the_response(make_sim):
    sim = make_sim(only("reset"))
    with pytest.raises(httpx.TransportError):
        chat(sim, attempt="x1")
    entry = next(iter(truth_by_id(sim).values()))
    assert entry["client_attempt_id"] == "x1"  # joinable although no response ever arrived
    assert entry["fault"] == "reset" and entry["expected_error_kind"] == "reset"
    assert entry["headers_sent"] is None


def test_disconnect_midstream_leaves_no_terminator(make_sim):
    sim = make_sim(only("disconnect_midstream"))
    lines, error, headers, status = stream_lines(sim, STREAM_CHAT)
    assert status == 200 and error is not None
    assert any(line.startswith("data: {") for line in lines)
    assert "data: [DONE]" not in lines
    plain = chat(sim, attempt="plain")  # non-streamed calls are not eligible
    assert plain.status_code == 200
    assert len(charges(sim)) == 1
    entry = truth_by_id(sim)[headers["X-TT-Request-ID"]]
    assert entry["expected_error_kind"] == "truncated" and entry["outcome"] == "failed"


def test_stream_error_in_band_on_each_dialect(make_sim):
    sim = make_sim(only("stream_error"))
    lines, error, _, status = stream_lines(sim, STREAM_CHAT)
    assert status == 200 and error is None
    datas = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert "error" in datas[-1] and "data: [DONE]" not in lines
    lines, _, _, _ = stream_lines(sim, dict(MESSAGES, stream=True), auth(sim, "anthropic"), "/v1/messages")
    assert "event: error" in lines
    lines, _, _, _ = stream_lines(sim, GEMINI, auth(sim, "gemini"),
                                  "/v1beta/models/gemini-1.5-pro:streamGenerateContent", {"alt": "sse"})
    assert json.loads([ln for ln in lines if ln.startswith("data: ")][-1][6:]) == {
        "error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}
    r = httpx.post(sim.url + "/v1beta/models/gemini-1.5-pro:streamGenerateContent", json=GEMINI,
                   headers=auth(sim, "gemini"))
    items = json.loads(r.text)  # the array still closes, with the error as its last element
    assert "error" in items[-1]
    assert charges(sim) == []


def test_malformed_chunk_does_not_parse(make_sim):
    sim = make_sim(only("malformed_chunk"))
    lines, _, _, status = stream_lines(sim, STREAM_CHAT)
    assert status == 200
    bad = 0
    for line in lines:
        if line.startswith("data: {"):
            try:
                json.loads(line[6:])
            except ValueError:
                bad += 1
    assert bad == 1


def test_stall_times_out_a_patient_client_and_is_not_billed(make_sim):
    sim = make_sim(only("stall", count=1, stall_ms=1500))
    with pytest.raises(httpx.ReadTimeout):
        chat(sim, attempt="slow1", timeout=0.3)
    time.sleep(0.3)
    entry = next(e for e in sim.truth() if e["client_attempt_id"] == "slow1")
    assert entry["outcome"] == "cancelled" and entry["fault"] == "stall"
    assert charges(sim) == []
    assert [r["type"] for r in sim.ledger()] == []  # cancelled before any hold


def test_stall_shorter_than_timeout_succeeds_late(make_sim):
    sim = make_sim(only("stall", count=1, stall_ms=400))
    r = chat(sim, attempt="slow2")
    assert r.status_code == 200
    assert r.elapsed.total_seconds() >= 0.4
    assert len(charges(sim)) == 1


def test_fewer_images_billed_per_image_returned(make_sim):
    sim = make_sim(only("fewer_images"))
    body = {"model": "gpt-image-1", "prompt": "otters", "n": 4, "size": "1024x1024", "quality": "low"}
    r = httpx.post(sim.url + "/v1/images/generations", json=body, headers=auth(sim))
    assert r.status_code == 200
    returned = len(r.json()["data"])
    assert 1 <= returned < 4
    (row,) = charges(sim)
    assert row["images"] == returned
    assert float(row["amount"]) == pytest.approx(0.011 * returned)
    entry = truth_by_id(sim)[r.headers["X-TT-Request-ID"]]
    assert entry["images_requested"] == 4 and entry["images_returned"] == returned


@pytest.mark.parametrize("stream", [False, True])
def test_disconnect_after_billing_then_replay(make_sim, stream):
    sim = make_sim(only("disconnect_after_billing", count=1))
    body = STREAM_CHAT if stream else CHAT
    with pytest.raises(httpx.TransportError):
        with httpx.stream("POST", sim.url + "/v1/chat/completions", json=body, timeout=10,
                          headers={**auth(sim), "Idempotency-Key": "dab-1", "X-Client-Attempt-ID": "d1"}) as r:
            r.read()
    retry = chat(sim, body, attempt="d2", key="dab-1")
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
    rows = charges(sim)
    assert len(rows) == 1 and rows[0]["idempotency_key"] == "dab-1"
    first = next(e for e in sim.truth() if e["client_attempt_id"] == "d1")
    assert rows[0]["request_id"] == first["request_id"]
    assert retry.headers["X-TT-Original-Request-ID"] == first["request_id"]


def test_same_seed_and_attempt_ids_give_the_same_faults(make_sim):
    over = {"faults": {"rate": 0.6, "weights": {"server_error": 1, "rate_limited": 1, "stall": 1}, "stall_ms": 1}}
    a = make_sim(over, seed=11)
    b = make_sim(over, seed=11)
    c = make_sim(over, seed=12)
    ids = [f"plan-{i}" for i in range(40)]
    for i in ids:
        chat(a, attempt=i)
    for i in reversed(ids):  # a different arrival order
        chat(b, attempt=i)
        chat(c, attempt=i)

    def plan(sim):
        return {e["client_attempt_id"]: e["fault"] for e in sim.truth()}

    assert plan(a) == plan(b)
    assert plan(a) != plan(c)
    share = sum(1 for f in plan(a).values() if f) / len(ids)
    assert 0.3 < share < 0.9
