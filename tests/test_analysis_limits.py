"""The limit report on hand-built version-3 records: accepted calls and refusals, overshoot in both accountings,
header drift, planted header findings, limits enforced off the advertised one, and the time from an empty bucket
to the first 429. Every expected figure is worked out by hand in the comments."""

from __future__ import annotations

import heapq
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from analysis import columnar, records
from analysis.limits import limits_report, read_headers
from analysis.load import InputError
from analysis.records import load_records
from analysis.settings import check_analysis
from ttformats.buckets import Limits, TenantLimiter

pytestmark = pytest.mark.timeout(60)

T0 = 1000.0


def rec3(i: int | str, t: float, status: int | None = 200, tenant: str | None = "a", headers_ms: float = 10.0,
         end_ms: float = 100.0, u_in: int = 100, u_out: int = 50, max_tokens: int | None = 100,
         refusal: str | None = None, rl: dict[str, Any] | None = None, error_type: str | None = None,
         first_ms: float | None = 50.0, stream: bool = True, call: str | None = None, attempt: int = 1,
         final: bool = True, **kw: Any) -> dict[str, Any]:
    """A version-3 record with every key the harness writes."""
    ok = status == 200 and kw.get("error_kind") is None
    kind = None if ok else kw.pop("error_kind", None) or ("http_429" if status == 429 else
                                                           "connect" if status is None else "http_4xx"
                                                           if status < 500 else "http_5xx")
    kw.pop("error_kind", None)
    call = call or f"c{i}"
    r = {"v": 3, "run_id": "r", "worker": 0, "attempt_id": f"a{i}", "call_id": call, "attempt": attempt,
         "final": final, "idempotency_key": call, "request_id": None if status is None else f"req-{i}",
         "request_id_header": "x-request-id", "ids": None, "original_request_id": None, "replayed": False,
         "sent": True, "dry_run_ignored": False, "framing_mismatch": False, "endpoint": "chat", "model": "m",
         "stream": stream, "stream_format": "sse" if stream else None, "dry_run": False, "pair_id": None,
         "session_id": None, "turn": None, "name": "chat", "t_start": t, "scheduled": None,
         "schedule_lag_ms": None, "stage": None, "arrival": None, "headers_ms": None if status is None else headers_ms,
         "first_event_ms": first_ms if ok and stream else None, "first_content_ms": first_ms if ok and stream else None,
         "first_text_ms": first_ms if ok and stream else None, "first_tool_ms": None, "first_reasoning_ms": None,
         "end_ms": end_ms, "chunks": None, "status": status, "ok": ok, "error_kind": kind, "error": None,
         "error_type": error_type, "error_code": None, "error_reason": None, "retry_after_s": None,
         "retry_after_header": None, "ratelimit_reset_s": None, "finish_reason": "stop" if ok else None,
         "usage": ({"input": u_in, "output": u_out, "cached_input": 0, "cache_write": 0, "reasoning": 0}
                   if status is not None and status < 400 else None),
         "usage_raw": None, "output_chars": None, "estimate": None, "images_requested": None,
         "images_returned": None, "image_size": None, "image_quality": None, "embeddings": None,
         "prompt_tokens_target": u_in, "max_tokens": max_tokens, "tenant": tenant, "refusal": refusal,
         "ratelimit": rl}
    r.update(kw)
    return r


def req_headers(limit: float, remaining: float | None, reset_s: float | None = None) -> dict[str, Any]:
    """A `ratelimit` with the requests dimension only."""
    return {"requests": {"limit": limit, "remaining": remaining, "reset_s": reset_s}}


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    return path


def limits(tmp_path: Path, records: list[dict[str, Any]], settings: dict[str, Any] | None = None) -> dict[str, Any]:
    p = write(tmp_path / "records.jsonl", records)
    out, _ = limits_report(load_records(p), p, settings)
    assert out is not None
    return out


