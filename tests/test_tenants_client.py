"""The harness's side of limits and tenants: rate-limit headers normalised per dialect, refusals classified by
the profile (quota final, rate limits waiting as their headers say), `tenants:` validated and scheduled."""

from __future__ import annotations

import pytest

from locustfiles.arrivals import Arrivals
from locustfiles.profile import Profile, ProfileError, build_profile, ratelimit_wait, read_ratelimit
from locustfiles.retry import RetryPolicy
from locustfiles.scenario import ScenarioError, parse_scenario
from locustfiles.transport import Outcome, error_fields, quota_failure

pytestmark = pytest.mark.timeout(60)


def _get(headers: dict[str, str]):
    low = {k.lower(): v for k, v in headers.items()}
    return lambda name: low.get(name)


def test_openai_and_anthropic_rate_limit_headers_are_normalised():
    got = read_ratelimit(_get({
        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s", "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984", "x-ratelimit-reset-tokens": "6m0s"}))
    assert got == {"requests": {"limit": 60, "remaining": 59, "reset_s": 1.0},
                   "tokens": {"limit": 150000, "remaining": 149984, "reset_s": 360.0}}
    now = 1_893_456_000.0  # 2030-01-01T00:00:00Z
    got = read_ratelimit(_get({
        "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:12Z"}), now=now)
    assert got == {"requests": {"limit": 50, "remaining": 0, "reset_s": 12.0}}
    # a gateway's prefixed copy of the upstream's headers
    got = read_ratelimit(_get({"llm_provider-x-ratelimit-remaining-requests": "3",
                               "llm_provider-x-ratelimit-limit-requests": "10"}))
    assert got == {"requests": {"limit": 10, "remaining": 3, "reset_s": None}}
    # LiteLLM passes limit and remaining on as they are and the reset only as its prefixed copy
    got = read_ratelimit(_get({"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0",
                               "llm_provider-x-ratelimit-limit-requests": "3",
                               "llm_provider-x-ratelimit-reset-requests": "59.758s"}))
    assert got == {"requests": {"limit": 3, "remaining": 0, "reset_s": 59.758}}
    assert read_ratelimit(_get({"x-request-id": "r"})) is None


def test_gemini_quota_failure_becomes_a_limit_with_nothing_left():
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Resource has been exhausted",
                      "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                          {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                           "quotaId": "GenerateRequestsPerMinutePerProjectPerModel", "quotaValue": "30"}]},
                          {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}}
    assert quota_failure(body) == {"requests": {"limit": 30, "remaining": 0, "reset_s": 7.0}}
    assert quota_failure({"error": {"code": 400}}) is None


def test_wait_from_limit_remaining_and_reset():
    # 60 rpm, none left, full in 60 s: one request is back in 1 s (a continuous bucket), not 60 s
    assert ratelimit_wait({"requests": {"limit": 60, "remaining": 0, "reset_s": 60.0}}, {"requests": 1}) == 1.0
    # tokens: 100 left of 1000, full in 9 s (100 tokens/s): 600 tokens are there in 5 s
    assert ratelimit_wait({"tokens": {"limit": 1000, "remaining": 100, "reset_s": 9.0}},
                          {"tokens": 600}) == pytest.approx(5.0)
    # the longest of the exhausted dimensions; a dimension that has enough does not wait
    both = {"requests": {"limit": 60, "remaining": 0, "reset_s": 30.0},
            "tokens": {"limit": 1000, "remaining": 900, "reset_s": 6.0}}
    assert ratelimit_wait(both, {"requests": 1, "tokens": 500}) == pytest.approx(0.5)
    assert ratelimit_wait({"requests": {"limit": None, "remaining": 0, "reset_s": 4.0}}, {}) == 4.0
    assert ratelimit_wait(None, {}) is None


def _classify(p: Profile, status: int, body: bytes) -> str | None:
    fields, _ = error_fields(body)
    return p.refusal(status, fields.get("type"), fields.get("code"), fields.get("reason") or fields.get("status"),
                     fields.get("message"))


def test_refusals_classified_by_the_body_whatever_the_status():
    p = Profile()
    openai_quota = b'{"error": {"message": "You exceeded your current quota, please check your plan and billing ' \
                   b'details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}'
    openai_rate = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
    anthropic_credit = b'{"type": "error", "error": {"type": "invalid_request_error", "message": "Your credit ' \
                       b'balance is too low to access the Anthropic API."}}'
    anthropic_bad = b'{"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: bad"}}'
    gemini_quota = b'{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "You exceeded your ' \
                   b'current quota, please check your plan and billing details."}}'
    gemini_rate = b'{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Resource has been ' \
                  b'exhausted (e.g. check quota)."}}'
    assert _classify(p, 429, openai_quota) == "quota"
    assert _classify(p, 429, openai_rate) == "rate_limit"
    assert _classify(p, 400, anthropic_credit) == "quota"
    assert _classify(p, 400, anthropic_bad) is None
    assert _classify(p, 429, gemini_quota) == "quota"
    assert _classify(p, 429, gemini_rate) == "rate_limit"
    assert _classify(p, 500, b'{"error": {"type": "server_error"}}') is None
    # a profile's own rules replace the defaults
    own = build_profile({"refusals": [{"status": 403, "code": "budget_exceeded", "kind": "quota"}]}, "s.yaml: gateway")
    assert _classify(own, 403, b'{"error": {"code": "budget_exceeded"}}') == "quota"
    assert _classify(own, 429, openai_quota) is None
    with pytest.raises(ProfileError, match=r"s.yaml: gateway.refusals\[0\]"):
        build_profile({"refusals": [{"status": 429, "kind": "maybe"}]}, "s.yaml: gateway")


def test_a_quota_refusal_is_final_a_rate_limit_retries():
    policy = RetryPolicy(max_attempts=4)
    quota = Outcome(status=429, error_kind="http_429", refusal="quota")
    rate = Outcome(status=429, error_kind="http_429", refusal="rate_limit")
    for idempotent in (True, False):
        assert not policy.should_retry(quota, 1, idempotent)
        assert policy.should_retry(rate, 1, idempotent)


BASE = {"mix": [{"endpoint": "chat"}], "duration": "10s"}


@pytest.mark.parametrize("tenants,needle", [
    ([], "tenants: expected a non-empty list"),
    ([{"api_key_env": "K"}], "tenants[0].label: expected a non-empty string"),
    ([{"label": "a b"}], "tenants[0].label: expected letters"),
    ([{"label": "a"}, {"label": "a"}], "tenants[1].label: 'a' is already a tenant"),
    ([{"label": "a", "api_key_env": "1K"}], "tenants[0].api_key_env: expected an environment variable name"),
    ([{"label": "a", "arrivals": {"process": "poisson", "rate": 2}}, {"label": "b"}],
     "tenants[0].arrivals: a tenant's own arrivals need an open-loop scenario"),
    ([{"label": "a", "mix": [{"endpoint": "chat", "strem": 1}]}], "tenants[0].mix[0].strem: unknown key"),
    ([{"label": "a", "spend": {"max": -1}}], "tenants[0].spend.max: must be positive"),
    ([{"label": "a", "weight": 0}], "tenants: the weights of the tenants without their own arrivals sum to zero"),
    ([{"label": "a", "colour": "red"}], "tenants[0].colour: unknown key"),
])
def test_bad_tenants_name_the_key(tenants, needle):
    with pytest.raises(ScenarioError) as e:
        parse_scenario({**BASE, "tenants": tenants}, "t.yaml")
    assert needle in str(e.value) and str(e.value).startswith("t.yaml: ") and "\n" not in str(e.value)


def test_tenants_with_their_own_arrivals_merge_into_one_schedule():
    sc = parse_scenario({"mix": [{"endpoint": "chat"}], "duration": "40s", "tenants": [
        {"label": "steady", "api_key_env": "K1", "arrivals": {"process": "constant", "rate": 2}},
        {"label": "burst", "api_key_env": "K2", "arrivals": {"process": "onoff", "rate": 50, "on_s": 1,
                                                             "off_s": 3}}]}, "t.yaml")
    assert sc.open_loop and sc.arrivals == "tenants"
    plan = list(Arrivals(sc, sc.seed)._plan())
    times = [p[0] for p in plan]
    assert times == sorted(times)
    steady = [p[0] for p in plan if p[3] == "steady"]
    burst = [p[0] for p in plan if p[3] == "burst"]
    assert len(steady) == 79  # a constant 2/s over 40 s: 0.5, 1.0, ... 39.5
    assert all(t % 4.0 < 1.0 for t in burst)  # on for 1 s in every 4
    assert 350 <= len(burst) <= 650  # Poisson at 50/s for 10 s of on-time
    # every worker computes the same schedule
    assert list(Arrivals(sc, sc.seed)._plan()) == plan


def test_tenants_sharing_the_scenario_arrivals_are_drawn_by_weight():
    sc = parse_scenario({"mix": [{"endpoint": "chat"}], "duration": "100s",
                         "arrivals": {"process": "constant", "rate": 20},
                         "tenants": [{"label": "a", "weight": 3}, {"label": "b", "weight": 1}]}, "t.yaml")
    plan = list(Arrivals(sc, sc.seed)._plan())
    share_a = sum(1 for p in plan if p[3] == "a") / len(plan)
    assert len(plan) in (1999, 2000) and 0.72 <= share_a <= 0.78  # 0.05 s steps summed in floating point
