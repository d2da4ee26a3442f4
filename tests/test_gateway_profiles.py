"""Gateway profiles: reading waits and ids, building requests the way a gateway wants them, and runs through the
simulator that show the requests arrived as the profile said (its truth is the independent witness)."""

from __future__ import annotations

import email.utils
import json
import os
import time

import pytest

from locustfiles.calls import CallSpec
from locustfiles.dialects import DIALECTS
from locustfiles.profile import (
    Profile,
    ProfileError,
    build_profile,
    load_profile,
    parse_duration,
    parse_reset,
    parse_wait,
    retry_info_delay,
    shipped,
)
from locustfiles.retry import RetryPolicy
from locustfiles.transport import Outcome

from .runs import jsonl, records, ttbench, write_scenario

FAST = {"defaults": {"chat": {"base_ms": 5, "ttft_jitter_ms": 1, "decode_tokens_per_s": 2000,
                              "output_tokens": {"min": 8, "max": 16}}}}


# reading the gateway's answers -------------------------------------------------------------------
def test_retry_waits_in_every_form():
    assert parse_wait("retry-after-ms", "1500") == 1.5
    assert parse_wait("retry-after", "7") == 7.0
    assert parse_wait("llm_provider-retry-after", "2.5") == 2.5
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_wait("retry-after", date, now=1_000_000.0) == 30.0
    assert parse_wait("retry-after", "soon") is None
    assert parse_wait("retry-after", "nan") is None
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("1h2m3s") == 3723.0
    assert parse_duration("17ms") == pytest.approx(0.017)
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("6 minutes") is None
    assert parse_reset("2030-01-01T00:00:10Z", now=1893456000.0) == 10.0  # 2030-01-01T00:00:00Z
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]}}
    assert retry_info_delay(body) == 30.0
    assert retry_info_delay([body]) == 30.0
    assert retry_info_delay({"error": {"details": "x"}}) is None


def test_shipped_profiles_load_and_differ_where_gateways_differ():
    assert {"tt", "openai-compatible", "litellm"} <= set(shipped())
    tt = load_profile(None, None, "s.yaml: gateway")
    lite = load_profile("litellm", None, "s.yaml: gateway")
    assert tt.name == "tt" and tt.idempotency_honoured is True and tt.dry_run_supported is True
    assert lite.idempotency_honoured is False and lite.dry_run_supported is False
    assert lite.id_headers[0] == "x-litellm-call-id"
    # with the default profile every common id header is still captured, the profile's own first
    assert tt.id_headers[0] == "x-tt-request-id" and "x-litellm-call-id" in tt.id_headers
    assert "request-id" in tt.id_headers and "x-request-id" in tt.id_headers


@pytest.mark.parametrize("section, message", [
    ({"profile": "nope"}, "unknown gateway profile 'nope'"),
    ({"idempotency": {"honoured": "maybe"}}, "gateway.idempotency.honoured: expected true, false or unknown"),
    ({"auth": {"chat": {"header": "api-key", "query": "key"}}}, "gateway.auth.chat: give exactly one of"),
    ({"auth": {"chatt": {"header": "api-key"}}}, "gateway.auth.chatt: unknown endpoint"),
    ({"paths": {"chat": "v1/chat"}}, "gateway.paths.chat: expected a path starting with /"),
    ({"headers": {"X-Tenant": {"env": "1BAD"}}}, "gateway.headers.X-Tenant: expected a string"),
    ({"request_id_header": ["x"]}, "gateway.request_id_header: unknown key"),
])
def test_bad_profile_settings_are_one_line(section, message):
    with pytest.raises(ProfileError) as exc:
        load_profile(None, section, "s.yaml: gateway")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def _wire(profile: Profile, endpoint: str, model: str, stream: bool = False, key: str = "K123"):
    spec = CallSpec(endpoint=endpoint, model=model, name="x", prompt="hi", max_tokens=4, stream=stream,
                    stream_format="sse" if stream else None)
    wire = DIALECTS[endpoint].build(spec)
    profile.apply(wire, spec, key)
    return wire


