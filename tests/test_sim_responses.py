"""The OpenAI Responses API on the simulator: POST /v1/responses through the official `openai` SDK and raw HTTP.

Token counts are computed here by hand from the README's rules (input: ceil(characters / 4) per text; output:
one token per word, a tool call's name 1 token and its arguments one per 4 characters) and compared with the
answers, the simulator's truth log and its ledger, never with the simulator's own arithmetic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from .helpers import auth, charges, sse_events, truth_by_id

pytestmark = pytest.mark.timeout(60)

GPT = "gpt-4o-mini"
#: Per 1M tokens, from gatewaysim/defaults/prices.yaml (written down here, not read from the sheet).
PRICE = {"input": Decimal("0.15"), "cached_input": Decimal("0.075"), "output": Decimal("0.60")}
TOOLS = [
    {"type": "function", "name": "get_weather", "description": "Current weather for a place",
     "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}},
    {"type": "function", "name": "get_time", "description": "Current time in a place",
     "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}},
]
LONG = " ".join(["alpha bravo charlie delta"] * 40)  # 1039 characters: 260 tokens, far above the cache's 32


def tokens(*texts: str) -> int:
    """The README's input rule: ceil(characters / 4) per text."""
    return sum(math.ceil(len(t) / 4) for t in texts)


def n_words(text: str | None) -> int:
    return len((text or "").split())


def amount(plain: int, cached: int, output: int) -> Decimal:
    return (plain * PRICE["input"] + cached * PRICE["cached_input"] + output * PRICE["output"]) / 10**6


