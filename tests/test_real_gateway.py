"""ttbench through a gateway this project did not write: LiteLLM proxy 1.108.7 on 127.0.0.1 in front of the
simulator. The simulator's truth sees every upstream request, so what the gateway did is known exactly."""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from ttbench.simproc import SimProcess

from .conftest import FAST, deep_merge, write_config
from .gateway_litellm import LiteLLMProxy, start_together
from .runs import ROOT, records, ttbench, ttbench_together, write_scenario

pytestmark = pytest.mark.timeout(240)

PRICES = ROOT / "gatewaysim" / "defaults" / "prices.yaml"
SHORT = {"timeouts": {"connect_s": 5, "first_byte_s": 10, "idle_s": 10, "total_s": 30}, "stop_timeout": "10s"}


def run_through(proxy: LiteLLMProxy, tmp: Path, name: str, scenario: dict, *extra: str):
    """`ttbench run` against the proxy (the key is LiteLLM's master key); returns the run folder and result."""
    path = write_scenario(tmp / f"{name}.yaml", {"name": name, **SHORT, **scenario})
    out = tmp / name
    res = ttbench("run", str(path), "--target", proxy.url, "--prices", str(PRICES), "--out", str(out), *extra,
                  env=dict(os.environ, TT_API_KEY=proxy.master_key), timeout=200)
    return out, res


def _args(proxy: LiteLLMProxy, tmp: Path, name: str, scenario: dict, *extra: str) -> list[str]:
    path = write_scenario(tmp / f"{name}.yaml", {"name": name, **SHORT, **scenario})
    return ["run", str(path), "--target", proxy.url, "--prices", str(PRICES), "--out", str(tmp / name), *extra]


def _together(*runs: tuple[LiteLLMProxy, list[str]]) -> list:
    """`ttbench run`s through their proxies at once (each with that proxy's master key)."""
    return ttbench_together(*(args for _, args in runs), timeout=200,
                            envs=[dict(os.environ, TT_API_KEY=p.master_key) for p, _ in runs])


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[tuple[SimProcess, LiteLLMProxy, Path, LiteLLMProxy]]:
    """A simulator that sends a few 429s with LiteLLM in front of it; and beside it a plain simulator behind a
    LiteLLM that prices gpt-4o differently from the price sheet (the sheet: 2.50 / 10.00 per 1M)."""
    work = tmp_path_factory.mktemp("real")
    cfg = write_config(work / "sim.yaml", {"faults": {"quota": {"rate_limited": 4}, "quota_rate": 0.1,
                                                       "retry_after_s": 1}})
    with ExitStack() as es:
        sim = es.enter_context(SimProcess(config=cfg, seed=4))
        plain = es.enter_context(SimProcess(config=write_config(work / "plain.yaml"), seed=4))
        proxy, priced = start_together(es, [LiteLLMProxy(sim.url, sim.api_key, work / "proxy"),
                                            LiteLLMProxy(plain.url, plain.api_key, work / "priced",
                                                         model_prices={"gpt-4o": (0.000004, 0.000016)})])
        yield sim, proxy, work, priced


