"""Keys, tenants and limits in the simulator: rate limits, token accounting, concurrency, budgets, advertised
limits, planted header errors, partitioned slots, and the truth and admin views of them.

Expected values are worked out by hand from the bucket model (capacity = the limit, refilled at limit/60 per
second) and the simulator's token rule (ceil(characters / 4); with `ignore_eos` the output is max_tokens).
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatewaysim.config import ConfigError, load_config
from gatewaysim.limits import go_duration
from ttbench.simproc import SimProcess

from .conftest import write_config
from .helpers import sse_events

pytestmark = pytest.mark.timeout(60)

PROMPT = "Hello there"  # 3 tokens
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 12}
MESSAGES = {"model": "claude-3-5-sonnet", "max_tokens": 12, "messages": [{"role": "user", "content": PROMPT}]}
GEMINI = {"contents": [{"parts": [{"text": PROMPT}]}], "generationConfig": {"maxOutputTokens": 12}}
#: gpt-4o keeps its own 50 tokens/s under the fast test timings: 20 tokens take about 0.4 s
SLOW = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 20, "ignore_eos": True}
RATE_HEADER = re.compile(r"^(x-ratelimit-|anthropic-ratelimit-)", re.I)
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def seconds(duration: str) -> float:
    """A Go duration (`1m30.5s`, `17ms`) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * _UNIT[u] for n, u in parts)


