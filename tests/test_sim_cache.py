"""The simulator's prefix cache: cached tokens rise by turn, prefill is faster, cached rates are billed."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from .helpers import auth, charges, truth_by_id

pytestmark = pytest.mark.timeout(60)

LONG = " ".join(["alpha bravo charlie delta"] * 40)  # 160 words: 800 characters, 200 tokens
SLOW_PREFILL = {"defaults": {"chat": {"prefill_ms_per_token": 1.0, "base_ms": 5, "ttft_jitter_ms": 0}}}


def converse(sim, turns: int, dialect: str = "openai") -> list[httpx.Response]:
    history: list[dict] = []
    out = []
    for t in range(turns):
        history.append({"role": "user", "content": f"{LONG} question {t}"})
        if dialect == "openai":
            r = httpx.post(sim.url + "/v1/chat/completions", headers=auth(sim),
                           json={"model": "gpt-4o-mini", "messages": history, "max_tokens": 8})
            answer = r.json()["choices"][0]["message"]["content"]
        else:
            r = httpx.post(sim.url + "/v1/messages", headers=auth(sim, "anthropic"),
                           json={"model": "claude-3-5-sonnet", "messages": history, "max_tokens": 8})
            answer = r.json()["content"][0]["text"]
        history.append({"role": "assistant", "content": answer})
        out.append(r)
    return out


def test_cached_tokens_rise_by_turn_and_prefill_gets_faster(make_sim):
    sim = make_sim(SLOW_PREFILL)
    rs = converse(sim, 4)
    cached = [r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] for r in rs]
    prompt = [r.json()["usage"]["prompt_tokens"] for r in rs]
    assert cached[0] == 0 and cached[1] > 0 and cached == sorted(cached) and cached[3] > cached[2]
    assert all(c < p for c, p in zip(cached, prompt, strict=True))
    truth = truth_by_id(sim)
    entries = [truth[r.headers["X-TT-Request-ID"]] for r in rs]
    assert [e.get("cache", {}).get("cached_tokens", 0) for e in entries] == cached
    # prefill of cached tokens is 10x faster: turn 4 waits far less than its prompt length alone implies
    elapsed = [r.elapsed.total_seconds() for r in rs]
    assert elapsed[3] < (prompt[3] * 1.0 / 1000) * 0.6


def test_anthropic_reports_reads_and_writes_and_bills_their_rates(make_sim):
    sim = make_sim(SLOW_PREFILL)
    rs = converse(sim, 3, "anthropic")
    u = [r.json()["usage"] for r in rs]
    assert u[0]["cache_creation_input_tokens"] > 0 and u[0]["cache_read_input_tokens"] == 0
    assert u[2]["cache_read_input_tokens"] > 0
    rows = {c["request_id"]: c for c in charges(sim)}
    last = u[2]
    row = rows[rs[2].headers["X-TT-Request-ID"]]
    expected = (Decimal(last["input_tokens"]) * Decimal("3.00") + Decimal(last["cache_read_input_tokens"]) *
                Decimal("0.30") + Decimal(last["cache_creation_input_tokens"]) * Decimal("3.75") +
                Decimal(last["output_tokens"]) * Decimal("15.00")) / 10**6
    assert Decimal(row["amount"]) == expected
    assert row["cached_input_tokens"] == last["cache_read_input_tokens"]


def test_the_cache_evicts(make_sim):
    sim = make_sim({**SLOW_PREFILL, "cache": {"size_tokens": 150}})
    rs = converse(sim, 3)
    assert [r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] for r in rs] == [0, 0, 0]


def test_cache_discount_missing_is_planted_as_said(make_sim):
    sim = make_sim({"billing_errors": {"quota": {"cache_discount_missing": 1}, "quota_rate": 1.0}})
    rs = converse(sim, 3)
    planted = {e["request_id"]: e["billing_error"] for e in sim.truth() if e["billing_error"]}
    rid = rs[1].headers["X-TT-Request-ID"]  # the first call with cached tokens
    assert planted == {rid: "cache_discount_missing"}
    u = rs[1].json()["usage"]
    row = next(c for c in charges(sim) if c["request_id"] == rid)
    full = (Decimal(u["prompt_tokens"]) * Decimal("0.15") + Decimal(u["completion_tokens"]) * Decimal("0.60")) / 10**6
    assert Decimal(row["amount"]) == full and row["cached_input_tokens"] > 0