def kinds(out: dict[str, Any]) -> set[tuple[str, Any]]:
    return {(f["kind"], f["request_id"]) for f in out["findings"]}


def test_accepted_calls_and_refusals_by_kind(tmp_path):
    records = [
        rec3(1, T0),  # a success
        rec3(2, T0 + 1, error_kind="truncated"),  # a 200 whose stream broke: admitted all the same
        rec3(3, T0 + 2, status=500),  # the upstream failed after the gateway admitted it
        rec3(4, T0 + 3, status=429, refusal="rate_limit"),
        rec3(5, T0 + 4, status=429),  # a 429 the profile did not classify: a rate limit
        rec3(6, T0 + 5, status=429, refusal="quota", error_code="insufficient_quota"),  # OpenAI's spent credit
        rec3(7, T0 + 6, status=400, refusal="quota"),  # Anthropic's spend limit
        rec3(8, T0 + 7, status=None),  # never reached the gateway
        rec3(9, T0 + 8, dry_run=True),  # a dry run: neither counted nor refused
        rec3(10, T0 + 9, replayed=True),  # the gateway's stored answer: a request, no tokens
    ]
    out = limits(tmp_path, records, {"tenants": {"a": {"rpm": 1000}}})
    a = out["tenants"]["a"]
    assert a["accepted_requests"] == 4
    assert a["refusals"] == {"rate_limit": 2, "quota": 2}
    assert a["accepted_tokens"] == 300  # 100 in + 50 out twice; the 500 has no usage: 0 tokens
    assert a["dimensions"]["requests"]["limit_source"] == "settings"
    assert a["dimensions"]["requests"]["accepted"] == 4
    # both rate-limit refusals came with the bucket all but full (1000/min): refused with room; the quota
    # refusals are no rate limit's
    assert a["dimensions"]["requests"]["early_refusals"] == 2
    assert out["finding_counts"] == {"remaining_stuck": 0, "reset_wrong": 0, "limit_mismatch": 1}


def test_no_headers_and_no_configured_limits_is_no_limit_report(tmp_path):
    p = write(tmp_path / "records.jsonl", [rec3(1, T0), rec3(2, T0 + 1, tenant=None)])
    assert limits_report(load_records(p), p, {"tenants": {"other": {"rpm": 5}}}) == (None, {})


# Three calls admitted at 0, 0.25 and 0.5 s (tokens per minute 600: 10 tokens/s), each 100 in + 200 out = 300
# tokens, all ending at +10 s. After the call (Envoy, Kong, APISIX): nothing is taken at admission (the bucket is
# above zero each time); at +10 s the bucket is full (600), the first end takes 300 (300 left), the second 300
# (0), the third 300 (-300): that one's 300 tokens are past the limit. Overshoot 300 of 900 accepted = 33.3 %;
# the bucket allowed 600 + 10 tokens/s x 10 s = 700 over the span.
CONCURRENT = [rec3(1, T0, end_ms=10_000, u_out=200, max_tokens=200),
              rec3(2, T0 + 0.25, end_ms=9_750, u_out=200, max_tokens=200),
              rec3(3, T0 + 0.5, end_ms=9_500, u_out=200, max_tokens=200)]


def test_concurrent_calls_ending_together_overshoot_after_call(tmp_path):
    out = limits(tmp_path, CONCURRENT, {"accounting": "after_call", "tenants": {"a": {"tpm": 600}}})
    a = out["tenants"]["a"]
    tok = a["dimensions"]["tokens"]
    assert out["accounting"] == "after_call"
    assert a["accepted_tokens"] == 900 and tok["accepted"] == 900
    assert a["overshoot_tokens"] == pytest.approx(300) and tok["overshoot"] == pytest.approx(300)
    assert a["overshoot_pct"] == pytest.approx(100 / 3)
    assert tok["allowed"] == pytest.approx(700)
    assert "requests" not in a["dimensions"]
    assert out["finding_counts"]["limit_mismatch"] == 0  # each was admitted with the bucket above zero