def until(rfc3339: str) -> float:
    """Seconds from now until an RFC 3339 time."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rfc3339), rfc3339
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() - time.time()


def send(sim: SimProcess, dialect: str, key: str, body: dict[str, Any] | None = None,
         **headers: str) -> httpx.Response:
    """One call in a dialect with an API key, the whole body read."""
    if dialect == "anthropic":
        url, auth, default = "/v1/messages", {"x-api-key": key}, MESSAGES
    elif dialect == "gemini":
        url, auth, default = "/v1beta/models/gemini-2.5-flash:generateContent", {"x-goog-api-key": key}, GEMINI
    else:
        url, auth, default = "/v1/chat/completions", {"Authorization": f"Bearer {key}"}, CHAT
    return httpx.post(sim.url + url, json=body or default, headers={**auth, **headers}, timeout=30)


def rate_headers(resp: httpx.Response) -> dict[str, str]:
    """The rate-limit headers of a response, by lower-case name."""
    return {k.lower(): v for k, v in resp.headers.items() if RATE_HEADER.match(k)}


def truth_of(sim: SimProcess, resp: httpx.Response) -> dict[str, Any]:
    """The truth entry of a response."""
    rid = resp.headers["X-TT-Request-ID"]
    (entry,) = [e for e in sim.truth() if e["request_id"] == rid]
    return entry


def check_counts(sim: SimProcess) -> None:
    """/_sim/limits agrees with the truth entries, tenant by tenant."""
    tenants = sim.admin("/_sim/limits").json()["tenants"]
    entries = sim.truth()
    for label, t in tenants.items():
        mine = [e["limit"] for e in entries if e["tenant"] == label and e["limit"] is not None and not e["dry_run"]]
        if all(v is None for v in t["limits"].values()):
            assert not mine
            continue
        admitted = [r for r in mine if r["admitted_at"] is not None]
        assert t["accepted_requests"] == len(admitted), label
        assert all(r["finished_at"] is not None for r in admitted)
        assert t["accepted_tokens"] == sum(r["actual_tokens"] for r in admitted), label
        for dim in ("budget", "concurrency", "requests", "tokens"):
            assert t["refused"][dim] == sum(1 for r in mine if r["refused"] == dim), (label, dim)
        for kind in ("remaining_stuck", "reset_wrong"):
            assert t["header_errors"][kind] == sum(1 for r in mine if r["header_error"] == kind), (label, kind)
        assert t["overshoot_tokens"] == pytest.approx(sum(r["overshoot_tokens"] for r in mine))


#: Tenant labels are given: the test configs are written with sorted keys, so positions (`key2`) would move.
KEYS = {
    "k-rpm-openai": {"tenant": "rpm-openai", "rpm": 6},
    "k-rpm-anthropic": {"tenant": "rpm-anthropic", "rpm": 6},
    "k-rpm-gemini": {"tenant": "rpm-gemini", "rpm": 6},
    "k-tpm": {"tenant": "tpm", "tpm": 100},
    "k-conc": {"tenant": "conc", "concurrency": 1},
    "k-budget-openai": {"tenant": "budget-openai", "budget": 0.000001},
    "k-budget-anthropic": {"tenant": "budget-anthropic", "budget": 0.000001},
    "k-budget-gemini": {"tenant": "budget-gemini", "budget": 0.000001},
    "k-advertised": {"tenant": "liar", "rpm": 3, "advertise": {"rpm": 10}},
    "k-replay": {"tenant": "replays", "rpm": 5, "tpm": 60},
    "k-free": {"tenant": "free"},
}


@pytest.fixture(scope="module")
def lsim(tmp_path_factory: pytest.TempPathFactory):
    cfg = write_config(tmp_path_factory.mktemp("limits") / "limits.yaml", {"keys": KEYS})
    with SimProcess(config=cfg, seed=3) as proc:
        yield proc


# ------------------------------------------------------------------------------------------- formats, config


def test_go_duration_format():
    assert [go_duration(s) for s in (0, 0.0004, 0.017, 0.9996, 1.5, 59.9996, 360, 90.5, 3600, 3723.25)] == [
        "0s", "0s", "17ms", "1s", "1.5s", "1m0s", "6m0s", "1m30.5s", "1h0m0s", "1h2m3.25s"]


@pytest.mark.parametrize("text,needle", [
    ("keys: {k1: {rpm: -1}}\n", "keys.k1.rpm: expected a whole number of at least 1"),
    ("keys: {k1: {rpm: 2.5}}\n", "keys.k1.rpm: expected a whole number"),
    ("keys: {k1: {burst: 3}}\n", "keys.k1.burst: unknown key"),
    ("keys: {k1: {slot_share: 1.5}}\n", "keys.k1.slot_share: expected a number in (0, 1]"),
    ("keys: {k1: {budget: lots}}\n", "keys.k1.budget: expected an amount"),
    ("keys: {k1: {budget: -1}}\n", "keys.k1.budget: expected a non-negative amount"),
    ("keys: {k1: {advertise: {rpm: 5}}}\n", "keys.k1.advertise.rpm: tenant 'key1' has no rpm limit"),
    ("keys: {k1: {advertise: {rph: 5}, rpm: 2}}\n", "keys.k1.advertise.rph: unknown key"),
    ("keys: {k1: {tenant: t, rpm: 5}, k2: {tenant: t, rpm: 6}}\n", "keys.k2.rpm: tenant 't' already has rpm 5"),
    ("keys: [k1]\n", "keys: expected a mapping, got a list"),
    ("keys: {k1: 5}\n", "keys.k1: expected a mapping, got a number"),
    ("limits: {accounting: lazy}\n", "limits.accounting: expected one of admission, after_call"),
    ("limits: {slots: private}\n", "limits.slots: expected one of shared, partitioned"),
    ("limits: {window: 60}\n", "limits.window: unknown key"),
    ("limit_errors: {quota: {remaining_wrong: 1}}\n", "limit_errors.quota.remaining_wrong: unknown kind"),
    ("limit_errors: {rate: 0.3}\n", "limit_errors.weights: rate is 0.3 but no kind has a weight"),
])
def test_bad_limits_config_is_a_config_error(tmp_path: Path, text: str, needle: str):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert needle in str(info.value) and str(cfg) in str(info.value)
    assert "\n" not in str(info.value)


def test_keys_of_one_tenant_share_its_limits(tmp_path: Path):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("keys: {a: {tenant: t, rpm: 5}, b: {tenant: t, tpm: 900}, default: {budget: '0.5'}, c: null}\n")
    keys = load_config(cfg).section("keys")
    assert keys["b"] == {"tenant": "t", "rpm": None, "tpm": 900, "concurrency": None, "budget": None,
                         "slot_share": None, "advertise": {"rpm": None, "tpm": None}}
    assert keys["default"]["budget"] == "0.5" and keys["c"]["tenant"] is None


# ------------------------------------------------------------------------------------------------ no keys


def test_without_keys_no_rate_limit_headers_and_no_tenants(sim):
    bodies = [("openai", CHAT), ("openai", dict(CHAT, stream=True)), ("anthropic", MESSAGES), ("gemini", GEMINI)]
    responses = [send(sim, dialect, sim.api_key, body) for dialect, body in bodies]
    responses.append(httpx.post(sim.url + "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"},
                                headers={"Authorization": f"Bearer {sim.api_key}"}))
    for r in responses:
        assert r.status_code == 200 and rate_headers(r) == {}, r.headers
        assert "retry-after" not in r.headers
        entry = truth_of(sim, r)
        assert entry["tenant"] is None and entry["limit"] is None
    assert sim.admin("/_sim/limits").json() == {"accounting": "admission", "slots": "shared", "tenants": {}}
    other = send(sim, "openai", "k-rpm-openai")  # a key of another config is just a wrong key here
    assert other.status_code == 401


# ------------------------------------------------------------------------------------------- requests per min


def test_rpm_openai_remaining_falls_then_429(lsim):
    for k in range(1, 7):
        r = send(lsim, "openai", "k-rpm-openai")
        assert r.status_code == 200
        h = rate_headers(r)
        assert set(h) == {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                          "x-ratelimit-reset-requests"}
        assert h["x-ratelimit-limit-requests"] == "6"
        assert h["x-ratelimit-remaining-requests"] == str(6 - k)
        # level 6 - k after the debit: full again in k / 0.1 s (less the refill since the first call)
        assert seconds(h["x-ratelimit-reset-requests"]) == pytest.approx(10 * k, abs=3)
        entry = truth_of(lsim, r)
        assert entry["tenant"] == "rpm-openai" and entry["limit"]["levels"]["requests"] == pytest.approx(6 - k, abs=0.3)
    r = send(lsim, "openai", "k-rpm-openai")
    assert r.status_code == 429
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "requests" and err["code"] == "rate_limit_exceeded" and err["param"] is None
    assert err["message"].startswith("Rate limit reached for gpt-4o-mini")
    assert "on requests per min (RPM): Limit 6, Used 6, Requested 1. Please try again in " in err["message"]
    wait = re.search(r"Please try again in (\S+)\. Visit", err["message"]).group(1)
    assert seconds(wait) == pytest.approx(10, abs=3)  # (1 - level) / 0.1, the level just above 0
    h = rate_headers(r)
    assert h["x-ratelimit-remaining-requests"] == "0" and h["x-ratelimit-limit-requests"] == "6"
    assert seconds(h["x-ratelimit-reset-requests"]) == pytest.approx(60, abs=3)
    assert "retry-after" not in r.headers
    entry = truth_of(lsim, r)
    assert entry["status"] == 429 and entry["outcome"] == "error"
    assert entry["limit"]["refused"] == "requests" and entry["limit"]["admitted_at"] is None
    assert entry["limit"]["headers"] == h
    assert entry["charged_amount"] == "0" and entry["usage"] is None


def test_rpm_anthropic_429_with_retry_after(lsim):
    for k in range(1, 7):
        r = send(lsim, "anthropic", "k-rpm-anthropic")
        assert r.status_code == 200
        h = rate_headers(r)
        assert set(h) == {"anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
                          "anthropic-ratelimit-requests-reset"}
        assert h["anthropic-ratelimit-requests-limit"] == "6"
        assert h["anthropic-ratelimit-requests-remaining"] == str(6 - k)
        assert until(h["anthropic-ratelimit-requests-reset"]) == pytest.approx(10 * k, abs=3)  # rounded up
    r = send(lsim, "anthropic", "k-rpm-anthropic")
    assert r.status_code == 429
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert body["error"]["message"].startswith(
        "This request would exceed your organization's rate limit of 6 requests per minute")
    assert r.headers["retry-after"] in ("8", "9", "10")  # (1 - level) / 0.1 s, level just above 0, rounded up
    assert rate_headers(r)["anthropic-ratelimit-requests-remaining"] == "0"
    assert truth_of(lsim, r)["limit"]["headers"]["retry-after"] == r.headers["retry-after"]


def test_rpm_gemini_429_has_quota_failure_and_retry_info(lsim):
    for _ in range(6):
        r = send(lsim, "gemini", "k-rpm-gemini")
        assert r.status_code == 200 and rate_headers(r) == {}
    r = send(lsim, "gemini", "k-rpm-gemini")
    assert r.status_code == 429 and rate_headers(r) == {} and "retry-after" not in r.headers
    err = r.json()["error"]
    assert err["code"] == 429 and err["status"] == "RESOURCE_EXHAUSTED"
    assert err["message"] == "Resource has been exhausted (e.g. check quota)."
    by_type = {d["@type"]: d for d in err["details"]}
    (violation,) = by_type["type.googleapis.com/google.rpc.QuotaFailure"]["violations"]
    assert violation == {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                         "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                         "quotaDimensions": {"model": "gemini-2.5-flash", "location": "global"},
                         "quotaValue": "6"}
    assert by_type["type.googleapis.com/google.rpc.RetryInfo"]["retryDelay"] in ("8s", "9s", "10s")
    entry = truth_of(lsim, r)
    assert entry["tenant"] == "rpm-gemini" and entry["limit"]["refused"] == "requests"
    assert entry["limit"]["headers"] == {}


def test_advertised_limit_differs_from_the_enforced_one(lsim):
    for k in range(1, 4):
        r = send(lsim, "openai", "k-advertised")
        assert r.status_code == 200
        h = rate_headers(r)
        assert h["x-ratelimit-limit-requests"] == "10"  # advertised
        assert h["x-ratelimit-remaining-requests"] == str(3 - k)  # the enforced bucket
    r = send(lsim, "openai", "k-advertised")
    assert r.status_code == 429 and "Limit 10" in r.json()["error"]["message"]
    limit = truth_of(lsim, r)["limit"]
    assert limit["advertised"] == {"requests": 10, "tokens": None}
    assert limit["enforced"] == {"requests": 3, "tokens": None}
    assert limit["honest"]["requests"]["limit"] == 10 and limit["header_error"] is None


# ------------------------------------------------------------------------------------------------ tokens


def test_tokens_admission_refuses_an_estimate_above_the_level(lsim):
    big = dict(CHAT, max_tokens=50, ignore_eos=True)  # estimate 3 + 50 = 53, and it uses all of it
    r = send(lsim, "openai", "k-tpm", big)
    assert r.status_code == 200
    h = rate_headers(r)
    assert set(h) == {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"}
    assert h["x-ratelimit-limit-tokens"] == "100" and h["x-ratelimit-remaining-tokens"] == "47"
    assert seconds(h["x-ratelimit-reset-tokens"]) == pytest.approx(53 / (100 / 60), abs=0.5)
    limit = truth_of(lsim, r)["limit"]
    assert limit["estimate"] == 53 and limit["actual_tokens"] == 53 and limit["overshoot_tokens"] == 0
    r = send(lsim, "openai", "k-tpm", big)  # 53 > about 47
    assert r.status_code == 429
    err = r.json()["error"]
    assert err["type"] == "tokens" and err["code"] == "rate_limit_exceeded"
    # 47 plus the refill since the first call (100/60 per second): 47 or 48 left, 53 or 52 used
    assert re.search(r"on tokens per min \(TPM\): Limit 100, Used 5[23], Requested 53\.", err["message"])
    assert rate_headers(r)["x-ratelimit-remaining-tokens"] in ("47", "48")
    assert truth_of(lsim, r)["limit"]["refused"] == "tokens"
    small = dict(CHAT, max_tokens=20)  # estimate 23 fits
    r = send(lsim, "openai", "k-tpm", small)
    assert r.status_code == 200
    out = r.json()["usage"]["completion_tokens"]
    assert rate_headers(r)["x-ratelimit-remaining-tokens"] in ("24", "25")  # 47 - 23, plus the refill
    limit = truth_of(lsim, r)["limit"]
    assert limit["actual_tokens"] == 3 + out and limit["finished_at"] >= limit["admitted_at"]
    too_big = dict(CHAT, max_tokens=200)  # 203 > the whole limit: waiting never helps
    r = send(lsim, "openai", "k-tpm", too_big)
    assert r.status_code == 429 and r.json()["error"]["message"].startswith("Request too large for gpt-4o-mini")


def test_tokens_after_call_overshoot(make_sim):
    sim = make_sim({"limits": {"accounting": "after_call"}, "keys": {"k-ac": {"tpm": 6}}})
    with ThreadPoolExecutor(3) as pool:
        streams = list(pool.map(lambda _: send(sim, "openai", "k-ac", dict(SLOW, max_tokens=10, stream=True)),
                                range(3)))
    for r in streams:
        assert r.status_code == 200 and sse_events(r.text)[-1][1] == "[DONE]"
        # after_call takes nothing at admission: each saw the full bucket
        assert rate_headers(r)["x-ratelimit-remaining-tokens"] == "6"
    limits = [truth_of(sim, r)["limit"] for r in streams]
    assert [x["actual_tokens"] for x in limits] == [13, 13, 13]  # 3 input + 10 output each
    # the first to end takes 13 from 6 (7 past zero); the others find the bucket below zero: 13 each
    assert sorted(x["overshoot_tokens"] for x in limits) == pytest.approx([7, 13, 13], abs=1e-6)
    r = send(sim, "openai", "k-ac")
    assert r.status_code == 429 and r.json()["error"]["type"] == "tokens"
    h = rate_headers(r)
    assert h["x-ratelimit-remaining-tokens"] == "0"
    assert seconds(h["x-ratelimit-reset-tokens"]) == pytest.approx((6 + 33) / 0.1, abs=5)  # level about -33
    tenant = sim.admin("/_sim/limits").json()["tenants"]["key1"]
    assert tenant["overshoot_tokens"] == pytest.approx(33, abs=1e-6)
    assert tenant["accepted_tokens"] == 39 and tenant["refused"]["tokens"] == 1
    check_counts(sim)


# ------------------------------------------------------------------------------------- concurrency, budget


def test_concurrency_limit(lsim):
    headers = {"Authorization": "Bearer k-conc"}
    with httpx.stream("POST", lsim.url + "/v1/chat/completions", json=dict(SLOW, stream=True), headers=headers,
                      timeout=30) as slow:
        assert slow.status_code == 200
        assert rate_headers(slow) == {}  # no per-minute limit, no headers
        r = send(lsim, "openai", "k-conc")
        assert r.status_code == 429
        err = r.json()["error"]
        assert err["type"] == "requests" and err["code"] == "rate_limit_exceeded"
        assert "on concurrent requests: Limit 1, Used 1, Requested 1." in err["message"]
        g = send(lsim, "gemini", "k-conc")
        assert g.status_code == 429
        details = {d["@type"]: d for d in g.json()["error"]["details"]}
        (violation,) = details["type.googleapis.com/google.rpc.QuotaFailure"]["violations"]
        assert violation["quotaValue"] == "1" and "concurrency" in violation["quotaId"].lower()
        assert details["type.googleapis.com/google.rpc.RetryInfo"]["retryDelay"] == "1s"
        a = send(lsim, "anthropic", "k-conc")
        assert a.status_code == 429 and a.headers["retry-after"] == "1"
        assert "rate limit of 1 concurrent requests" in a.json()["error"]["message"]
        slow.read()
    assert truth_of(lsim, r)["limit"]["refused"] == "concurrency"
    deadline = time.monotonic() + 5
    while lsim.admin("/_sim/limits").json()["tenants"]["conc"]["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert send(lsim, "openai", "k-conc").status_code == 200  # the slot of the tenant is free again


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "gemini"])
def test_budget_exhausted_shapes(lsim, dialect):
    key = f"k-budget-{dialect}"
    first = send(lsim, dialect, key)
    assert first.status_code == 200  # nothing spent yet
    fair = truth_of(lsim, first)["fair_amount"]
    assert lsim.admin("/_sim/limits").json()["tenants"][f"budget-{dialect}"]["spent"] == fair
    r = send(lsim, dialect, key)
    assert "retry-after" not in r.headers and rate_headers(r) == {}
    body = r.json()
    if dialect == "openai":
        assert r.status_code == 429
        assert body == {"error": {"message": "You exceeded your current quota, please check your plan and billing "
                                             "details.", "type": "insufficient_quota", "param": None,
                                  "code": "insufficient_quota"}}
    elif dialect == "anthropic":
        assert r.status_code == 400
        assert body == {"type": "error", "error": {"type": "invalid_request_error", "message": (
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade "
            "or purchase credits.")}}
    else:
        assert r.status_code == 429
        err = body["error"]
        assert err["status"] == "RESOURCE_EXHAUSTED" and err["code"] == 429
        assert err["message"] == "You exceeded your current quota, please check your plan and billing details."
        assert [d["@type"] for d in err["details"]] == ["type.googleapis.com/google.rpc.QuotaFailure"]
        assert "billing" in err["details"][0]["violations"][0]["quotaMetric"]
    entry = truth_of(lsim, r)
    assert entry["limit"]["refused"] == "budget" and entry["charged_amount"] == "0"


# ------------------------------------------------------------------------------------ dry runs and replays


def test_dry_runs_pass_and_replays_count_a_request_without_tokens(lsim):
    r = send(lsim, "openai", "k-replay", **{"X-TT-Dry-Run": "true"})
    assert r.status_code == 200 and r.json()["object"] == "billing.estimate"
    h = rate_headers(r)
    assert h["x-ratelimit-remaining-requests"] == "5" and h["x-ratelimit-remaining-tokens"] == "60"
    assert truth_of(lsim, r)["limit"]["admitted_at"] is None
    first = send(lsim, "openai", "k-replay", **{"Idempotency-Key": "lim-1"})
    assert first.status_code == 200
    h = rate_headers(first)
    assert h["x-ratelimit-remaining-requests"] == "4" and h["x-ratelimit-remaining-tokens"] == "45"  # 60 - 15
    out = first.json()["usage"]["completion_tokens"]
    again = send(lsim, "openai", "k-replay", **{"Idempotency-Key": "lim-1"})
    assert again.headers["Idempotent-Replayed"] == "true"
    h = rate_headers(again)
    assert h["x-ratelimit-remaining-requests"] == "3"
    # the first call's unused estimate (12 - out) came back; the replay took no tokens (refill under 1)
    assert h["x-ratelimit-remaining-tokens"] == str(45 + 12 - out)
    limit = truth_of(lsim, again)["limit"]
    assert limit["estimate"] == 0 and limit["actual_tokens"] == 0 and limit["admitted_at"] is not None
    tenant = lsim.admin("/_sim/limits").json()["tenants"]["replays"]
    assert tenant["accepted_requests"] == 2 and tenant["accepted_tokens"] == 3 + out


def test_key_without_limits_gets_a_tenant_but_no_headers(lsim):
    r = send(lsim, "openai", "k-free")
    assert r.status_code == 200 and rate_headers(r) == {}
    entry = truth_of(lsim, r)
    assert entry["tenant"] == "free" and entry["limit"] is None
    own = send(lsim, "anthropic", lsim.api_key)  # the gateway's own key stays valid: tenant `default`
    assert own.status_code == 200 and truth_of(lsim, own)["tenant"] == "default"
    assert send(lsim, "gemini", "no-such-key").status_code == 400
    models = httpx.get(lsim.url + "/v1/models", headers={"Authorization": "Bearer k-rpm-openai"})
    assert models.status_code == 200 and rate_headers(models) == {}
    entry = truth_of(lsim, models)
    assert entry["tenant"] == "rpm-openai" and entry["limit"] is None


def test_admin_limits_counts_equal_the_truth(lsim):
    body = lsim.admin("/_sim/limits").json()
    assert body["accounting"] == "admission" and body["slots"] == "shared"
    assert set(body["tenants"]) == {"rpm-openai", "rpm-anthropic", "rpm-gemini", "tpm", "conc", "budget-openai",
                                    "budget-anthropic", "budget-gemini", "liar", "replays", "free", "default"}
    assert body["tenants"]["liar"]["limits"] == {"rpm": 3, "tpm": None, "concurrency": None, "budget": None}
    assert body["tenants"]["liar"]["advertised"] == {"rpm": 10, "tpm": None}
    assert body["tenants"]["budget-openai"]["limits"]["budget"] == "0.000001"
    assert lsim.admin("/_sim/stats").json()["tenants"] == body["tenants"]
    keys = lsim.admin("/_sim/config").json()["config"]["keys"]
    assert keys["k-advertised"] == {"tenant": "liar", "rpm": 3, "tpm": None, "concurrency": None, "budget": None,
                                    "slot_share": None, "advertise": {"rpm": 10, "tpm": None}}
    check_counts(lsim)


# --------------------------------------------------------------------------------------- planted errors


def test_planted_header_errors_with_quota(make_sim):
    sim = make_sim({"keys": {"k-plant": {"rpm": 10}},
                    "limit_errors": {"quota": {"remaining_stuck": 2, "reset_wrong": 2}, "quota_rate": 1.0}})
    seen = []
    for k in range(1, 11):  # the k-th call leaves 10 - k; full again in 6k s (rate 1/6 per second)
        dialect = "openai" if k % 2 else "anthropic"
        r = send(sim, dialect, "k-plant")
        assert r.status_code == 200
        seen.append((k, dialect, rate_headers(r), r.headers["X-TT-Request-ID"]))
    assert send(sim, "openai", "k-plant").status_code == 429
    truth = {e["request_id"]: e for e in sim.truth()}
    seen = [(k, dialect, h, truth[rid]) for k, dialect, h, rid in seen]
    flagged = {"remaining_stuck": 0, "reset_wrong": 0}
    for k, dialect, h, entry in seen:
        kind = entry["limit"]["header_error"]
        if dialect == "openai":
            remaining = int(h["x-ratelimit-remaining-requests"])
            reset = seconds(h["x-ratelimit-reset-requests"])
        else:
            remaining = int(h["anthropic-ratelimit-requests-remaining"])
            reset = until(h["anthropic-ratelimit-requests-reset"])
        assert entry["limit"]["headers"] == h
        honest = entry["limit"]["honest"]["requests"]
        assert honest["remaining"] == 10 - k and honest["reset_s"] == pytest.approx(6 * k, abs=3)
        if kind is None:
            assert remaining == 10 - k and reset == pytest.approx(6 * k, abs=3)
            continue
        flagged[kind] += 1
        if kind == "remaining_stuck":
            assert remaining == 10 and 10 - k <= 7  # the limit; only where the truth is 70% of it or less
            assert reset == pytest.approx(6 * k, abs=3)
        else:
            assert remaining == 10 - k and reset == pytest.approx(6 * k + 30, abs=3)
    assert flagged == {"remaining_stuck": 2, "reset_wrong": 2}
    assert sim.admin("/_sim/limits").json()["tenants"]["key1"]["header_errors"] == flagged
    assert sim.admin("/_sim/stats").json()["limit_errors_planted"] == flagged
    check_counts(sim)


# --------------------------------------------------------------------------------------- partitioned slots


def _queue_ms_of_other_tenant(sim: SimProcess) -> tuple[float, list[float]]:
    """Tenant a sends 3 slow calls at once, tenant b one a little later: (b's queue_ms, a's queue_ms)."""
    def a_call(_: int) -> httpx.Response:
        return send(sim, "openai", "k-a", SLOW)

    def b_call() -> httpx.Response:
        time.sleep(0.1)
        return send(sim, "openai", "k-b", SLOW)

    with ThreadPoolExecutor(4) as pool:
        a_futures = [pool.submit(a_call, i) for i in range(3)]
        b = pool.submit(b_call).result()
        a = [f.result() for f in a_futures]
    assert b.status_code == 200 and all(r.status_code == 200 for r in a)
    return truth_of(sim, b)["queue_ms"], sorted(truth_of(sim, r)["queue_ms"] for r in a)


@pytest.mark.parametrize("slots", ["partitioned", "shared"])
def test_partitioned_slots_isolate_tenants(make_sim, slots):
    sim = make_sim({"limits": {"slots": slots}, "defaults": {"chat": {"slots": 2}},
                    "keys": {"k-a": {"tenant": "a", "slot_share": 0.5}, "k-b": {"tenant": "b", "slot_share": 0.5}}})
    b_queue, a_queue = _queue_ms_of_other_tenant(sim)
    stats = sim.admin("/_sim/stats").json()
    if slots == "partitioned":
        # one slot each: a's three calls queue behind each other (about 0.4 s per call), b never waits
        assert b_queue == 0
        assert a_queue[0] == 0 and a_queue[1] > 250 and a_queue[2] > 600
        pools = stats["tenant_pools"]["gpt-4o"]
        assert pools["a"]["slots"] == 1 and pools["b"]["slots"] == 1 and pools["a"]["queue_limit"] == 16
        assert pools["a"]["peak_queue"] == 2 and pools["b"]["peak_queue"] == 0
        assert pools["default"]["slots"] == 1  # the gateway's own key: an equal third of 2 slots, at least 1
    else:
        # two shared slots: a holds both, so b queues behind a's calls
        assert b_queue > 150
        assert stats["tenant_pools"] == {}