@pytest.fixture(scope="module")
def every_endpoint(stack):
    """One run of every endpoint through LiteLLM with no --gateway given; at the same time, the cost-log run
    through the LiteLLM with its own gpt-4o price."""
    _sim, proxy, work, priced = stack
    res, cost = _together((proxy, _args(proxy, work, "every-endpoint", {
        "seed": 3, "users": 4, "spawn_rate": 4, "duration": "8s",
        "retry": {"max_attempts": 4, "base_s": 0.05, "cap_s": 0.2, "budget": 100},
        "defaults": {"prompt_tokens": 20, "output_tokens": 12},
        # chat always streamed: a slow box's run once drew only 2 chats, neither streamed (the cost-log run beside
        # it makes plain chats through LiteLLM); `stream` takes its draw either way, so the rest is drawn as before
        "mix": [{"endpoint": "chat", "weight": 3, "stream": 1.0},
                {"endpoint": "responses", "weight": 3, "stream": 0.6},
                {"endpoint": "messages", "weight": 3, "models": ["claude-3-5-sonnet"], "stream": 0.6},
                {"endpoint": "gemini", "weight": 3, "models": ["gemini-1.5-pro"], "stream": 0.8, "json_array": 0.5},
                {"endpoint": "embeddings", "weight": 2}, {"endpoint": "images", "weight": 2},
                {"endpoint": "models", "weight": 2}]})),  # each of these in a short run of a busy machine
        # as long as the run beside it, and gpt-4o in about 43% of the calls: a loaded box once got only 7 calls
        # through in 5 s, none of them gpt-4o's (then 12.5% of the mix)
        (priced, _args(priced, work, "cost-log", {
            "seed": 8, "users": 4, "spawn_rate": 4, "duration": "8s",
            "retry": {"max_attempts": 4, "base_s": 0.05, "cap_s": 0.2, "budget": 100},
            "defaults": {"prompt_tokens": 20, "output_tokens": 12},
            "mix": [{"endpoint": "chat", "weight": 4, "models": {"gpt-4o-mini": 1, "gpt-4o": 3}, "stream": 0.5},
                    {"endpoint": "messages", "models": ["claude-3-5-sonnet"], "stream": 0.5},
                    {"endpoint": "gemini", "models": ["gemini-1.5-pro"], "stream": 0.5},
                    {"endpoint": "embeddings"}]})))
    assert res.returncode == 0, res.stderr[-3000:]
    return work / "every-endpoint", res, cost


def test_every_endpoint_succeeds_with_ttft_through_litellm(every_endpoint):
    out, _res, _cost = every_endpoint
    recs = records(out)
    finals = [r for r in recs if r["final"]]
    for endpoint in ("chat", "responses", "messages", "gemini", "embeddings", "images", "models"):
        mine = [r for r in finals if r["endpoint"] == endpoint]
        assert mine and all(r["ok"] for r in mine), (endpoint, [r["error"] for r in mine if not r["ok"]])
    for endpoint in ("chat", "responses", "messages", "gemini"):
        streamed = [r for r in finals if r["endpoint"] == endpoint and r["stream"]]
        assert streamed and all(r["first_content_ms"] is not None for r in streamed), endpoint
    gemini = [r for r in finals if r["endpoint"] == "gemini" and r["stream"]]
    assert all(r["stream_format"] == "sse" for r in gemini)  # LiteLLM answers every Gemini stream as SSE
    mismatched = [r for r in records(out) if r["framing_mismatch"]]
    assert mismatched and all(r["ok"] and r["final"] and r["stream_format"] == "sse" for r in mismatched)
    assert not [r for r in records(out) if r["error_kind"] == "protocol"]  # recorded as it came, not retried
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["overall"]["ttft_ms"]["n"] > 0


def test_request_ids_come_from_the_gateway_headers(every_endpoint):
    out, _res, _cost = every_endpoint
    recs = [r for r in records(out) if r["status"] is not None]
    billable = [r for r in recs if r["endpoint"] != "models"]  # LiteLLM serves /v1/models itself, with no id
    with_id = [r for r in billable if r["request_id"]]
    assert len(with_id) >= 0.99 * len(billable), (len(with_id), len(billable))
    assert all(r["ids"]["x-litellm-call-id"] for r in with_id)
    assert {r["request_id_header"] for r in with_id} == {"x-litellm-call-id"}


def test_429_waits_are_read_from_the_gateways_prefixed_header(every_endpoint):
    out, _res, _cost = every_endpoint
    limited = [r for r in records(out) if r["status"] == 429]
    assert limited, "the simulator sent 429s"
    for r in limited:
        if r["endpoint"] in ("chat", "gemini", "embeddings"):
            assert r["retry_after_header"] == "llm_provider-retry-after" and r["retry_after_s"] == 1.0, r


