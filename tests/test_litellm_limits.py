"""Limits and quotas through a gateway this project did not write: LiteLLM proxy in front of a simulator whose key
has a requests-per-minute limit, then one whose key has a tiny spend budget.

LiteLLM passes the upstream's `x-ratelimit-limit/remaining-*` on as they are and its resets only as
`llm_provider-` copies, rewrites 429 bodies (`throttling_error`, code "429") and keeps the upstream's message:
the records must still carry the limits, classify the refusals and wait as the headers say.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from ttbench.simproc import SimProcess

from .conftest import write_config
from .gateway_litellm import LiteLLMProxy, start_together
from .runs import ROOT, records, ttbench_together, write_scenario

pytestmark = pytest.mark.timeout(240)

PRICES = ROOT / "gatewaysim" / "defaults" / "prices.yaml"
FASTER = {"models": {m: {"base_ms": 5, "ttft_jitter_ms": 2, "decode_tokens_per_s": 400}
                     for m in ("gpt-4o-mini", "claude-3-5-sonnet", "gemini-2.5-flash")}}
MIX = [{"endpoint": "chat", "models": ["gpt-4o-mini"], "stream": 0.5},
       {"endpoint": "messages", "models": ["claude-3-5-sonnet"], "stream": 0.5},
       {"endpoint": "gemini", "models": ["gemini-2.5-flash"], "stream": 0.5}]


def _args(proxy: LiteLLMProxy, tmp: Path, name: str, seconds: int) -> list[str]:
    path = write_scenario(tmp / f"{name}.yaml", {
        "name": name, "seed": 9, "users": 20, "spawn_rate": 20, "duration": f"{seconds}s", "stop_timeout": "10s",
        "timeouts": {"connect_s": 5, "first_byte_s": 10, "idle_s": 10, "total_s": 30},
        "retry": {"max_attempts": 3, "base_s": 0.05, "cap_s": 0.3, "budget": 500},
        "defaults": {"prompt_tokens": 40, "output_tokens": 16},
        "tenants": [{"label": "acme", "api_key_env": "TT_API_KEY", "arrivals": {"process": "poisson", "rate": 4}}],
        "mix": MIX})
    return ["run", str(path), "--target", proxy.url, "--prices", str(PRICES), "--out", str(tmp / name),
            "--gateway", "litellm"]


def _truth(sim: SimProcess) -> list[dict]:
    return [json.loads(x) for x in sim.admin("/_sim/truth").text.splitlines() if x]


def test_rate_limits_and_a_spent_budget_through_litellm(tmp_path):
    """Two stacks at once (simulator and LiteLLM each): one key with a requests limit, one with a budget."""
    rpm_cfg = write_config(tmp_path / "rpm.yaml", {**FASTER, "keys": {"default": {"tenant": "acme", "rpm": 20}}})
    budget_cfg = write_config(tmp_path / "budget.yaml",
                              {**FASTER, "keys": {"default": {"tenant": "acme", "budget": 0.002}}})
    with ExitStack() as stack:
        sims = [stack.enter_context(SimProcess(config=cfg, seed=3)) for cfg in (rpm_cfg, budget_cfg)]
        proxies = start_together(stack, [LiteLLMProxy(sim.url, sim.api_key, tmp_path / f"proxy{i}")
                                         for i, sim in enumerate(sims)])
        res, res_budget = ttbench_together(_args(proxies[0], tmp_path, "rpm", 12),
                                           _args(proxies[1], tmp_path, "budget", 30), timeout=200,
                                           envs=[dict(os.environ, TT_API_KEY=p.master_key) for p in proxies])
        truth, truth_budget = _truth(sims[0]), _truth(sims[1])
    _check_rate_limits(tmp_path / "rpm", res, truth)
    _check_budget(tmp_path / "budget", res_budget, truth_budget)


def _check_rate_limits(out: Path, res, truth: list[dict]) -> None:
    assert res.returncode == 0, res.stderr[-3000:]
    recs = records(out)
    assert {r["tenant"] for r in recs} == {"acme"}
    chat_ok = [r for r in recs if r["endpoint"] == "chat" and r["ok"]]
    assert chat_ok and all(r["ratelimit"]["requests"]["limit"] == 20 for r in chat_ok)
    assert all(r["ratelimit"]["requests"]["reset_s"] is not None for r in chat_ok)  # from the llm_provider- copy
    refused = [r for r in recs if r["status"] == 429]
    assert {r["endpoint"] for r in refused} == {"chat", "messages", "gemini"}
    assert all(r["refusal"] == "rate_limit" for r in refused)
    waited = [r for r in refused if r["endpoint"] == "chat" and not r["final"]]
    assert waited and all(r["retry_after_header"] == "x-ratelimit-reset" for r in waited)
    # what the upstream admitted is what the client saw succeed (LiteLLM retried nothing it hid)
    admitted = [e for e in truth if e.get("limit") and e["limit"]["refused"] is None]
    assert len(admitted) == sum(1 for r in recs if r["ok"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["limits"]["tenants"]["acme"]["accepted_requests"] == len(admitted)


def _check_budget(out: Path, res, truth: list[dict]) -> None:
    assert res.returncode == 3, res.stderr[-3000:]
    assert "for quota" in res.stderr
    recs = records(out)
    quota = [r for r in recs if r["refusal"] == "quota"]
    assert quota and all(r["final"] and r["attempt"] == 1 for r in quota)  # never retried
    assert {r["endpoint"] for r in quota} <= {"chat", "messages", "gemini"}
    assert [e for e in truth if (e.get("limit") or {}).get("refused") == "budget"]
    assert (out / "report.html").exists()