def test_admission_accounting_refuses_instead_of_overshooting(tmp_path):
    # At admission (OpenAI, Anthropic) each call takes its estimate, 100 in + max_tokens 200 = 300: 600 -> 300 at
    # 0 s, 302.5 -> 2.5 at 0.25 s; at 0.5 s the bucket holds 5 < 300 and the gateway refuses the third. The two
    # end with 100 + 150 = 250 tokens and get 50 back each: nothing is ever taken past zero.
    records = [rec3(1, T0, end_ms=10_000, u_out=150, max_tokens=200),
               rec3(2, T0 + 0.25, end_ms=9_750, u_out=150, max_tokens=200),
               rec3(3, T0 + 0.5, status=429, refusal="rate_limit", max_tokens=200)]
    out = limits(tmp_path, records, {"tenants": {"a": {"tpm": 600}}})
    a = out["tenants"]["a"]
    assert out["accounting"] == "admission"
    assert a["accepted_tokens"] == 500 and a["overshoot_tokens"] == 0 and a["overshoot_pct"] == 0
    assert a["refusals"]["rate_limit"] == 1 and a["dimensions"]["tokens"]["early_refusals"] == 0
    assert out["finding_counts"] == {"remaining_stuck": 0, "reset_wrong": 0, "limit_mismatch": 0}
    # the same three calls all admitted would have overdrawn it: 2.5 + 2.5 - 300 = -295 past zero
    out = limits(tmp_path, CONCURRENT, {"tenants": {"a": {"tpm": 600}}})
    assert out["tenants"]["a"]["overshoot_tokens"] == pytest.approx(295)


def test_remaining_and_reset_drift_against_the_model(tmp_path):
    # 60 requests/min from the headers: 1 request/s. A at 0 s: 60 -> 59 (model remaining 59); its headers came
    # 0.5 s later, when the bucket held 59.5: reset 0.5 s. B at +10 s: full again, 59 left, headers 1 s later
    # at 60: reset 0. C at +10.5 s: 59.5 -> 58.5, remaining 58, reset 1.5 s (headers at once).
    records = [rec3("A", T0, headers_ms=500, rl=req_headers(60, 58, 1.0)),  # drift -1, +0.5
               rec3("B", T0 + 10, headers_ms=1000, rl=req_headers(60, 59, 0.0)),  # 0, 0
               rec3("C", T0 + 10.5, headers_ms=0, rl=req_headers(60, 57, 3.0))]  # -1, +1.5
    out = limits(tmp_path, records)
    d = out["tenants"]["a"]["dimensions"]["requests"]
    assert d["limit"] == 60 and d["limit_source"] == "headers"
    assert d["drift"]["remaining"] == {"n": 3, "p50_abs": 1.0, "p95_abs": 1.0, "max_abs": 1.0,
                                       "mean": pytest.approx(-2 / 3)}
    reset = d["drift"]["reset_s"]
    assert reset["n"] == 3 and reset["max_abs"] == pytest.approx(1.5)
    assert reset["p50_abs"] == pytest.approx(0.5) and reset["p95_abs"] == pytest.approx(0.5 + 0.9 * 1.0)
    assert out["findings"] == []  # within the tolerances (6 requests, 2 s)