def test_billing_through_litellms_cost_log(stack, every_endpoint):
    """One model priced differently in LiteLLM than in the price sheet: amount_mismatch for exactly its calls."""
    _sim, _proxy, work, priced = stack
    _out, _res, res = every_endpoint
    out = work / "cost-log"
    assert res.returncode == 0, res.stderr[-3000:]
    time.sleep(2)  # the callback writes a stream's line after its last byte
    rep = ttbench("report", str(out), "--ledger", str(priced.cost_log), "--ledger-mapping", "litellm-costlog")
    assert rep.returncode == 0, rep.stderr[-2000:]
    billing = json.loads((out / "summary.json").read_text())["billing"]
    calls = [r for r in records(out) if r["final"] and r["ok"]]
    expected = {r["ids"]["x-litellm-call-id"] for r in calls if r["model"] == "gpt-4o"}
    found = {(f["kind"], f["request_id"]) for f in billing["findings"]}
    assert expected and found == {("amount_mismatch", rid) for rid in expected}, found


def _extra_upstream_charges(truth: list[dict], recs: list[dict]) -> set[str]:
    """Upstream request ids charged beyond one per successful call (the simulator's truth is the witness)."""
    ok_attempt = {r["call_id"]: r["attempt_id"] for r in recs if r["final"] and r["ok"]}
    # a failed call's stream cut after its usage and finish arrived was produced, billed, then lost: billed once
    lost = {r["attempt_id"] for r in recs if not r["ok"] and r["stream"] and r["usage"] and r["finish_reason"]
            and r["error_kind"] in ("truncated", "reset") and r["endpoint"] in ("chat", "messages")
            and r["call_id"] not in ok_attempt}
    extra = set()
    for e in truth:
        if not e.get("charged_amount") or e.get("client_attempt_id") is None or e.get("outcome") == "never_sent":
            continue
        if float(e["charged_amount"]) <= 0:
            continue
        call = e["client_attempt_id"].rsplit("-a", 1)[0]
        if ok_attempt.get(call) != e["client_attempt_id"] and e["client_attempt_id"] not in lost:
            extra.add(e["request_id"])
    by_attempt = defaultdict(list)  # two upstream charges under one client attempt: one is extra
    for e in truth:
        if e.get("charged_amount") and float(e["charged_amount"]) > 0 and e.get("client_attempt_id"):
            by_attempt[e["client_attempt_id"]].append(e)
    for attempt, es in by_attempt.items():
        if len(es) > 1:
            es.sort(key=lambda e: e["received"])
            extra.update(e["request_id"] for e in es[:-1] if attempt in ok_attempt.values())
    return extra


FAULTY = {"faults": {"rate": 0.3, "weights": {"reset": 1, "disconnect_after_billing": 2, "stall": 1},
                     "stall_ms": 2500}}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """Two faulty simulators, each behind its own LiteLLM (each audit reads its simulator's whole ledger), and one
    run through each at the same time: with the default profile, and with --gateway litellm."""
    work = tmp_path_factory.mktemp("faulty")
    cfg = write_config(work / "sim.yaml", deep_merge(FAST, FAULTY))
    with ExitStack() as es:
        sims = [es.enter_context(SimProcess(config=cfg, seed=9)) for _ in range(2)]
        proxies = start_together(es, [LiteLLMProxy(sim.url, sim.api_key, work / f"proxy{i}")
                                      for i, sim in enumerate(sims)])
        default, litellm = _together((proxies[0], _args(proxies[0], work, "default-profile", {"seed": 21,
                                                                                             **FAULT_MIX})),
                                     (proxies[1], _args(proxies[1], work, "litellm-profile", {"seed": 21, **FAULT_MIX},
                                                        "--gateway", "litellm")))
        yield work, (sims[0], default), (sims[1], litellm)


FAULT_MIX = {"users": 4, "spawn_rate": 4, "duration": "8s",
             "timeouts": {"connect_s": 5, "first_byte_s": 1.5, "idle_s": 5, "total_s": 20},
             "retry": {"max_attempts": 4, "base_s": 0.05, "cap_s": 0.2, "budget": 1000},
             "defaults": {"prompt_tokens": 20, "output_tokens": 12},
             "mix": [{"endpoint": "chat", "stream": 0.5},
                     {"endpoint": "messages", "models": ["claude-3-5-sonnet"], "stream": 0.5}]}


