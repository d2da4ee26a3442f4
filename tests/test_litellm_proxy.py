"""A real gateway this project did not write: LiteLLM proxy 1.108.7 on 127.0.0.1 in front of the simulator.

`make test` installs LiteLLM into `.venv-litellm`; without it these tests fail (they never skip).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ttbench.simproc import SimProcess

from .conftest import write_config
from .gateway_litellm import LiteLLMProxy

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello through litellm"}],
        "max_tokens": 8}
MESSAGES = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hello through litellm"}],
            "max_tokens": 8}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hello through litellm"}]}],
          "generationConfig": {"maxOutputTokens": 8}}
GEMINI_PATH = "/v1beta/models/gemini-2.5-flash"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimProcess, LiteLLMProxy]]:
    """One fast simulator and one LiteLLM proxy in front of it, for the whole module."""
    work = tmp_path_factory.mktemp("litellm")
    with SimProcess(config=write_config(work / "sim.yaml"), seed=11) as sim, \
            LiteLLMProxy(sim.url, sim.api_key, work / "proxy") as proxy:
        yield sim, proxy


def auth(proxy: LiteLLMProxy, attempt: str, **extra: str) -> dict[str, str]:
    """The master key as a bearer token, with a client attempt id and an idempotency key."""
    return {"Authorization": f"Bearer {proxy.master_key}", "X-Client-Attempt-ID": attempt,
            "Idempotency-Key": f"idem-{attempt}", **extra}


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an SSE body."""
    return [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]