def gateway(arrivals: list[float], rpm: int, seed: int, stuck: frozenset[int] | set[int] = frozenset(),
            wrong: frozenset[int] | set[int] = frozenset(), advertise: int | None = None) -> list[dict[str, Any]]:
    """A gateway enforcing `rpm` with the bucket model, each call reaching it 1-30 ms after the client started it
    (answered 1-30 ms later again), 2 s long; its headers say the truth, but for the planted calls: `stuck`
    report the remaining stuck at the limit - 1, `wrong` a reset 30 s late."""
    rng = random.Random(seed)
    lim = TenantLimiter(Limits(rpm=rpm), "admission", arrivals[0])
    heap: list[tuple[float, int, int, float]] = []
    for i, t in enumerate(arrivals):
        heapq.heappush(heap, (t + rng.uniform(0.001, 0.03), 1, i, t))
    out: dict[int, dict[str, Any]] = {}
    shown = advertise or rpm
    while heap:
        ts, kind, i, t = heapq.heappop(heap)
        if kind == 0:
            lim.finish(ts, 0, 0)
            continue
        h_ms = (ts - t) * 1000 + rng.uniform(1, 30)
        if lim.refusal(ts, 0):
            out[i] = rec3(i, t, status=429, refusal="rate_limit", headers_ms=h_ms, end_ms=h_ms + 1,
                          rl=req_headers(shown, 0, lim.requests.reset_s(ts)))
            continue
        lim.admit(ts, 0)
        remaining, reset = math.floor(lim.requests.level), lim.requests.reset_s(ts)
        if i in stuck:
            assert remaining <= 0.7 * rpm  # where the simulator plants it
            remaining = rpm - 1
        if i in wrong:
            reset += 30.0
        out[i] = rec3(i, t, headers_ms=h_ms, end_ms=h_ms + 2000, rl=req_headers(shown, remaining, reset))
        heapq.heappush(heap, (ts + 2.0, 0, i, t))
    return [out[i] for i in range(len(arrivals))]


def arrivals(seed: int) -> list[float]:
    """Two minutes of calls: a steady 3/s with bursts of 20 calls within 5 ms every 15 s."""
    rng = random.Random(seed)
    steady = [T0 + rng.uniform(0, 120) for _ in range(360)]
    bursts = [T0 + 15 * b + rng.uniform(0, 0.005) for b in range(1, 8) for _ in range(20)]
    return sorted(steady + bursts)


def test_a_truthful_gateway_has_no_findings_despite_jitter_and_bursts(tmp_path):
    for seed in (1, 2, 3):
        records = gateway(arrivals(seed), 60, seed)
        assert sum(r["status"] == 429 for r in records) > 100  # the limit binds most of the time
        out = limits(tmp_path, records)
        assert out["findings"] == [], out["findings"][:3]
        d = out["tenants"]["a"]["dimensions"]["requests"]
        assert d["drift"]["remaining"]["max_abs"] > 0  # the client's order is not the gateway's


def test_planted_stuck_remaining_and_late_resets_are_found_exactly(tmp_path):
    calls = arrivals(7)
    truthful = gateway(calls, 60, 7)
    admitted = [i for i, r in enumerate(truthful) if r["status"] == 200]
    # stuck where the true remaining is at most 70% of the limit (42); late resets anywhere
    low = [i for i in admitted if truthful[i]["ratelimit"]["requests"]["remaining"] <= 42]
    stuck, wrong = set(low[20:30]) | {low[-1]}, set(admitted[:3]) | set(admitted[100:105])
    out = limits(tmp_path, gateway(calls, 60, 7, stuck=stuck, wrong=wrong))
    assert kinds(out) == ({("remaining_stuck", f"req-{i}") for i in stuck}
                          | {("reset_wrong", f"req-{i}") for i in wrong})
    assert out["finding_counts"] == {"remaining_stuck": len(stuck), "reset_wrong": len(wrong), "limit_mismatch": 0}
    f = next(f for f in out["findings"] if f["kind"] == "remaining_stuck")
    assert f["tenant"] == "a" and f["dimension"] == "requests" and f["detail"]["reported"] == 59


