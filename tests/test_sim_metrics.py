"""The simulator's own /metrics: Prometheus text its parser accepts, counters equal to the truth, sane gauges."""

from __future__ import annotations

import threading
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import CHAT, auth, charges, chat

pytestmark = pytest.mark.timeout(90)

LONG = " ".join(["alpha bravo charlie delta"] * 40)  # 200 tokens: above the cache's minimum


def scrape(sim: Any) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float], dict[str, Any]]:
    """GET /metrics without any header: (text, {(sample, labels): value}, {family: family})."""
    r = httpx.get(sim.url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    return r.text, values, families


def by_name(values: dict, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in values.items() if n == name}


def test_counters_equal_the_truth_and_the_parser_accepts_it(make_sim):
    sim = make_sim({"keys": {"k-small": {"tenant": "small", "rpm": 2}}})
    _, before, _ = scrape(sim)
    assert by_name(before, "gatewaysim_requests_total") == {}
    for _ in range(3):
        assert chat(sim).status_code == 200
    history = [{"role": "user", "content": LONG + " question 0"}]
    first = httpx.post(sim.url + "/v1/chat/completions", headers=auth(sim),
                       json={"model": "gpt-4o-mini", "messages": history, "max_tokens": 8}, timeout=30)
    history += [{"role": "assistant", "content": first.json()["choices"][0]["message"]["content"]},
                {"role": "user", "content": LONG + " question 1"}]
    second = httpx.post(sim.url + "/v1/chat/completions", headers=auth(sim),
                        json={"model": "gpt-4o-mini", "messages": history, "max_tokens": 8}, timeout=30)
    assert second.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert chat(sim, key="same-key").status_code == 200
    replay = chat(sim, key="same-key")  # a replay: counted as a request, its tokens are not counted again
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert httpx.post(sim.url + "/v1/chat/completions", json=CHAT, timeout=10,
                      headers={"Authorization": "Bearer wrong"}).status_code == 401
    small = [httpx.post(sim.url + "/v1/chat/completions", json=CHAT, timeout=30,
                        headers={"Authorization": "Bearer k-small"}).status_code for _ in range(3)]
    assert small == [200, 200, 429]
    emb = httpx.post(sim.url + "/v1/embeddings", headers=auth(sim), timeout=30,
                     json={"model": "text-embedding-3-small", "input": ["one two three"]})
    assert emb.status_code == 200
    assert httpx.get(sim.url + "/_sim/health").status_code == 200

    truth = sim.truth()
    n_truth = len(truth)
    text, values, families = scrape(sim)
    scrape(sim)
    assert len(sim.truth()) == n_truth  # /metrics leaves no truth entry
    assert httpx.post(sim.url + "/metrics", timeout=10).status_code == 405
    assert len(sim.truth()) == n_truth
    # hand-computed: 3 + 2 + 2 chats of the gateway's key, 1 refused key, 3 of the small tenant, 1 embedding
    assert by_name(values, "gatewaysim_requests_total") == {
        (("endpoint", "chat"), ("status", "200")): 9.0,
        (("endpoint", "chat"), ("status", "429")): 1.0,
        (("endpoint", "other"), ("status", "401")): 1.0,
        (("endpoint", "embeddings"), ("status", "200")): 1.0,
    }
    from_truth = Counter((e["endpoint"] or "other", str(e["status"])) for e in truth)
    assert {(dict(k)["endpoint"], dict(k)["status"]): v
            for k, v in by_name(values, "gatewaysim_requests_total").items()} == from_truth
    tokens: Counter = Counter()
    for e in truth:
        if e["usage"] and e["replay_of"] is None:
            tokens[(e["model"], "input")] += e["usage"]["input_tokens"]
            tokens[(e["model"], "output")] += e["usage"]["output_tokens"]
    assert {(dict(k)["model"], dict(k)["type"]): v for k, v in by_name(values, "gatewaysim_tokens_total").items()} \
        == tokens
    assert tokens[("gpt-4o-mini", "output")] > 0 and tokens[("text-embedding-3-small", "input")] > 0
    assert by_name(values, "gatewaysim_prefix_cache_lookups_total")[(("model", "gpt-4o-mini"),)] == 8  # 200s, no replay
    assert by_name(values, "gatewaysim_prefix_cache_hits_total")[(("model", "gpt-4o-mini"),)] == 1
    charged = sum(Decimal(c["amount"]) for c in charges(sim))
    assert charged > 0
    assert by_name(values, "gatewaysim_charged_total") == {(("currency", "USD"),): pytest.approx(float(charged))}
    limited = by_name(values, "gatewaysim_rate_limited_total")
    assert limited[(("dimension", "requests"), ("tenant", "small"))] == 1
    assert sum(limited.values()) == 1
    gauges = {n: by_name(values, n) for n in ("gatewaysim_slots", "gatewaysim_slots_busy", "gatewaysim_queue_depth")}
    assert gauges["gatewaysim_slots"][(("model", "gpt-4o-mini"), ("pool", "shared"))] == 16
    assert set(gauges["gatewaysim_slots_busy"].values()) == {0} and set(gauges["gatewaysim_queue_depth"].values()) == {0}
    # every family announced with HELP and TYPE; nothing secret in it
    for name in ("requests", "queue_depth", "slots_busy", "slots", "tokens", "prefix_cache_hits",
                 "prefix_cache_lookups", "charged", "rate_limited"):
        fam = families[f"gatewaysim_{name}"]
        assert fam.documentation and fam.type in ("counter", "gauge")
        assert f"# TYPE gatewaysim_{name}" in text and f"# HELP gatewaysim_{name}" in text
    assert sim.api_key not in text and "k-small" not in text and sim.admin_token not in text


def test_gauges_follow_slots_and_queue(make_sim):
    sim = make_sim({"models": {"gpt-4o-mini": {"slots": 1, "queue": 4, "base_ms": 600}}})
    done: list[int] = []

    def call() -> None:
        done.append(chat(sim).status_code)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    seen = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _, values, _ = scrape(sim)
        key = (("model", "gpt-4o-mini"), ("pool", "shared"))
        seen = (by_name(values, "gatewaysim_slots_busy")[key], by_name(values, "gatewaysim_queue_depth")[key],
                by_name(values, "gatewaysim_slots")[key])
        if seen == (1, 2, 1):
            break
        time.sleep(0.05)
    assert seen == (1, 2, 1)
    for t in threads:
        t.join()
    assert done == [200, 200, 200]
    _, values, _ = scrape(sim)
    key = (("model", "gpt-4o-mini"), ("pool", "shared"))
    assert by_name(values, "gatewaysim_slots_busy")[key] == 0 and by_name(values, "gatewaysim_queue_depth")[key] == 0
    assert by_name(values, "gatewaysim_requests_total") == {(("endpoint", "chat"), ("status", "200")): 3}


def test_label_values_and_help_are_escaped():
    from gatewaysim.metrics import Exposition

    ex = Exposition()
    odd = 'a "quoted" back\\slash, \\n (not a newline) and\na newline'
    ex.family("t_total", "counter", "help with \\ and\nnewline", [((("k", odd),), 3), ((), 1.5)])
    fam = next(text_string_to_metric_families(ex.text()))
    assert fam.documentation == "help with \\ and\nnewline"
    assert [(s.labels, s.value) for s in fam.samples] == [({"k": odd}, 3.0), ({}, 1.5)]


def test_metrics_path_cannot_be_a_configured_route(tmp_path):
    from gatewaysim.config import ConfigError, load_config

    cfg = tmp_path / "routes.yaml"
    cfg.write_text("routes: {chat: [/metrics]}\n")
    with pytest.raises(ConfigError, match="/metrics is a built-in route"):
        load_config(cfg)