def test_auth_paths_and_headers_as_the_profile_says(monkeypatch):
    monkeypatch.setenv("ROUTE_TOKEN", "route-secret")
    p = build_profile({
        "gemini_auth": "query",
        "auth": {"messages": {"header": "x-api-key", "key": {"env": "ROUTE_TOKEN"}},
                 "chat": {"header": "api-key"}},
        "headers": {"X-Tenant": "acme", "X-Route": {"env": "ROUTE_TOKEN"}},
        "paths": {"chat": "/openai/deployments/{model}/chat/completions?api-version=2024-06-01",
                  "messages": "/anthropic/v1/messages",
                  "gemini": "http://other.example:9/g/v1beta/models/{model}:{method}"},
    }, "s.yaml: gateway")
    chat = _wire(p, "chat", "gpt-4o-mini")
    assert chat.path == "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-06-01"
    assert chat.headers["api-key"] == "K123" and "Authorization" not in chat.headers
    assert chat.headers["X-Tenant"] == "acme" and chat.headers["X-Route"] == "route-secret"
    msg = _wire(p, "messages", "claude-3-5-sonnet")
    assert msg.path == "/anthropic/v1/messages" and msg.headers["x-api-key"] == "route-secret"
    gem = _wire(p, "gemini", "gemini-1.5-pro", stream=True)
    assert gem.base == "http://other.example:9"
    assert gem.path == "/g/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse&key=K123"
    assert "x-goog-api-key" not in gem.headers
    assert p.secrets("K123") == ["K123", "route-secret"]
    described = json.dumps(p.describe())
    assert "route-secret" not in described and "K123" not in described
    # the default: each dialect's standard header
    d = Profile()
    assert _wire(d, "chat", "m").headers["Authorization"] == "Bearer K123"
    assert _wire(d, "messages", "m").headers["x-api-key"] == "K123"
    assert _wire(d, "gemini", "m").headers["x-goog-api-key"] == "K123"


def test_a_key_command_is_rerun_when_its_value_is_old(tmp_path):
    counter = tmp_path / "n"
    counter.write_text("0")
    cmd = f"n=$(cat {counter}); n=$((n+1)); echo $n > {counter}; echo token-$n"
    p = build_profile({"auth": {"default": {"header": "Authorization", "scheme": "Bearer",
                                             "key": {"command": cmd, "refresh_s": 0.2}}}}, "s.yaml: gateway")
    assert _wire(p, "chat", "m").headers["Authorization"] == "Bearer token-1"
    assert _wire(p, "chat", "m").headers["Authorization"] == "Bearer token-1"
    time.sleep(0.25)
    assert _wire(p, "chat", "m").headers["Authorization"] == "Bearer token-2"


# which failures are retried --------------------------------------------------------------------------
@pytest.mark.parametrize("kind, status, sent, complete, idempotent, retried", [
    ("http_5xx", 500, True, True, True, True),
    ("http_5xx", 500, True, True, False, False),     # may have been billed, and no replay would come
    ("http_5xx", 503, True, True, False, True),      # the gateway did not take it
    ("http_5xx", 529, True, True, False, True),
    ("http_429", 429, True, True, False, True),
    ("connect", None, False, False, False, True),    # never sent
    ("timeout", None, True, False, False, False),    # sent: the gateway may finish and bill it
    ("truncated", 200, True, False, False, False),
    ("truncated", 200, True, False, True, True),
    ("protocol", 200, True, True, True, False),      # arrived whole: a retry cannot mend it
    ("protocol", 200, True, False, True, True),      # broke before its end
    ("http_4xx", 400, True, True, True, False),
])
def test_retry_rules(kind, status, sent, complete, idempotent, retried):
    out = Outcome(error_kind=kind, status=status, sent=sent, complete=complete)
    assert RetryPolicy().should_retry(out, 1, idempotent) is retried


def test_x_should_retry_false_is_obeyed():
    out = Outcome(error_kind="http_5xx", status=500, sent=True, should_retry=False)
    assert RetryPolicy().should_retry(out, 1, True) is False


# through the simulator: what arrived is what the profile said -----------------------------------------
def _by_attempt(truth):
    return {e["client_attempt_id"]: e for e in truth if e.get("client_attempt_id")}