def client(sim) -> openai.OpenAI:
    return openai.OpenAI(api_key=sim.api_key, base_url=sim.url + "/v1", max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def oai(sim) -> Iterator[openai.OpenAI]:
    c = client(sim)
    yield c
    c.close()


def post(sim, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(sim.url + "/v1/responses", json=body, headers={**auth(sim), **headers}, timeout=20)


def charge_of(sim, request_id: str) -> dict[str, Any]:
    (row,) = [c for c in charges(sim) if c["request_id"] == request_id]
    return row


# ------------------------------------------------------------------------------------------------ plain


def test_plain_answer_usage_truth_and_ledger(sim, oai):
    instructions, prompt = "Answer briefly, please.", "Hello there, responses endpoint"
    raw = oai.responses.with_raw_response.create(model=GPT, input=prompt, instructions=instructions,
                                                 max_output_tokens=200)
    r = raw.parse()
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.incomplete_details is None and r.error is None and r.model == GPT
    (message,) = r.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    (part,) = message.content
    assert part.type == "output_text" and part.text == r.output_text and r.output_text
    usage = r.usage
    assert usage.input_tokens == tokens(instructions, prompt) == 6 + 8
    assert usage.output_tokens == n_words(r.output_text)
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    rid = raw.headers["X-TT-Request-ID"]
    assert raw.headers["x-request-id"] == rid
    entry = truth_by_id(sim)[rid]
    assert entry["endpoint"] == "responses" and entry["model"] == GPT and entry["outcome"] == "ok"
    assert entry["usage"]["input_tokens"] == 14 and entry["usage"]["output_tokens"] == n_words(r.output_text)
    row = charge_of(sim, rid)
    assert row["endpoint"] == "responses" and row["input_tokens"] == 14
    assert Decimal(row["amount"]) == amount(14, 0, n_words(r.output_text))


def test_input_items_with_parts_and_tool_outputs_count_as_input(sim, oai):
    args = '{"location": "Paris"}'
    items = [
        {"role": "developer", "content": "Use the tools."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"},
                                                         {"type": "input_text", "text": "And be quick."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": args},
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 21 degrees."},
    ]
    r = oai.responses.create(model=GPT, input=items, tools=TOOLS, tool_choice="none")
    expected = tokens("Use the tools.", "Weather in Paris?", "And be quick.", "get_weather", args,
                      "Sunny, 21 degrees.")
    assert r.usage.input_tokens == expected == 4 + 5 + 4 + 3 + 6 + 5
    assert [o.type for o in r.output] == ["message"]  # tool_choice "none": never a call


# ----------------------------------------------------------------------------------------------- stream


def test_stream_events_in_order_text_is_the_deltas_usage_at_the_end(sim, oai):
    prompt = "Stream me a responses answer"
    stream = oai.responses.create(model=GPT, input=prompt, stream=True)
    rid = stream.response.headers["X-TT-Request-ID"]
    events = list(stream)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    text = "".join(deltas)
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * len(deltas),
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress" and events[0].response.usage is None
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == text and events[-2].item.content[0].text == text
    final = events[-1].response
    assert final.status == "completed" and final.id == events[0].response.id and final.output_text == text
    assert final.usage.output_tokens == n_words(text) == len(deltas) > 0  # one delta per token
    assert final.usage.input_tokens == tokens(prompt)
    entry = truth_by_id(sim)[rid]
    assert entry["stream"] is True and entry["outcome"] == "ok" and entry["usage"]["output_tokens"] == len(deltas)
    assert sum(entry["chunk_tokens"]) == len(deltas) and len(entry["chunk_times"]) == len(events)
    # the same request without streaming gets the same answer
    assert oai.responses.create(model=GPT, input=prompt).output_text == text


def test_raw_stream_has_event_lines_and_no_done_sentinel(sim):
    r = post(sim, {"model": GPT, "input": "Raw stream please", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert "[DONE]" not in r.text
    for event, data in events:
        assert json.loads(data)["type"] == event  # the event line equals the JSON type
    assert events[-1][0] == "response.completed"
    usage = json.loads(events[-1][1])["response"]["usage"]
    assert usage["output_tokens"] == sum(1 for e, _ in events if e == "response.output_text.delta")


def test_stream_helper_final_response(oai):
    with oai.responses.stream(model=GPT, input="Helper stream for responses") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text and final.usage.output_tokens == len(deltas) > 0


# ------------------------------------------------------------------------------------------ conversation


def test_previous_response_id_counts_the_whole_conversation_and_caches_its_prefix(make_sim):
    sim = make_sim()
    c = client(sim)
    asks = [f"{LONG} question {t}" for t in range(3)]
    first = c.responses.create(model=GPT, input=asks[0], max_output_tokens=16)
    second = c.responses.create(model=GPT, input=asks[1], previous_response_id=first.id, max_output_tokens=16)
    raw = c.responses.with_raw_response.create(model=GPT, input=asks[2], previous_response_id=second.id,
                                               max_output_tokens=16)
    third = raw.parse()
    a1, a2 = first.output_text, second.output_text
    assert first.usage.input_tokens == tokens(asks[0]) and first.usage.input_tokens_details.cached_tokens == 0
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens == tokens(asks[0], a1, asks[1])
    assert second.usage.input_tokens_details.cached_tokens == tokens(asks[0])  # the first turn's prompt
    assert third.usage.input_tokens == tokens(asks[0], a1, asks[1], a2, asks[2])
    assert third.usage.input_tokens_details.cached_tokens == tokens(asks[0], a1, asks[1])
    # the cached tokens are billed at the cached rate
    third_row = charge_of(sim, raw.headers["X-TT-Request-ID"])
    cached = tokens(asks[0], a1, asks[1])
    assert third_row["input_tokens"] == third.usage.input_tokens
    assert third_row["cached_input_tokens"] == cached
    assert Decimal(third_row["amount"]) == amount(third.usage.input_tokens - cached, cached, n_words(third.output_text))
    # the same conversation sent as chat messages counts the same tokens
    messages = [{"role": "user", "content": asks[0]}, {"role": "assistant", "content": a1},
                {"role": "user", "content": asks[1]}]
    chat = c.chat.completions.create(model=GPT, messages=messages, max_completion_tokens=16)
    assert chat.usage.prompt_tokens == second.usage.input_tokens
    c.close()


def test_unknown_or_unstored_previous_response_is_400(sim, oai):
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model=GPT, input="Hi", previous_response_id="resp_nobody_made_this")
    assert err.value.code == "previous_response_not_found" and err.value.param == "previous_response_id"
    unstored = oai.responses.create(model=GPT, input="Do not keep this", store=False)
    assert unstored.store is False
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model=GPT, input="Hi", previous_response_id=unstored.id)
    assert err.value.code == "previous_response_not_found"
    # a streamed response is stored too, once its last event went out
    kept = list(oai.responses.create(model=GPT, input="Keep this streamed one", stream=True))[-1].response
    follow = oai.responses.create(model=GPT, input="Hi", previous_response_id=kept.id)
    assert follow.usage.input_tokens == tokens("Keep this streamed one", kept.output_text, "Hi")


# ------------------------------------------------------------------------------------ tools and reasoning


def test_function_call_plain_and_stream(sim, oai):
    prompt = "What time is it in Lisbon?"
    choice = {"type": "function", "name": "get_time"}
    plain = oai.responses.create(model=GPT, input=prompt, tools=TOOLS, tool_choice=choice)
    (call,) = plain.output
    assert call.type == "function_call" and call.name == "get_time" and call.call_id.startswith("call_")
    assert call.id.startswith("fc_") and call.status == "completed"
    assert isinstance(json.loads(call.arguments), dict)
    assert plain.usage.output_tokens == 1 + math.ceil(len(call.arguments) / 4)  # name + arguments
    events = list(oai.responses.create(model=GPT, input=prompt, tools=TOOLS, tool_choice=choice, stream=True))
    types = [e.type for e in events]
    fragments = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     *["response.function_call_arguments.delta"] * len(fragments),
                     "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert events[2].item.type == "function_call" and events[2].item.name == "get_time"
    assert len(fragments) == math.ceil(len(call.arguments) / 4) > 2  # really fragmented
    assert "".join(fragments) == call.arguments == events[-3].arguments == events[-2].item.arguments
    assert events[-2].item.call_id == call.call_id
    assert events[-1].response.usage.output_tokens == plain.usage.output_tokens


def test_auto_tool_choice_gives_both_calls_and_text(oai):
    kinds = {oai.responses.create(model=GPT, input=f"Weather in town {i}?", tools=TOOLS).output[-1].type
             for i in range(16)}
    assert kinds == {"function_call", "message"}


def test_reasoning_summary_plain_and_stream(sim, oai):
    prompt = "Think about responses first"
    plain = oai.responses.create(model=GPT, input=prompt, reasoning={"effort": "low", "summary": "auto"})
    reasoning, message = plain.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    (summary,) = reasoning.summary
    assert summary.type == "summary_text" and summary.text
    details = plain.usage.output_tokens_details
    assert details.reasoning_tokens == n_words(summary.text)
    assert plain.usage.output_tokens == n_words(summary.text) + n_words(plain.output_text)
    events = list(oai.responses.create(model=GPT, input=prompt, reasoning={"effort": "low", "summary": "auto"},
                                       stream=True))
    types = [e.type for e in events]
    summary_deltas = [e.delta for e in events if e.type == "response.reasoning_summary_text.delta"]
    assert "".join(summary_deltas) == summary.text and len(summary_deltas) == details.reasoning_tokens
    assert types.index("response.reasoning_summary_text.delta") < types.index("response.output_text.delta")
    assert events[-1].response.usage.output_tokens_details.reasoning_tokens == details.reasoning_tokens
    # without a summary: the reasoning is counted and its item sent, but no summary text
    quiet = oai.responses.create(model=GPT, input=prompt, reasoning={"effort": "medium"})
    assert quiet.output[0].type == "reasoning" and quiet.output[0].summary == []
    assert quiet.usage.output_tokens_details.reasoning_tokens > 0
    assert quiet.usage.output_tokens == quiet.usage.output_tokens_details.reasoning_tokens + n_words(quiet.output_text)
    raw = oai.responses.create(model=GPT, input=prompt, reasoning={"effort": "medium"}, stream=True)
    stream = list(raw)
    assert not any(e.type.startswith("response.reasoning_summary") for e in stream)
    assert stream[-1].response.usage.output_tokens == quiet.usage.output_tokens
    # the unshown reasoning still took decode time: the truth's per-write token counts add up to all of it
    entry = truth_by_id(sim)[raw.response.headers["X-TT-Request-ID"]]
    assert sum(entry["chunk_tokens"]) == quiet.usage.output_tokens


def test_reasoning_counts_against_max_output_tokens(oai):
    r = oai.responses.create(model=GPT, input="Reason within a cap", max_output_tokens=16,
                             reasoning={"effort": "high", "summary": "detailed"})
    reasoning = r.usage.output_tokens_details.reasoning_tokens
    assert 1 <= reasoning <= 15 and r.usage.output_tokens <= 16
    assert r.usage.output_tokens == n_words(r.output[0].summary[0].text) + n_words(r.output_text)


# ---------------------------------------------------------------------------------- caps and bad requests


def test_max_output_tokens_below_16_is_bad_request(sim, oai):
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model=GPT, input="Hi", max_output_tokens=15, extra_headers={"X-Client-Attempt-ID": "m15"})
    assert err.value.status_code == 400 and err.value.type == "invalid_request_error"
    assert err.value.param == "max_output_tokens"
    entry = next(e for e in sim.truth() if e["client_attempt_id"] == "m15")
    assert entry["status"] == 400 and entry["outcome"] == "error"
    assert all(r["request_id"] != entry["request_id"] for r in sim.ledger())
    assert oai.responses.create(model=GPT, input="Hi", max_output_tokens=16).usage.output_tokens <= 16


def test_capped_answer_is_incomplete_plain_and_stream(make_sim):
    sim = make_sim({"defaults": {"chat": {"output_tokens": {"min": 40, "max": 40}}}})
    c = client(sim)
    capped = c.responses.create(model=GPT, input="A long answer please", max_output_tokens=16)
    assert capped.status == "incomplete" and capped.incomplete_details.reason == "max_output_tokens"
    assert capped.output[0].status == "incomplete"
    assert capped.usage.output_tokens == 16 == n_words(capped.output_text)
    events = list(c.responses.create(model=GPT, input="A long answer please", max_output_tokens=16, stream=True))
    assert events[-1].type == "response.incomplete" and "response.completed" not in [e.type for e in events]
    assert events[-1].response.usage.output_tokens == 16
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    free = c.responses.create(model=GPT, input="A long answer please", max_output_tokens=64)
    assert free.status == "completed" and free.usage.output_tokens == 40  # the natural length
    c.close()


@pytest.mark.parametrize(
    "body,status,param",
    [
        ({"model": GPT}, 400, "input"),
        ({"model": GPT, "input": "x", "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
         "tools[0].name"),  # the chat completions tool shape is refused, as the real API does
        ({"model": GPT, "input": [{"type": "nonsense"}]}, 400, "input[0].type"),
        ({"model": GPT, "input": "x", "reasoning": {"effort": "extreme"}}, 400, "reasoning.effort"),
        ({"model": "no-such-model", "input": "x"}, 404, "model"),
    ],
)
def test_bad_requests_in_openai_error_shape(sim, body, status, param):
    r = post(sim, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert r.headers["X-TT-Request-ID"].startswith("req_")


def test_wrong_key_is_authentication_error(sim):
    bad = openai.OpenAI(api_key="nope", base_url=sim.url + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.responses.create(model=GPT, input="Hi")
    assert err.value.code == "invalid_api_key"


# ------------------------------------------------------------------------- dry runs, replays, billing errors


def test_dry_run_estimate(sim, oai):
    prompt = "Estimate this responses call"
    for stream in (False, True):
        raw = oai.responses.with_raw_response.create(model=GPT, input=prompt, max_output_tokens=100, stream=stream,
                                                     extra_headers={"X-TT-Dry-Run": "true"})
        est = json.loads(raw.http_response.read())  # a stream=True request gets the JSON estimate too
        assert est["object"] == "billing.estimate" and est["dry_run"] is True and est["endpoint"] == "responses"
        assert est["estimate"]["basis"]["input_tokens"] == tokens(prompt) == 7
        assert est["estimate"]["basis"]["max_output_tokens"] == 100
        assert Decimal(est["estimate"]["amount"]) == amount(7, 0, 100)
        rid = raw.headers["X-TT-Request-ID"]
        assert [r["type"] for r in sim.ledger() if r["request_id"] == rid] == ["hold", "release"]
        assert truth_by_id(sim)[rid]["usage"] is None


@pytest.mark.parametrize("stream", [False, True])
def test_idempotent_replay_is_byte_identical_and_charged_once(sim, stream):
    body = {"model": GPT, "input": f"Replay me (stream={stream})", "stream": stream}
    first = post(sim, body, **{"Idempotency-Key": f"resp-replay-{stream}"})
    second = post(sim, body, **{"Idempotency-Key": f"resp-replay-{stream}"})
    assert first.status_code == second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["X-TT-Original-Request-ID"] == first.headers["X-TT-Request-ID"]
    assert second.content == first.content
    rids = {first.headers["X-TT-Request-ID"], second.headers["X-TT-Request-ID"]}
    assert [c["request_id"] for c in charges(sim) if c["request_id"] in rids] == [first.headers["X-TT-Request-ID"]]


def test_planted_token_mismatch_shows_in_ledger_against_truth(make_sim):
    sim = make_sim({"billing_errors": {"quota": {"token_mismatch": 1}, "quota_rate": 1.0}})
    c = client(sim)
    prompt = "Bill me for this"
    raw = c.responses.with_raw_response.create(model=GPT, input=prompt)
    r = raw.parse()
    rid = raw.headers["X-TT-Request-ID"]
    row = charge_of(sim, rid)
    out = n_words(r.output_text)
    assert row["output_tokens"] == out + 7 and row["input_tokens"] == tokens(prompt)
    assert Decimal(row["amount"]) == amount(tokens(prompt), 0, out + 7)
    entry = truth_by_id(sim)[rid]
    assert entry["billing_error"] == "token_mismatch"
    assert Decimal(entry["fair_amount"]) == amount(tokens(prompt), 0, out)
    c.close()


# ------------------------------------------------------------------------------------------ stream faults


def only(kind: str) -> dict[str, Any]:
    return {"faults": {"quota": {kind: 50}, "quota_rate": 1.0}}


def test_disconnect_midstream_cuts_before_the_terminal_event(make_sim):
    sim = make_sim(only("disconnect_midstream"))
    c = client(sim)
    seen = []
    stream = c.responses.create(model=GPT, input="Cut me off", stream=True,
                                extra_headers={"X-Client-Attempt-ID": "cut-1"})
    with pytest.raises(openai.APIConnectionError):
        for event in stream:
            seen.append(event.type)
    assert "response.output_text.delta" in seen
    assert not {"response.completed", "response.incomplete"} & set(seen)
    entry = next(e for e in sim.truth() if e["client_attempt_id"] == "cut-1")
    assert entry["fault"] == "disconnect_midstream" and entry["expected_error_kind"] == "truncated"
    assert entry["outcome"] == "failed" and charges(sim) == []
    assert c.responses.create(model=GPT, input="Plain is not eligible").status == "completed"
    c.close()


def test_stream_error_is_an_error_event_then_response_failed(make_sim):
    sim = make_sim(only("stream_error"))
    r = post(sim, {"model": GPT, "input": "Fail in band", "stream": True})
    assert r.status_code == 200
    events = sse_events(r.text)
    datas = [json.loads(d) for _, d in events]
    assert [e for e, _ in events[-2:]] == ["error", "response.failed"]
    assert datas[-2]["error"]["type"] == "server_error"
    assert datas[-1]["response"]["status"] == "failed" and datas[-1]["response"]["error"]["code"] == "server_error"
    assert [d["sequence_number"] for d in datas] == list(range(len(datas)))
    assert "response.completed" not in [e for e, _ in events]
    c = client(sim)
    with pytest.raises(openai.APIError) as err:
        list(c.responses.create(model=GPT, input="Fail in band too", stream=True))
    assert not isinstance(err.value, openai.APIConnectionError)
    assert charges(sim) == []
    c.close()


@pytest.mark.parametrize("stream", [False, True])
def test_disconnect_after_billing_then_replay_then_follow_up(make_sim, stream):
    sim = make_sim({"faults": {"quota": {"disconnect_after_billing": 1}, "quota_rate": 1.0}})
    body = {"model": GPT, "input": "Billed then dropped", "stream": stream}
    with pytest.raises(httpx.TransportError):
        with httpx.stream("POST", sim.url + "/v1/responses", json=body, timeout=10,
                          headers={**auth(sim), "Idempotency-Key": "resp-dab", "X-Client-Attempt-ID": "d1"}) as r:
            r.read()
    retry = post(sim, body, **{"Idempotency-Key": "resp-dab", "X-Client-Attempt-ID": "d2"})
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
    first = next(e for e in sim.truth() if e["client_attempt_id"] == "d1")
    assert [c["request_id"] for c in charges(sim)] == [first["request_id"]]  # charged once, on the first attempt
    if stream:
        final = json.loads(sse_events(retry.text)[-1][1])["response"]
    else:
        final = retry.json()
    text = final["output"][0]["content"][0]["text"]
    # the response was produced and stored before the drop: the conversation goes on from it
    follow = post(sim, {"model": GPT, "input": "And then?", "previous_response_id": final["id"]})
    assert follow.status_code == 200
    assert follow.json()["usage"]["input_tokens"] == tokens("Billed then dropped", text, "And then?")


def test_malformed_chunk_does_not_parse(make_sim):
    sim = make_sim(only("malformed_chunk"))
    r = post(sim, {"model": GPT, "input": "Break a chunk", "stream": True})
    bad = 0
    for _, data in sse_events(r.content.decode("utf-8", "replace")):
        try:
            json.loads(data)
        except ValueError:
            bad += 1
    assert bad == 1


# ---------------------------------------------------------------------------------------- gateway layouts


def test_extra_route_is_served_like_the_builtin_one(make_sim):
    sim = make_sim({"routes": {"responses": ["/openai/v1/responses"]}}, seed=3)
    body = {"model": GPT, "input": "Same on every path"}
    a = post(sim, body)
    b = httpx.post(sim.url + "/openai/v1/responses", json=body, headers=auth(sim))
    assert b.status_code == 200 and b.json()["object"] == "response"
    assert a.json()["output"][0]["content"] == b.json()["output"][0]["content"]
    truth = truth_by_id(sim)
    assert truth[b.headers["X-TT-Request-ID"]]["path"] == "/openai/v1/responses"
    assert truth[b.headers["X-TT-Request-ID"]]["endpoint"] == "responses"
    denied = httpx.post(sim.url + "/openai/v1/responses", json=body, headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
