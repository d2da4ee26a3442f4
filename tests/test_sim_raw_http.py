"""Raw HTTP against the simulator: every endpoint, plain and streamed, ids, usage, auth per dialect."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest

from .helpers import sse_events

pytestmark = pytest.mark.timeout(60)

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 12}


def bearer(sim):
    return {"Authorization": f"Bearer {sim.api_key}"}


def test_chat_plain_has_ids_usage_and_text(sim):
    r = httpx.post(sim.url + "/v1/chat/completions", headers=bearer(sim), json=CHAT)
    assert r.status_code == 200
    rid = r.headers["X-TT-Request-ID"]
    assert rid.startswith("req_") and r.headers["x-request-id"] == rid == r.headers["request-id"]
    body = r.json()
    text = body["choices"][0]["message"]["content"]
    usage = body["usage"]
    assert usage["completion_tokens"] == len(text.split())
    assert usage["prompt_tokens"] == 3  # ceil(len("Hello there") / 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


def test_chat_is_deterministic_and_honours_max_tokens(sim):
    body = dict(CHAT, max_tokens=3)
    a = httpx.post(sim.url + "/v1/chat/completions", headers=bearer(sim), json=body).json()
    b = httpx.post(sim.url + "/v1/chat/completions", headers=bearer(sim), json=body).json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert a["usage"]["completion_tokens"] == 3
    assert a["choices"][0]["finish_reason"] == "length"
    exact = httpx.post(sim.url + "/v1/chat/completions", headers=bearer(sim),
                       json=dict(CHAT, max_tokens=40, ignore_eos=True)).json()
    assert exact["usage"]["completion_tokens"] == 40


def test_chat_stream_sequence_and_usage_chunk(sim):
    body = dict(CHAT, stream=True, stream_options={"include_usage": True})
    r = httpx.post(sim.url + "/v1/chat/completions", headers=bearer(sim), json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert len(text.split()) == chunks[-1]["usage"]["completion_tokens"]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert len({c["id"] for c in chunks}) == 1


def test_chat_stream_without_include_usage_has_no_usage(sim):
    r = httpx.post(sim.url + "/v1/chat/completions", headers=bearer(sim), json=dict(CHAT, stream=True))
    chunks = [json.loads(d) for _, d in sse_events(r.text)[:-1]]
    assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize("usage", [True, False])
def test_chat_stream_events_are_compact_json_as_the_api_writes_them(sim, usage):
    """Every event is one `data:` line of compact JSON, byte for byte what a serialiser writes for its own
    parse (the text deltas are spliced into a template: a slip there is a stray byte here)."""
    body = dict(CHAT, max_tokens=30, ignore_eos=True, stream=True, **({"stream_options": {"include_usage": True}}
                                                                      if usage else {}))
    r = httpx.post(sim.url + "/v1/chat/completions", headers=bearer(sim), json=body)
    blocks = r.content.split(b"\n\n")
    assert blocks[-1] == b"" and blocks[-2] == b"data: [DONE]"
    deltas = 0
    for block in blocks[:-2]:
        assert block.startswith(b"data: ") and b"\n" not in block, block
        parsed = json.loads(block[6:])
        assert block[6:] == json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode(), block
        assert list(parsed)[:6] == ["id", "object", "created", "model", "system_fingerprint", "choices"]
        assert ("usage" in parsed) == usage
        choices = parsed["choices"]
        if choices and set(choices[0]["delta"]) == {"content"}:
            deltas += 1
            assert list(choices[0]) == ["index", "delta", "logprobs", "finish_reason"]
            assert choices[0]["finish_reason"] is None and parsed.get("usage") is None
    assert deltas == 30


def test_messages_stream_full_event_sequence(sim):
    body = {"model": "claude-3-5-sonnet", "max_tokens": 10, "stream": True,
            "messages": [{"role": "user", "content": "Hi"}]}
    r = httpx.post(sim.url + "/v1/messages", headers={"x-api-key": sim.api_key}, json=body)
    events = sse_events(r.text)
    names = [e for e, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert names[1] == "content_block_start" and "message_delta" in names
    for event, data in events:
        assert json.loads(data)["type"] == event  # the event line equals the JSON type
    delta = json.loads(dict(events)["message_delta"])
    texts = [json.loads(d)["delta"]["text"] for e, d in events if e == "content_block_delta"]
    assert delta["usage"]["output_tokens"] == len(texts)
    assert r.headers["request-id"] == r.headers["X-TT-Request-ID"]


@pytest.mark.parametrize("header", ["x-api-key", "Authorization"])
def test_messages_accepts_both_auth_headers_and_any_version(sim, header):
    value = sim.api_key if header == "x-api-key" else f"Bearer {sim.api_key}"
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}
    r = httpx.post(sim.url + "/v1/messages", headers={header: value, "anthropic-version": "2099-01-01"}, json=body)
    assert r.status_code == 200
    assert r.json()["type"] == "message" and r.json()["stop_reason"] in ("end_turn", "max_tokens")


@pytest.mark.parametrize("prefix", ["/v1beta", "/v1"])
def test_gemini_plain_sse_and_array(sim, prefix):
    body = {"contents": [{"parts": [{"text": "Hello"}]}], "generationConfig": {"maxOutputTokens": 6}}
    url = f"{sim.url}{prefix}/models/gemini-1.5-pro"
    plain = httpx.post(url + ":generateContent", params={"key": sim.api_key}, json=body).json()
    assert plain["usageMetadata"]["candidatesTokenCount"] == len(plain["candidates"][0]["content"]["parts"][0]["text"].split())
    sse = httpx.post(url + ":streamGenerateContent", params={"alt": "sse"},
                     headers={"x-goog-api-key": sim.api_key}, json=body)
    assert sse.headers["content-type"].startswith("text/event-stream")
    chunks = [json.loads(d) for _, d in sse_events(sse.text)]
    assert all(e is None for e, _ in sse_events(sse.text))  # no event: lines for Gemini
    counts = [c["usageMetadata"]["candidatesTokenCount"] for c in chunks]
    assert counts == sorted(counts) and counts[-1] == 6  # cumulative, last one exact
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    arr = httpx.post(url + ":streamGenerateContent", params={"key": sim.api_key}, json=body)
    assert arr.headers["content-type"].startswith("application/json")
    items = json.loads(arr.text)
    assert isinstance(items, list) and len(items) == len(chunks)


def test_embeddings_float_and_base64(sim):
    body = {"model": "text-embedding-3-small", "input": ["a b c", "d"], "dimensions": 8}
    f = httpx.post(sim.url + "/v1/embeddings", headers=bearer(sim), json=body).json()
    assert [d["index"] for d in f["data"]] == [0, 1]
    assert len(f["data"][0]["embedding"]) == 8
    b = httpx.post(sim.url + "/v1/embeddings", headers=bearer(sim), json=dict(body, encoding_format="base64")).json()
    decoded = struct.unpack("<8f", base64.b64decode(b["data"][0]["embedding"]))
    assert decoded == pytest.approx(f["data"][0]["embedding"], abs=1e-6)
    assert f["usage"]["prompt_tokens"] == f["usage"]["total_tokens"] == 3


def test_images_are_real_pngs(sim):
    body = {"model": "gpt-image-1", "prompt": "a city at night", "n": 3, "size": "1024x1024", "quality": "low"}
    r = httpx.post(sim.url + "/v1/images/generations", headers=bearer(sim), json=body).json()
    assert len(r["data"]) == 3
    for item in r["data"]:
        assert base64.b64decode(item["b64_json"]).startswith(b"\x89PNG\r\n\x1a\n")
    bad = httpx.post(sim.url + "/v1/images/generations", headers=bearer(sim), json=dict(body, response_format="url"))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_parameter"


def test_models_list_shapes(sim):
    o = httpx.get(sim.url + "/v1/models", headers=bearer(sim)).json()
    assert o["object"] == "list" and {"id", "object", "created", "owned_by"} <= set(o["data"][0])
    a = httpx.get(sim.url + "/v1/models", headers={"x-api-key": sim.api_key, "anthropic-version": "2023-06-01"}).json()
    assert a["data"][0]["type"] == "model" and a["has_more"] is False
    g = httpx.get(sim.url + "/v1beta/models", params={"key": sim.api_key}).json()
    assert g["models"][0]["name"].startswith("models/")


def test_auth_failures_per_dialect(sim):
    chat = httpx.post(sim.url + "/v1/chat/completions", headers={"Authorization": "Bearer nope"}, json=CHAT)
    assert chat.status_code == 401
    assert set(chat.json()["error"]) == {"message", "type", "param", "code"}
    assert chat.json()["error"]["code"] == "invalid_api_key"
    missing = httpx.post(sim.url + "/v1/chat/completions", json=CHAT)
    assert missing.status_code == 401
    msg = httpx.post(sim.url + "/v1/messages", headers={"x-api-key": "nope"},
                     json={"model": "claude-3-5-sonnet", "max_tokens": 5, "messages": []})
    assert msg.status_code == 401 and msg.json()["error"]["type"] == "authentication_error"
    gem = httpx.post(sim.url + "/v1beta/models/gemini-1.5-pro:generateContent", params={"key": "nope"},
                     json={"contents": [{"parts": [{"text": "x"}]}]})
    assert gem.status_code == 400 and gem.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert gem.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    gem_missing = httpx.post(sim.url + "/v1beta/models/gemini-1.5-pro:generateContent",
                             json={"contents": [{"parts": [{"text": "x"}]}]})
    assert gem_missing.status_code == 403
    for r in (chat, missing, msg, gem, gem_missing):
        assert r.headers["X-TT-Request-ID"].startswith("req_")


@pytest.mark.parametrize(
    "path,headers_fn,body,status,check",
    [
        ("/v1/chat/completions", "bearer", b"{not json", 400, lambda j: j["error"]["type"] == "invalid_request_error"),
        ("/v1/chat/completions", "bearer", {"model": "gpt-4o-mini"}, 400, lambda j: j["error"]["param"] == "messages"),
        ("/v1/chat/completions", "bearer", dict(CHAT, model="nope"), 404,
         lambda j: j["error"]["code"] == "model_not_found"),
        ("/v1/messages", "anthropic", {"model": "claude-3-5-sonnet", "messages": [{"role": "user", "content": "x"}]},
         400, lambda j: j["type"] == "error" and j["error"]["type"] == "invalid_request_error"),
        ("/v1/messages", "anthropic", {"model": "nope", "max_tokens": 3, "messages": [{"role": "user", "content": "x"}]},
         404, lambda j: j["error"]["type"] == "not_found_error"),
        ("/v1beta/models/nope:generateContent", "gemini", {"contents": [{"parts": [{"text": "x"}]}]}, 404,
         lambda j: j["error"]["status"] == "NOT_FOUND"),
        ("/v1beta/models/gemini-1.5-pro:generateContent", "gemini", {"contents": []}, 400,
         lambda j: j["error"]["status"] == "INVALID_ARGUMENT"),
        ("/v1/embeddings", "bearer", {"model": "text-embedding-3-small", "input": ""}, 400,
         lambda j: j["error"]["param"] == "input"),
        ("/v1/images/generations", "bearer", {"model": "gpt-image-1", "prompt": "x", "n": 11}, 400,
         lambda j: j["error"]["param"] == "n"),
        ("/v1/nowhere", "bearer", {}, 404, lambda j: j["error"]["code"] == "unknown_url"),
    ],
)
def test_bad_requests_get_the_dialects_error_shape(sim, path, headers_fn, body, status, check):
    headers = {"bearer": bearer(sim), "anthropic": {"x-api-key": sim.api_key},
               "gemini": {"x-goog-api-key": sim.api_key}}[headers_fn]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(sim.url + path, headers={**headers, "Content-Type": "application/json"}, content=content)
    assert r.status_code == status, r.text
    assert check(r.json())
    assert "Traceback" not in r.text
    assert r.headers["X-TT-Request-ID"].startswith("req_")


def test_truth_logs_client_attempt_id_and_chunk_times(sim):
    body = dict(CHAT, stream=True)
    r = httpx.post(sim.url + "/v1/chat/completions", headers={**bearer(sim), "X-Client-Attempt-ID": "att-raw-1"},
                   json=body)
    rid = r.headers["X-TT-Request-ID"]
    entry = next(e for e in sim.truth() if e["request_id"] == rid)
    assert entry["client_attempt_id"] == "att-raw-1"
    assert entry["outcome"] == "ok" and entry["status"] == 200
    assert entry["received"] <= entry["headers_sent"] <= entry["chunk_times"][0] <= entry["last_byte"]
    assert len(entry["chunk_times"]) == len(sse_events(r.text))
    assert sum(entry["chunk_tokens"]) == entry["usage"]["output_tokens"]