def test_header_findings_start_just_past_their_tolerances(tmp_path):
    # 60 requests/min (1/s), calls 0.1 s apart, each answered within 1 ms: after call k the bucket holds
    # 59 - 0.9 k (at most 0.001 more by the time the gateway saw it). Tolerances: max(2, 10% of 60) = 6 requests,
    # max(2 s, 120 / 60) = 2 s. Remaining: call 28 holds 33.8 -> reported 33 + 6 = 39 is within; call 29 holds
    # 32.9 -> 32 + 7 = 39 is past. Reset (60 - level) s: call 27 (34.7: 25.3 s) reported 27.2 is within 2 s,
    # call 26 (35.6: 24.4 s) 26.5 is past; call 24 (37.4: 22.6 s) 20.7 within, call 25 (36.5: 23.5 s) 21.4 past.
    remaining = {28: 39, 29: 39}
    reset = {27: 27.2, 26: 26.5, 24: 20.7, 25: 21.4}
    records = []
    for k in range(30):
        level = 59 - 0.9 * k
        records.append(rec3(k, T0 + 0.1 * k, headers_ms=1, rl=req_headers(
            60, remaining.get(k, math.floor(level + 1e-9)), reset.get(k, 60 - level))))
    out = limits(tmp_path, records)
    assert kinds(out) == {("remaining_stuck", "req-29"), ("reset_wrong", "req-26"), ("reset_wrong", "req-25")}


def test_refusals_with_room_are_a_limit_enforced_below_the_advertised_one(tmp_path):
    # Advertised 60/min, enforced 5/min (5/60 per second). Calls at 0..4 s are admitted; the real bucket: 5 -> 4,
    # 4.083 -> 3.083, 3.167 -> 2.167, 2.25 -> 1.25, 1.333 -> 0.333, so remaining 4, 3, 2, 1, 0; at 5.5 s it holds
    # 0.458 < 1 and refuses. The advertised bucket (1/s) would be full then: a refusal with room.
    # The largest capacity C at which that refusal is justified (C - 5 + 5.5 C / 60 < 1.5, with half a request of
    # slack): C < 5.95, so 5.
    records = [rec3(k, T0 + k, rl=req_headers(60, 4 - k)) for k in range(5)]
    records.append(rec3(5, T0 + 5.5, status=429, refusal="rate_limit", rl=req_headers(60, 0)))
    out = limits(tmp_path, records)
    assert kinds(out) == {("limit_mismatch", None)}
    f = out["findings"][0]
    assert (f["tenant"], f["dimension"]) == ("a", "requests")
    assert f["detail"]["enforced"] == "below" and f["detail"]["early_refusals"] == 1
    assert f["detail"]["estimated_limit"] == 5 and f["detail"]["largest_remaining_plus_one"] == 5
    # the same calls against an advertised 5/min: nothing to report
    for r in records:
        r["ratelimit"]["requests"]["limit"] = 5
    assert limits(tmp_path, records)["findings"] == []


def test_acceptances_past_the_limit_are_a_limit_enforced_above_it(tmp_path):
    # Advertised 60/min; the gateway admits 80 calls 10 ms apart (each answered within 5 ms, so none can have
    # overtaken another): after the call k (from 0) the model's bucket holds 60 - (k + 1) + 0.01 k, and even
    # with the 5 ms of refill the gateway may have seen it is past the tolerance of 6 from k = 66 on
    # (59 - 0.99 k + 0.005 < -6): 14 calls.
    records = [rec3(k, T0 + k * 0.01, headers_ms=5, rl=req_headers(60, None)) for k in range(80)]
    out = limits(tmp_path, records)
    assert kinds(out) == {("limit_mismatch", None)}
    d = out["findings"][0]["detail"]
    assert d["enforced"] == "above" and d["late_acceptances"] == 14 and d["early_refusals"] == 0
    # the smallest capacity C that admits them all (half a request of slack): C - 80 + (0.79 + 0.005) C / 60
    # >= -0.5, C >= 78.46: 79
    assert d["estimated_limit"] == 79