@pytest.mark.timeout(120)
def test_headers_paths_and_query_key_reach_the_simulator(tmp_path):
    secret = "sk-gemini-QUERYKEY-4242"
    env = dict(os.environ, TT_API_KEY=secret, TENANT_TOKEN="tenant-secret-777")
    sim = dict(FAST, routes={"messages": ["/anthropic/v1/messages"]})
    scenario = write_scenario(tmp_path / "gw.yaml", {
        "name": "gw", "seed": 5, "sim": {"config": sim}, "users": 3, "duration": "4s",
        "gateway": {"gemini_auth": "query",
                    "headers": {"X-Tenant": "acme", "X-Tenant-Token": {"env": "TENANT_TOKEN"}},
                    "auth": {"chat": {"header": "api-key"}},
                    "paths": {"messages": "/anthropic/v1/messages",
                              "chat": "/openai/deployments/{model}/chat/completions?api-version=2024-06-01"}},
        "defaults": {"prompt_tokens": 16, "output_tokens": 8},
        "mix": [{"endpoint": "chat", "stream": 0.5, "headers": {"X-Line": "chat-line"}},
                {"endpoint": "messages", "stream": 0.5}, {"endpoint": "gemini", "stream": 0.5}]})
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--out", str(out), env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    recs = records(out)
    truth = _by_attempt(jsonl(out / "truth.jsonl"))
    assert {r["endpoint"] for r in recs} == {"chat", "messages", "gemini"}
    for r in recs:
        assert r["ok"], r
        e = truth[r["attempt_id"]]
        h = e["client_headers"]
        assert h["x-tenant"] == "acme" and h["x-tenant-token"] == "tenant-secret-777"
        assert h["idempotency-key"] == r["call_id"]
        if r["endpoint"] == "chat":
            assert e["path"] == f"/openai/deployments/{r['model']}/chat/completions" and h["x-line"] == "chat-line"
        elif r["endpoint"] == "messages":
            assert e["path"] == "/anthropic/v1/messages" and "x-line" not in h
        else:
            assert "key=[redacted]" in e["query"] and "x-goog-api-key" not in h
    for path in (p for p in out.rglob("*") if p.is_file()):  # neither the key (sent in the URL) nor a secret header is written anywhere
        blob = path.read_bytes()
        assert secret.encode() not in blob, path.name
        assert b"tenant-secret-777" not in blob or path.name == "truth.jsonl", path.name


@pytest.mark.timeout(120)
def test_a_mistyped_model_stops_the_run_at_once(tmp_path):
    scenario = write_scenario(tmp_path / "typo.yaml", {
        "name": "typo", "seed": 1, "sim": {"config": FAST}, "users": 8, "spawn_rate": 8, "duration": "20s",
        "mix": [{"endpoint": "chat", "models": ["gpt-4o-minni"]}]})
    out = tmp_path / "run"
    started = time.time()
    res = ttbench("run", str(scenario), "--out", str(out))
    assert res.returncode == 2, res.stderr[-2000:]
    assert time.time() - started < 15
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("ttbench: error:")]
    assert len(lines) == 1 and "HTTP 404" in lines[0] and "gpt-4o-minni" in lines[0], res.stderr[-2000:]
    assert len(records(out)) < 40  # not thousands of failing calls


def test_headers_are_looked_up_in_any_case_and_repeated_ones_as_lists():
    """A real HTTP/1.1 answer read off a socket: the transport's header map holds names in any case by their
    lower-case spelling, a repeated header's values in order, and nothing that is absent (hand-written answer,
    hand-read values)."""
    import socket

    from geventhttpclient.response import HTTPSocketResponse

    from locustfiles.transport import header_map

    a, b = socket.socketpair()
    try:
        a.sendall(b"HTTP/1.1 429 Too Many Requests\r\nX-TT-Request-ID: req_1\r\nretry-after: 2\r\n"
                  b"X-RateLimit-Remaining-Requests: 0\r\nSet-Cookie: one\r\nSet-Cookie: two\r\n"
                  b"Content-Length: 0\r\n\r\n")
        get = header_map(HTTPSocketResponse(b)).get
    finally:
        a.close()
        b.close()
    assert get("x-tt-request-id") == "req_1" and get("X-TT-Request-ID") is None
    assert get("retry-after") == "2" and get("x-ratelimit-remaining-requests") == "0"
    assert get("set-cookie") == ["one", "two"]
    assert get("x-request-id") is None