def test_default_profile_audit_finds_exactly_the_extra_upstream_charges(faulty):
    work, (sim, res), _ = faulty
    out = work / "default-profile"
    assert res.returncode == 0, res.stderr[-3000:]
    rep = ttbench("report", str(out), "--ledger", sim.url + "/_sim/ledger", "--ledger-token", sim.admin_token)
    assert rep.returncode == 0, rep.stderr[-2000:]
    recs = records(out)
    mine = {r["attempt_id"] for r in recs}
    truth = [e for e in sim.truth() if e.get("client_attempt_id") in mine]
    extra = _extra_upstream_charges(truth, recs)
    assert extra, "the faults made the gateway bill some attempts the client retried"
    summary = json.loads((out / "summary.json").read_text())
    findings = summary["billing"]["findings"]
    assert {f["request_id"] for f in findings} == extra
    assert "does not seem to honour Idempotency-Key" in rep.stderr
    assert not summary["billing"]["trusted"]


def test_litellm_profile_leaves_no_call_charged_twice_upstream(faulty):
    work, _, (sim, res) = faulty
    out = work / "litellm-profile"
    assert res.returncode == 0, res.stderr[-3000:]
    recs = records(out)
    mine = {r["attempt_id"] for r in recs}
    charged = defaultdict(int)
    for e in sim.truth():
        if e.get("client_attempt_id") in mine and e.get("charged_amount") and float(e["charged_amount"]) > 0:
            charged[e["client_attempt_id"].rsplit("-a", 1)[0]] += 1
    assert charged and max(charged.values()) == 1, sorted(charged.items(), key=lambda kv: -kv[1])[:3]
    failed = [r for r in recs if not r["ok"] and r["final"]]
    assert failed and all(r["error_kind"] not in ("http_429",) for r in failed)
    retried_kinds = {r["error_kind"] for r in recs if not r["final"]}
    assert retried_kinds <= {"connect", "http_429", "http_5xx"}
    assert all(r["status"] in (None, 429, 503, 529) for r in recs if not r["final"])


def test_dry_runs_through_a_gateway_without_them(stack, tmp_path):
    _sim, proxy, _work, _ = stack
    mix = {"seed": 2, "users": 2, "spawn_rate": 2, "duration": "4s",
           "defaults": {"prompt_tokens": 20, "output_tokens": 12},
           "mix": [{"endpoint": "gemini", "models": ["gemini-1.5-pro"], "dry_run": 0.5}]}
    _out, res = run_through(proxy, tmp_path, "refused", mix, "--gateway", "litellm")
    assert res.returncode == 2
    assert "mix[0].dry_run: the gateway profile 'litellm' says the gateway has no dry run" in res.stderr
    out, res = run_through(proxy, tmp_path, "ignored", mix)  # the default profile expects dry runs: it finds out
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("the gateway ignored a dry run") == 1
    recs = records(out)
    ignored = [r for r in recs if r["dry_run"]]
    assert ignored and all(r["ok"] and r["dry_run_ignored"] and r["attempt"] == 1 and r["usage"] for r in ignored)
    first = min(r["t_start"] + r["end_ms"] / 1000 for r in ignored)
    later = [r for r in recs if r["t_start"] > first + 0.5]
    assert later and not any(r["dry_run"] for r in later)  # no more dry runs once one was ignored
    harness = json.loads((out / "harness.json").read_text())
    assert harness["dry_runs_ignored"] == len(ignored)


def test_a_wrong_key_stops_the_run(stack, tmp_path):
    _sim, proxy, _work, _ = stack
    path = write_scenario(tmp_path / "wrong.yaml", {"name": "wrong", "users": 4, "duration": "20s",
                                                    "mix": [{"endpoint": "chat"}]})
    env = dict(os.environ, TT_API_KEY="sk-not-the-master-key")
    res = ttbench("run", str(path), "--target", proxy.url, "--prices", str(PRICES), "--out", str(tmp_path / "a"),
                  env=env)
    assert res.returncode == 2 and "no_db_connection" in res.stderr, res.stderr[-2000:]
    assert len(records(tmp_path / "a")) < 20
    res = ttbench("run", str(path), "--target", proxy.url, "--prices", str(PRICES), "--gateway", "litellm",
                  "--out", str(tmp_path / "b"), env=env)
    assert res.returncode == 2 and "refused the API key" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "b" / "records.jsonl").exists() or not records(tmp_path / "b")