def test_time_from_an_empty_bucket_to_the_first_429(tmp_path):
    # 3 requests/min from the scenario (0.05/s). Admitted at 0, 1, 2 s: 3 -> 0.1 after the third, the bucket is
    # empty; 429s at 2.5 and 3 s: the first 0.5 s after. At 30 s it holds 1.5 (refilled), admits: 0.5, empty
    # again; 31 s admitted anyway (0.55 -> -0.45); a 429 at 34 s: 4 s after. At 100 s it is full (3): 2, then
    # 100.5 s: 1.025 (not empty), 101 s: 0.05 (empty); 102 s admitted (-0.9); no 429 before it refills (by
    # 200 s): an episode without a 429.
    times = [0, 1, 2, 30, 31, 100, 100.5, 101, 102, 200]
    records = [rec3(k, T0 + t) for k, t in enumerate(times)]
    records += [rec3(f"r{k}", T0 + t, status=429, refusal="rate_limit") for k, t in enumerate((2.5, 3, 34))]
    out = limits(tmp_path, records, {"tenants": {"a": {"rpm": 3}}})
    ep = out["tenants"]["a"]["dimensions"]["requests"]["empty_to_first_429"]
    assert ep == {"episodes": 3, "with_429": 2, "without_429": 1, "idle": 0, "median_s": pytest.approx(2.25),
                  "max_s": pytest.approx(4.0)}
    assert out["findings"] == []


def test_the_light_pass_reads_only_lines_with_headers_or_a_429(tmp_path):
    p = write(tmp_path / "records.jsonl", [
        rec3(1, T0, rl=req_headers(60, 59, 1.0)), rec3(2, T0 + 1),
        rec3(3, T0 + 2, status=429, refusal="rate_limit", error_type="requests"),
        rec3(4, T0 + 3, error="the body said \"ratelimit\": {\"requests\": 1}")])
    with open(p, "a") as f:
        f.write('{"v": 3, "attempt_id": "a9", "ratelimit": {"tokens": {"limit": 5')  # torn
    assert read_headers(p) == {"a1": ({"requests": {"limit": 60.0, "remaining": 59.0, "reset_s": 1.0}}, None),
                               "a3": (None, "requests")}


def test_the_columnar_copy_finds_the_same_headers_in_every_part(tmp_path, monkeypatch):
    """The report takes the headers from the columnar copy (found while it is built, part by part, by two
    processes): the same as the light pass, the later record of an attempt id winning across parts."""
    filler = [rec3(f"f{k}", T0 + 10 + k) for k in range(300)]
    lines = [rec3(1, T0, rl=req_headers(60, 59, 1.0)), *filler[:150],
             rec3(3, T0 + 2, status=429, refusal="rate_limit", error_type="requests"), *filler[150:],
             rec3(1, T0 + 500, rl=req_headers(60, 10, 2.0)),  # the same attempt id again, parts later
             rec3(4, T0 + 3, error="the body said \"ratelimit\": {\"requests\": 1}")]
    p = write(tmp_path / "records.jsonl", lines)
    monkeypatch.setattr(columnar, "PART_BYTES", 20_000)
    monkeypatch.setattr(records, "_READ_BYTES", 20_000)
    monkeypatch.setattr(columnar, "HELPER_BYTES", 0)
    with columnar.ensure(tmp_path) as col:
        assert len(col.meta["parts"]) > 3
        assert col.headers() == {"a1": ({"requests": {"limit": 60.0, "remaining": 10.0, "reset_s": 2.0}}, None),
                                 "a3": (None, "requests")}
    assert read_headers(p) == col.headers()


@pytest.mark.parametrize(("analysis", "message"), [
    ({"limits": {"accounting": "later"}}, "analysis.limits.accounting: expected one of admission, after_call"),
    ({"limits": {"tenant": {}}}, "analysis.limits.tenant: unknown key"),
    ({"limits": {"tenants": {"a": {"rpd": 5}}}}, "analysis.limits.tenants.a.rpd: unknown key"),
    ({"limits": {"tenants": {"a": {"rpm": 0}}}}, "analysis.limits.tenants.a.rpm: out of range"),
    ({"limits": {"max_output_default": 0}}, "analysis.limits.max_output_default: expected a whole number"),
])
def test_bad_limit_settings_are_one_line_errors(analysis, message):
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        check_analysis(analysis)