def wait_for_cost_lines(proxy: LiteLLMProxy, call_ids: set[str], timeout: float = 15.0) -> dict[str, dict[str, Any]]:
    """The cost log's lines for these call ids, once all are written (stream callbacks run after the body)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = {line["request_id"]: line for line in proxy.cost_lines() if line["request_id"] in call_ids}
        if set(lines) == call_ids or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def call_all_routes(proxy: LiteLLMProxy) -> dict[str, httpx.Response]:
    """One call on every route LiteLLM serves for ttbench, each with its own attempt id (= the route's name)."""
    out: dict[str, httpx.Response] = {}
    anthropic = {"anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=proxy.url, timeout=30, trust_env=False) as client:
        out["chat"] = client.post("/v1/chat/completions", json=CHAT, headers=auth(proxy, "chat"))
        out["chat_stream"] = client.post(
            "/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
            headers=auth(proxy, "chat_stream"))
        out["messages"] = client.post("/v1/messages", json=MESSAGES, headers=auth(proxy, "messages", **anthropic))
        out["messages_stream"] = client.post("/v1/messages", json={**MESSAGES, "stream": True},
                                             headers=auth(proxy, "messages_stream", **anthropic))
        gemini_key = {"X-Client-Attempt-ID": "gemini", "Idempotency-Key": "idem-gemini",
                      "x-goog-api-key": proxy.master_key}
        out["gemini"] = client.post(f"{GEMINI_PATH}:generateContent", json=GEMINI, headers=gemini_key)
        out["gemini_stream"] = client.post(f"{GEMINI_PATH}:streamGenerateContent", params={"alt": "sse"},
                                           json=GEMINI, headers={**gemini_key, "X-Client-Attempt-ID": "gemini_stream",
                                                                 "Idempotency-Key": "idem-gemini_stream"})
        out["gemini_query_key"] = client.post(f"{GEMINI_PATH}:generateContent", params={"key": proxy.master_key},
                                              json=GEMINI, headers={"X-Client-Attempt-ID": "gemini_query_key",
                                                                    "Idempotency-Key": "idem-gemini_query_key"})
        out["embeddings"] = client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hello"},
                                        headers=auth(proxy, "embeddings"))
        out["images"] = client.post("/v1/images/generations",
                                    json={"model": "gpt-image-1", "prompt": "a lighthouse", "size": "1024x1024",
                                          "quality": "low"}, headers=auth(proxy, "images"))
    return out


@pytest.fixture(scope="module")
def routes(stack: tuple[SimProcess, LiteLLMProxy]) -> dict[str, httpx.Response]:
    """The responses of one call per route, made once for the module."""
    return call_all_routes(stack[1])


def upstream_id(name: str, resp: httpx.Response, sim: SimProcess) -> str:
    """The simulator's request id for a call: from the body where it carries one, else from the truth."""
    if name == "chat":
        return resp.json()["id"].removeprefix("chatcmpl-")
    if name == "chat_stream":
        return json.loads(sse_data(resp.text)[0])["id"].removeprefix("chatcmpl-")
    if name == "messages":
        return resp.json()["id"].removeprefix("msg_")
    if name == "messages_stream":
        return json.loads(sse_data(resp.text)[0])["message"]["id"].removeprefix("msg_")
    if name.startswith("gemini_stream"):
        return json.loads(sse_data(resp.text)[0])["responseId"]
    if name.startswith("gemini"):
        return resp.json()["responseId"]
    # embeddings and images: no id in the body, none in the headers on images; the attempt id is forwarded
    return next(t["request_id"] for t in sim.truth() if t["client_attempt_id"] == name)


@pytest.mark.timeout(120)
def test_every_route_answers_through_litellm(routes: dict[str, httpx.Response]) -> None:
    """Chat, Messages, Gemini, embeddings and images all answer 200 through the proxy, in their own dialect."""
    for name, resp in routes.items():
        assert resp.status_code == 200, (name, resp.status_code, resp.text[:500])
        assert resp.headers.get("x-litellm-call-id"), name
    assert routes["chat"].json()["usage"]["completion_tokens"] > 0
    chunks = sse_data(routes["chat_stream"].text)
    assert chunks[-1] == "[DONE]"
    assert json.loads(chunks[-2])["usage"]["completion_tokens"] > 0
    assert routes["messages"].json()["type"] == "message"
    events = [line for line in routes["messages_stream"].text.splitlines() if line.startswith("event:")]
    assert events[0] == "event: message_start" and events[-1] == "event: message_stop"
    assert routes["gemini"].json()["candidates"][0]["content"]["parts"][0]["text"]
    assert routes["gemini_query_key"].json()["candidates"]
    gem_chunks = [json.loads(d) for d in sse_data(routes["gemini_stream"].text)]
    assert gem_chunks and gem_chunks[-1]["candidates"][0]["finishReason"]
    assert routes["embeddings"].json()["data"][0]["embedding"]
    png = base64.b64decode(routes["images"].json()["data"][0]["b64_json"])
    assert png.startswith(b"\x89PNG")


@pytest.mark.timeout(60)
def test_models_list_through_litellm(stack: tuple[SimProcess, LiteLLMProxy]) -> None:
    """GET /v1/models answers 200 with every simulator model (LiteLLM serves it from its config)."""
    sim, proxy = stack
    resp = httpx.get(proxy.url + "/v1/models", headers={"Authorization": f"Bearer {proxy.master_key}"},
                     timeout=30, trust_env=False)
    assert resp.status_code == 200, resp.text
    ids = {m["id"] for m in resp.json()["data"]}
    assert set(sim.admin("/_sim/config").json()["config"]["models"]) <= ids


@pytest.mark.timeout(60)
def test_each_call_reached_the_simulator(stack: tuple[SimProcess, LiteLLMProxy],
                                         routes: dict[str, httpx.Response]) -> None:
    """The simulator's truth has every proxied call, answered 200; OpenAI and Anthropic routes carry the attempt id."""
    sim, _ = stack
    truth = {t["request_id"]: t for t in sim.truth()}
    for name, resp in routes.items():
        entry = truth.get(upstream_id(name, resp, sim))
        assert entry is not None, name
        assert entry["status"] == 200 and entry["outcome"] == "ok", (name, entry)
        if not name.startswith("gemini"):  # LiteLLM forwards no client header on its Gemini routes
            assert entry["client_attempt_id"] == name, (name, entry)
        assert entry["idempotency_key"] is None  # LiteLLM never forwards Idempotency-Key


@pytest.mark.timeout(60)
def test_cost_log_has_one_line_per_call(stack: tuple[SimProcess, LiteLLMProxy],
                                        routes: dict[str, httpx.Response]) -> None:
    """One cost line per successful call, keyed by the x-litellm-call-id the client saw, priced from the sheet."""
    sim, proxy = stack
    call_ids = {resp.headers["x-litellm-call-id"]: name for name, resp in routes.items()}
    lines = wait_for_cost_lines(proxy, set(call_ids))
    assert set(lines) == set(call_ids), proxy.log_text()[-3000:]
    all_ids = [line["request_id"] for line in proxy.cost_lines()]
    assert len(all_ids) == len(set(all_ids))
    truth = {t["request_id"]: t for t in sim.truth()}
    for call_id, name in call_ids.items():
        line = lines[call_id]
        assert list(line) == ["time", "request_id", "status", "model", "amount", "input_tokens", "output_tokens",
                              "cached_input_tokens", "client_attempt_id", "idempotency_key",
                              "upstream_request_id", "endpoint"]
        assert line["status"] == "success", line
        assert line["client_attempt_id"] == name and line["idempotency_key"] == f"idem-{name}", line
        assert line["endpoint"], line
        assert abs(line["time"] - time.time()) < 120
        sim_id = upstream_id(name, routes[name], sim)
        assert line["upstream_request_id"] in (sim_id, None), line
        if not name.startswith("gemini"):
            assert line["upstream_request_id"] == sim_id, line
        usage = truth[sim_id]["usage"]
        if name != "images":
            assert line["input_tokens"] == usage["input_tokens"], (line, usage)
        if name not in ("images", "embeddings"):
            assert line["output_tokens"] == usage["output_tokens"], (line, usage)
    for name in ("chat", "chat_stream", "messages", "messages_stream", "gemini", "gemini_stream"):
        line = lines[routes[name].headers["x-litellm-call-id"]]
        fair = truth[upstream_id(name, routes[name], sim)]["fair_amount"]
        assert float(line["amount"]) > 0, line
        assert float(line["amount"]) == pytest.approx(float(fair), rel=1e-9), (line, fair)
    assert lines[routes["chat"].headers["x-litellm-call-id"]]["model"] == "gpt-4o-mini"
    assert lines[routes["gemini"].headers["x-litellm-call-id"]]["model"] == "gemini-2.5-flash"
    text = proxy.cost_log.read_text()
    assert proxy.master_key not in text and sim.api_key not in text and "hello through litellm" not in text


@pytest.mark.timeout(60)
def test_errors_through_litellm(stack: tuple[SimProcess, LiteLLMProxy]) -> None:
    """A wrong key is refused before any upstream call; an unknown model is LiteLLM's own 400."""
    sim, proxy = stack
    before = len(sim.truth())
    with httpx.Client(base_url=proxy.url, timeout=30, trust_env=False) as client:
        wrong = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-wrong"})
        unknown = client.post("/v1/chat/completions", json={**CHAT, "model": "no-such-model"},
                              headers=auth(proxy, "unknown"))
    assert wrong.status_code in (400, 401), wrong.text  # 400 no_db_connection: LiteLLM without a database
    assert "error" in wrong.json()
    assert unknown.status_code == 400, unknown.text
    assert unknown.json()["error"]["type"] == "invalid_request_error"
    assert len(sim.truth()) == before
    line = wait_for_cost_lines(proxy, {unknown.headers["x-litellm-call-id"]})[unknown.headers["x-litellm-call-id"]]
    assert line["status"] == "failure" and line["amount"] == "0" and line["model"] == "no-such-model"
    # LiteLLM runs both its sync and async failure hooks here: still one line
    time.sleep(0.5)
    assert [x["request_id"] for x in proxy.cost_lines()].count(unknown.headers["x-litellm-call-id"]) == 1


@pytest.mark.timeout(120)
def test_rate_limit_from_upstream_passes_through(tmp_path: Path) -> None:
    """A 429 with Retry-After from the simulator comes back as a 429 with `llm_provider-retry-after`."""
    cfg = write_config(tmp_path / "sim.yaml", {"faults": {"quota": {"rate_limited": 2}, "quota_rate": 1.0,
                                                          "retry_after_s": 2}})
    with SimProcess(config=cfg, seed=5) as sim, LiteLLMProxy(sim.url, sim.api_key, tmp_path / "proxy") as proxy:
        with httpx.Client(base_url=proxy.url, timeout=30, trust_env=False) as client:
            plain = client.post("/v1/chat/completions", json=CHAT, headers=auth(proxy, "rl-plain"))
            stream = client.post("/v1/chat/completions", json={**CHAT, "stream": True},
                                 headers=auth(proxy, "rl-stream"))
        truth = {t["client_attempt_id"]: t for t in sim.truth() if t["client_attempt_id"]}
        for name, resp in (("rl-plain", plain), ("rl-stream", stream)):
            assert resp.status_code == 429, resp.text
            assert resp.headers["llm_provider-retry-after"] == "2"
            assert "retry-after" not in resp.headers
            assert resp.headers["llm_provider-x-tt-request-id"] == truth[name]["request_id"]
            assert truth[name]["fault"] == "rate_limited"
            call_id = resp.headers["x-litellm-call-id"]
            line = wait_for_cost_lines(proxy, {call_id})[call_id]
            assert line["status"] == "failure" and line["amount"] == "0", line
            assert line["upstream_request_id"] == truth[name]["request_id"], line
        assert len([t for t in sim.truth() if t["endpoint"] == "chat"]) == 2  # num_retries 0: no hidden retry
