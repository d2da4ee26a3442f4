"""The simulator through the official SDKs (openai, anthropic, google-genai): every endpoint, plain and streamed.

Each test parses the answer with the SDK itself and checks the text, the usage and the request ids against
the simulator's truth log. The SDK clients never retry (max_retries=0), so errors surface at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from ttbench.simproc import SimProcess

from .conftest import write_config

pytestmark = pytest.mark.timeout(60)

GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-sonnet"  # not on the anthropic SDK's deprecation list, so no warning
GEMINI = "gemini-2.5-flash"
EMBED = "text-embedding-3-small"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Enough distinct prompts that a 50% tool-call share gives both outcomes (the draw is seeded, so stable).
PROMPTS = [f"What is the weather in city number {i}?" for i in range(24)]

OPENAI_TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a place",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Current time in a place",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}},
]
ANTHROPIC_TOOLS = [
    {"name": "get_weather", "description": "Current weather for a place",
     "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}},
    {"name": "get_time", "description": "Current time in a place",
     "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}},
]
GEMINI_TOOL = types.Tool(function_declarations=[
    types.FunctionDeclaration(name="get_weather", description="Current weather for a place",
                              parameters=types.Schema(type="OBJECT", properties={"location": types.Schema(type="STRING")})),
    types.FunctionDeclaration(name="get_time", description="Current time in a place",
                              parameters=types.Schema(type="OBJECT", properties={"location": types.Schema(type="STRING")})),
])
GEMINI_TOOL_CONFIG = types.GenerateContentConfig(tools=[GEMINI_TOOL])


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def n_words(text: str | None) -> int:
    return len((text or "").split())


def prompt_tokens(text: str) -> int:
    """The simulator's counting rule: ceil(characters / 4)."""
    return math.ceil(len(text) / 4)


def truth_of(sim, request_id: str | None) -> dict[str, Any]:
    """The truth entry of a request id the SDK reported; fails when the simulator has none."""
    assert request_id and request_id.startswith("req_"), request_id
    entries = {e["request_id"]: e for e in sim.truth()}
    assert request_id in entries, f"{request_id} is not in the simulator's truth log"
    return entries[request_id]


def find_both(call: Callable[[str], Any], is_tool: Callable[[Any], bool]) -> tuple[str, Any, Any]:
    """Call with prompt after prompt until one answer is a tool call and one is not.

    Returns (the tool prompt, the tool answer, the text answer).
    """
    tool: tuple[str, Any] | None = None
    text: Any = None
    for prompt in PROMPTS:
        answer = call(prompt)
        if is_tool(answer):
            tool = tool or (prompt, answer)
        else:
            text = text if text is not None else answer
        if tool is not None and text is not None:
            return tool[0], tool[1], text
    raise AssertionError(f"{len(PROMPTS)} prompts gave tool={tool is not None}, text={text is not None}")


# --------------------------------------------------------------------------------------------------- clients


@pytest.fixture(scope="module")
def oai(sim) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(api_key=sim.api_key, base_url=sim.url + "/v1", max_retries=0, timeout=20)
    yield client
    client.close()


@pytest.fixture(scope="module")
def anth(sim) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(api_key=sim.api_key, base_url=sim.url, max_retries=0, timeout=20)
    yield client
    client.close()


def gemini_client(sim, api_version: str = "v1beta", api_key: str | None = None) -> genai.Client:
    return genai.Client(api_key=api_key or sim.api_key,
                        http_options=types.HttpOptions(base_url=sim.url, api_version=api_version, timeout=20_000))


@pytest.fixture(scope="module")
def gem(sim) -> Iterator[genai.Client]:
    client = gemini_client(sim)
    yield client
    client.close()


# ---------------------------------------------------------------------------------------------------- openai


def test_openai_chat_plain_text_usage_and_request_id(sim, oai):
    prompt = "Hello there, simulator"
    completion = oai.chat.completions.create(model=GPT, messages=user(prompt), max_completion_tokens=64)
    choice = completion.choices[0]
    text = choice.message.content
    assert choice.message.role == "assistant" and text
    assert choice.finish_reason == "stop"
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    usage = completion.usage
    assert usage.completion_tokens == n_words(text)
    assert usage.prompt_tokens == prompt_tokens(prompt)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    entry = truth_of(sim, completion._request_id)
    assert entry["endpoint"] == "chat" and entry["model"] == GPT and entry["outcome"] == "ok"
    assert entry["usage"]["output_tokens"] == usage.completion_tokens


def test_openai_chat_max_tokens_gives_length(oai):
    completion = oai.chat.completions.create(model=GPT, messages=user("Tell me a long story"),
                                             max_completion_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3 == n_words(completion.choices[0].message.content)


def test_openai_chat_stream_with_include_usage(sim, oai):
    messages = user("Stream me something")
    stream = oai.chat.completions.create(model=GPT, messages=messages, stream=True,
                                         stream_options={"include_usage": True})
    request_id = stream.response.headers["x-request-id"]
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage.completion_tokens == n_words(text) > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert stream.response.headers["X-TT-Request-ID"] == request_id
    entry = truth_of(sim, request_id)
    assert entry["stream"] is True and entry["outcome"] == "ok"
    assert entry["usage"]["output_tokens"] == usage.completion_tokens
    # Same request without streaming: the same answer.
    plain = oai.chat.completions.create(model=GPT, messages=messages)
    assert plain.choices[0].message.content == text


def test_openai_chat_stream_helper_final_completion(oai):
    with oai.chat.completions.stream(model=GPT, messages=user("Helper stream"),
                                     stream_options={"include_usage": True}) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    text = final.choices[0].message.content
    assert "".join(deltas) == text
    assert final.usage.completion_tokens == n_words(text) > 0


def test_openai_tools_plain(oai):
    def call(prompt: str) -> Any:
        return oai.chat.completions.create(model=GPT, messages=user(prompt), tools=OPENAI_TOOLS)

    _, tool, text = find_both(call, lambda c: c.choices[0].finish_reason == "tool_calls")
    message = tool.choices[0].message
    assert message.content is None
    (tc,) = message.tool_calls
    assert tc.type == "function" and tc.id.startswith("call_")
    assert tc.function.name == "get_weather"
    assert isinstance(json.loads(tc.function.arguments), dict)
    assert tool.usage.completion_tokens > 0
    assert text.choices[0].message.tool_calls is None
    assert text.usage.completion_tokens == n_words(text.choices[0].message.content)


def test_openai_tools_stream_fragments_concatenate_by_index(oai):
    def call(prompt: str) -> list[Any]:
        stream = oai.chat.completions.create(model=GPT, messages=user(prompt), tools=OPENAI_TOOLS, stream=True,
                                             stream_options={"include_usage": True})
        return list(stream)

    def finish(chunks: list[Any]) -> str | None:
        return next(c.choices[0].finish_reason for c in reversed(chunks) if c.choices)

    prompt, chunks, _ = find_both(call, lambda cs: finish(cs) == "tool_calls")
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] += tc.id or ""
            if tc.function is not None:
                slot["name"] += tc.function.name or ""
                slot["arguments"] += tc.function.arguments or ""
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert isinstance(json.loads(calls[0]["arguments"]), dict)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.tool_calls) > 2  # really fragmented
    assert chunks[-1].usage.completion_tokens > 0
    plain = oai.chat.completions.create(model=GPT, messages=user(prompt), tools=OPENAI_TOOLS)
    assert plain.choices[0].message.tool_calls[0].function.arguments == calls[0]["arguments"]


def test_openai_reasoning_content_plain(oai):
    completion = oai.chat.completions.create(model=GPT, messages=user("Think first"), reasoning_effort="low")
    message = completion.choices[0].message
    reasoning = (message.model_extra or {}).get("reasoning_content")
    assert reasoning and message.content
    usage = completion.usage
    assert usage.completion_tokens_details.reasoning_tokens == n_words(reasoning)
    assert usage.completion_tokens == n_words(reasoning) + n_words(message.content)


def test_openai_reasoning_content_stream(oai):
    stream = oai.chat.completions.create(model=GPT, messages=user("Think first"), reasoning_effort="low",
                                         stream=True, stream_options={"include_usage": True})
    kinds: list[str] = []
    reasoning, text, usage = "", "", None
    for chunk in stream:
        if not chunk.choices:
            usage = chunk.usage
            continue
        delta = chunk.choices[0].delta
        piece = (delta.model_extra or {}).get("reasoning_content")
        if piece:
            reasoning += piece
            kinds.append("reasoning")
        if delta.content:
            text += delta.content
            kinds.append("text")
    assert reasoning and text
    assert kinds == sorted(kinds)  # every reasoning delta comes before the first content delta
    assert usage.completion_tokens_details.reasoning_tokens == n_words(reasoning)
    assert usage.completion_tokens == n_words(reasoning) + n_words(text)


def test_openai_reasoning_counts_against_max_completion_tokens(oai):
    completion = oai.chat.completions.create(model=GPT, messages=user("Think hard"), reasoning_effort="low",
                                             max_completion_tokens=4)
    assert completion.usage.completion_tokens <= 4
    assert completion.choices[0].finish_reason == "length"


def test_openai_embeddings_default_is_base64_decoded_by_the_sdk(oai):
    inputs = ["the quick brown fox", "jumps"]
    default = oai.embeddings.create(model=EMBED, input=inputs)  # the SDK asks for base64 and decodes it
    assert [d.index for d in default.data] == [0, 1]
    vec = default.data[0].embedding
    assert isinstance(vec, list) and len(vec) == 1536 and all(isinstance(x, float) for x in vec)
    assert math.sqrt(sum(x * x for x in vec)) == pytest.approx(1.0, abs=1e-3)
    floats = oai.embeddings.create(model=EMBED, input=inputs, encoding_format="float")
    assert default.data[1].embedding == pytest.approx(floats.data[1].embedding, abs=1e-6)
    raw = oai.embeddings.create(model=EMBED, input=inputs, encoding_format="base64")
    assert isinstance(raw.data[0].embedding, str)
    assert struct.unpack("<1536f", base64.b64decode(raw.data[0].embedding)) == pytest.approx(vec, abs=1e-6)
    expected = prompt_tokens(inputs[0]) + prompt_tokens(inputs[1])
    assert default.usage.prompt_tokens == default.usage.total_tokens == expected


def test_openai_embeddings_with_dimensions(sim, oai):
    raw = oai.embeddings.with_raw_response.create(model=EMBED, input="a b c", dimensions=8)
    result = raw.parse()
    assert len(result.data) == 1 and len(result.data[0].embedding) == 8
    assert result.model == EMBED and result.usage.prompt_tokens == 2
    entry = truth_of(sim, raw.headers["x-request-id"])
    assert entry["endpoint"] == "embeddings" and entry["outcome"] == "ok"


def test_openai_images_generate_two_pngs(sim, oai):
    raw = oai.images.with_raw_response.generate(model="gpt-image-1", prompt="an otter at dusk", n=2,
                                                size="1024x1024", quality="low")
    images = raw.parse()
    assert len(images.data) == 2
    for image in images.data:
        assert base64.b64decode(image.b64_json).startswith(PNG_MAGIC)
    assert images.usage.total_tokens == images.usage.input_tokens + images.usage.output_tokens
    entry = truth_of(sim, raw.headers["x-request-id"])
    assert entry["images_requested"] == entry["images_returned"] == 2


def test_openai_models_list(oai):
    models = list(oai.models.list())
    ids = {m.id for m in models}
    assert {GPT, CLAUDE, GEMINI, EMBED, "gpt-image-1"} <= ids
    assert all(m.object == "model" and m.owned_by and isinstance(m.created, int) for m in models)


def test_openai_dry_run_estimate_through_raw_response(sim, oai):
    raw = oai.chat.completions.with_raw_response.create(model=GPT, messages=user("How much?"),
                                                        max_completion_tokens=50,
                                                        extra_headers={"X-TT-Dry-Run": "true"})
    assert raw.status_code == 200
    body = raw.http_response.json()
    assert body["object"] == "billing.estimate" and body["dry_run"] is True
    amount = body["estimate"]["amount"]
    assert isinstance(amount, str) and Decimal(amount) > 0
    assert body["estimate"]["basis"]["max_output_tokens"] == 50
    assert body["request_id"] == raw.headers["x-request-id"]
    entry = truth_of(sim, body["request_id"])
    assert entry["dry_run"] is True and entry["usage"] is None


# ------------------------------------------------------------------------------------------------- anthropic


def test_anthropic_messages_plain(sim, anth):
    prompt = "Hello Claude"
    message = anth.messages.create(model=CLAUDE, max_tokens=64, messages=user(prompt))
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn"
    (block,) = message.content
    assert block.type == "text" and block.text
    assert message.usage.output_tokens == n_words(block.text)
    assert message.usage.input_tokens == prompt_tokens(prompt)
    entry = truth_of(sim, message._request_id)
    assert entry["endpoint"] == "messages" and entry["usage"]["output_tokens"] == message.usage.output_tokens


def test_anthropic_max_tokens_stop_reason(anth):
    message = anth.messages.create(model=CLAUDE, max_tokens=2, messages=user("Tell me a long story"))
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2


def test_anthropic_stream_helper(sim, anth):
    messages = user("Stream to me")
    with anth.messages.stream(model=CLAUDE, max_tokens=64, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.request_id
    assert text and final.content[0].text == text
    assert final.usage.output_tokens == n_words(text)  # message_delta's cumulative count, not 1 + n
    assert final.usage.input_tokens == prompt_tokens("Stream to me")
    assert final.stop_reason == "end_turn"
    entry = truth_of(sim, request_id)
    assert entry["stream"] is True and entry["outcome"] == "ok"
    plain = anth.messages.create(model=CLAUDE, max_tokens=64, messages=messages)
    assert plain.content[0].text == text


def test_anthropic_tools_plain(anth):
    def call(prompt: str) -> Any:
        return anth.messages.create(model=CLAUDE, max_tokens=64, messages=user(prompt), tools=ANTHROPIC_TOOLS)

    _, tool, text = find_both(call, lambda m: m.stop_reason == "tool_use")
    blocks = [b for b in tool.content if b.type == "tool_use"]
    assert len(blocks) == 1
    assert blocks[0].name == "get_weather" and blocks[0].id.startswith("toolu_")
    assert isinstance(blocks[0].input, dict) and blocks[0].input
    assert text.content[0].type == "text" and text.stop_reason == "end_turn"


def test_anthropic_tools_stream_input_json_delta(anth):
    def call(prompt: str) -> tuple[list[Any], Any]:
        with anth.messages.stream(model=CLAUDE, max_tokens=64, messages=user(prompt),
                                  tools=ANTHROPIC_TOOLS) as stream:
            events = list(stream)
            return events, stream.get_final_message()

    prompt, (events, final), _ = find_both(call, lambda r: r[1].stop_reason == "tool_use")
    starts = [e for e in events if e.type == "content_block_start"]
    assert starts[0].content_block.type == "tool_use" and starts[0].content_block.name == "get_weather"
    partial = "".join(e.delta.partial_json for e in events
                      if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
    assert len([e for e in events if e.type == "input_json"]) > 1  # the helper saw several fragments
    (block,) = [b for b in final.content if b.type == "tool_use"]
    assert json.loads(partial) == block.input
    plain = anth.messages.create(model=CLAUDE, max_tokens=64, messages=user(prompt), tools=ANTHROPIC_TOOLS)
    assert plain.content[0].input == block.input


def test_anthropic_thinking_plain(anth):
    message = anth.messages.create(model=CLAUDE, max_tokens=2048, messages=user("Think about it"),
                                   thinking={"type": "enabled", "budget_tokens": 1024})
    kinds = [b.type for b in message.content]
    assert kinds == ["thinking", "text"]
    thinking, text = message.content
    assert thinking.thinking and thinking.signature
    assert message.usage.output_tokens == n_words(thinking.thinking) + n_words(text.text)


def test_anthropic_thinking_stream(anth):
    with anth.messages.stream(model=CLAUDE, max_tokens=2048, messages=user("Think about it"),
                              thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    thought = "".join(d.thinking for d in deltas if d.type == "thinking_delta")
    text = "".join(d.text for d in deltas if d.type == "text_delta")
    signatures = [d.signature for d in deltas if d.type == "signature_delta"]
    assert thought and text and len(signatures) == 1
    first_text = next(i for i, d in enumerate(deltas) if d.type == "text_delta")
    assert all(d.type != "thinking_delta" for d in deltas[first_text:])
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == thought and final.content[0].signature == signatures[0]
    assert final.content[1].text == text
    assert final.usage.output_tokens == n_words(thought) + n_words(text)


def test_anthropic_models_list(anth):
    models = list(anth.models.list())
    assert {GPT, CLAUDE, GEMINI} <= {m.id for m in models}
    assert all(m.type == "model" and m.display_name and m.created_at for m in models)


def test_anthropic_dry_run_estimate_through_raw_response(anth):
    raw = anth.messages.with_raw_response.create(model=CLAUDE, max_tokens=40, messages=user("How much?"),
                                                 extra_headers={"X-TT-Dry-Run": "true"})
    body = raw.http_response.json()
    assert body["object"] == "billing.estimate" and Decimal(body["estimate"]["amount"]) > 0
    assert body["request_id"] == raw.headers["request-id"]


# ---------------------------------------------------------------------------------------------------- gemini


def test_gemini_generate_content(sim, gem):
    response = gem.models.generate_content(model=GEMINI, contents="Hello Gemini")
    text = response.text
    assert text
    usage = response.usage_metadata
    assert usage.candidates_token_count == n_words(text)
    assert usage.prompt_token_count == prompt_tokens("Hello Gemini")
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    headers = response.sdk_http_response.headers
    assert headers["x-tt-request-id"] == response.response_id
    entry = truth_of(sim, response.response_id)
    assert entry["endpoint"] == "gemini" and entry["usage"]["output_tokens"] == usage.candidates_token_count


def test_gemini_max_output_tokens(gem):
    response = gem.models.generate_content(model=GEMINI, contents="Tell me a long story",
                                           config=types.GenerateContentConfig(max_output_tokens=3))
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata.candidates_token_count == 3 == n_words(response.text)


def test_gemini_generate_content_stream(sim, gem):
    chunks = list(gem.models.generate_content_stream(model=GEMINI, contents="Stream, Gemini"))
    assert len(chunks) > 1
    text = "".join(c.text or "" for c in chunks)
    counts = [c.usage_metadata.candidates_token_count for c in chunks]
    assert counts == sorted(counts)  # cumulative: keep the last, never sum
    assert counts[-1] == n_words(text)
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert len({c.response_id for c in chunks}) == 1
    entry = truth_of(sim, chunks[0].response_id)
    assert entry["stream"] is True and entry["usage"]["output_tokens"] == counts[-1]
    plain = gem.models.generate_content(model=GEMINI, contents="Stream, Gemini")
    assert plain.text == text


def test_gemini_function_calls_plain(gem):
    def call(prompt: str) -> Any:
        return gem.models.generate_content(model=GEMINI, contents=prompt, config=GEMINI_TOOL_CONFIG)

    _, tool, text = find_both(call, lambda r: bool(r.function_calls))
    (fc,) = tool.function_calls
    assert fc.name == "get_weather" and isinstance(fc.args, dict) and fc.args
    part = tool.candidates[0].content.parts[0]
    assert part.function_call is not None and part.text is None
    assert text.text and text.usage_metadata.candidates_token_count == n_words(text.text)


def test_gemini_function_calls_stream(gem):
    def call(prompt: str) -> list[Any]:
        return list(gem.models.generate_content_stream(model=GEMINI, contents=prompt,
                                                       config=GEMINI_TOOL_CONFIG))

    prompt, chunks, _ = find_both(call, lambda cs: any(c.function_calls for c in cs))
    calls = [fc for c in chunks for fc in (c.function_calls or [])]
    assert len(calls) == 1 and calls[0].name == "get_weather" and isinstance(calls[0].args, dict)
    plain = gem.models.generate_content(model=GEMINI, contents=prompt, config=GEMINI_TOOL_CONFIG)
    assert plain.function_calls[0].args == calls[0].args


def test_gemini_thinking_plain(gem):
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True))
    response = gem.models.generate_content(model=GEMINI, contents="Think, Gemini", config=config)
    parts = response.candidates[0].content.parts
    thoughts = [p.text for p in parts if p.thought]
    answer = [p.text for p in parts if not p.thought]
    assert thoughts and answer
    assert response.text == "".join(answer)  # the SDK leaves thoughts out of .text
    usage = response.usage_metadata
    assert usage.thoughts_token_count == n_words("".join(thoughts))
    assert usage.candidates_token_count == n_words(response.text)  # thoughts are outside candidates
    assert usage.total_token_count == (usage.prompt_token_count + usage.candidates_token_count
                                       + usage.thoughts_token_count)


def test_gemini_thinking_stream(gem):
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True))
    chunks = list(gem.models.generate_content_stream(model=GEMINI, contents="Think, Gemini", config=config))
    parts = [p for c in chunks for p in c.candidates[0].content.parts]
    flags = [bool(p.thought) for p in parts]
    assert flags[0] is True and False in flags
    assert flags == sorted(flags, reverse=True)  # all thoughts first
    thought = "".join(p.text for p in parts if p.thought)
    text = "".join(p.text for p in parts if not p.thought)
    last = chunks[-1].usage_metadata
    assert last.thoughts_token_count == n_words(thought)
    assert last.candidates_token_count == n_words(text)


def test_gemini_api_version_v1(sim):
    with gemini_client(sim, api_version="v1") as client:
        plain = client.models.generate_content(model=GEMINI, contents="Hello on v1")
        chunks = list(client.models.generate_content_stream(model=GEMINI, contents="Hello on v1"))
    assert plain.text and plain.usage_metadata.candidates_token_count == n_words(plain.text)
    assert "".join(c.text or "" for c in chunks) == plain.text
    assert chunks[-1].usage_metadata.candidates_token_count == n_words(plain.text)
    entry = truth_of(sim, plain.response_id)
    assert entry["path"].startswith("/v1/models/")


def test_gemini_models_list(gem):
    names = [m.name for m in gem.models.list()]
    assert f"models/{GEMINI}" in names
    assert all(n.startswith("models/") for n in names)


# ----------------------------------------------------------------------------------------------------- async


@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")  # google-genai's own
def test_async_clients_stream_the_same_answers(sim, oai, anth, gem):
    """The async SDK clients (another HTTP stack under each SDK) parse the same streams."""

    async def run() -> tuple[str, str, str]:
        async with openai.AsyncOpenAI(api_key=sim.api_key, base_url=sim.url + "/v1", max_retries=0) as ao:
            stream = await ao.chat.completions.create(model=GPT, messages=user("async hello"), stream=True)
            o_text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        async with anthropic.AsyncAnthropic(api_key=sim.api_key, base_url=sim.url, max_retries=0) as aa:
            async with aa.messages.stream(model=CLAUDE, max_tokens=64, messages=user("async hello")) as s:
                a_text = "".join([t async for t in s.text_stream])
        async with gemini_client(sim).aio as ag:
            g_chunks = await ag.models.generate_content_stream(model=GEMINI, contents="async hello")
            g_text = "".join([c.text or "" async for c in g_chunks])
        return o_text, a_text, g_text

    o_text, a_text, g_text = asyncio.run(run())
    assert o_text == oai.chat.completions.create(model=GPT, messages=user("async hello")).choices[0].message.content
    assert a_text == anth.messages.create(model=CLAUDE, max_tokens=64, messages=user("async hello")).content[0].text
    assert g_text == gem.models.generate_content(model=GEMINI, contents="async hello").text


# ---------------------------------------------------------------------------------------------------- errors


def test_openai_wrong_key_is_authentication_error(sim):
    with openai.OpenAI(api_key="sk-wrong", base_url=sim.url + "/v1", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            client.chat.completions.create(model=GPT, messages=user("x"))
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    assert truth_of(sim, info.value.request_id)["status"] == 401


def test_anthropic_wrong_key_is_authentication_error(sim):
    with anthropic.Anthropic(api_key="sk-ant-wrong", base_url=sim.url, max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError) as info:
            client.messages.create(model=CLAUDE, max_tokens=5, messages=user("x"))
    assert info.value.status_code == 401
    assert info.value.body["error"]["type"] == "authentication_error"
    assert truth_of(sim, info.value.request_id)["status"] == 401


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_gemini_wrong_key_is_client_error_400(sim, stream):
    with gemini_client(sim, api_key="wrong-key") as client:
        with pytest.raises(genai_errors.ClientError) as info:
            if stream:
                list(client.models.generate_content_stream(model=GEMINI, contents="x"))
            else:
                client.models.generate_content(model=GEMINI, contents="x")
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert info.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_unknown_model_is_not_found(sim, oai, stream):
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="no-such-model", messages=user("x"), stream=stream)
    assert info.value.status_code == 404 and info.value.code == "model_not_found"
    assert truth_of(sim, info.value.request_id)["status"] == 404


def test_openai_unknown_embedding_model_is_not_found(oai):
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="no-such-model", input="x")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_unknown_model_is_not_found(sim, anth, stream):
    with pytest.raises(anthropic.NotFoundError) as info:
        anth.messages.create(model="no-such-model", max_tokens=5, messages=user("x"), stream=stream)
    assert info.value.status_code == 404 and info.value.body["error"]["type"] == "not_found_error"
    assert truth_of(sim, info.value.request_id)["status"] == 404


def test_gemini_unknown_model_is_client_error_404(gem):
    with pytest.raises(genai_errors.ClientError) as info:
        gem.models.generate_content(model="no-such-model", contents="x")
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"


# ------------------------------------------------------------------------------------ forced tool choice (bug)


def _openai_forced(oai, prompt: str) -> tuple[str | None, str | None]:
    c = oai.chat.completions.create(model=GPT, messages=user(prompt), tools=OPENAI_TOOLS,
                                    tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = c.choices[0].message.tool_calls or []
    return c.choices[0].finish_reason, calls[0].function.name if calls else None


def _anthropic_forced(anth, prompt: str) -> tuple[str | None, str | None]:
    m = anth.messages.create(model=CLAUDE, max_tokens=64, messages=user(prompt), tools=ANTHROPIC_TOOLS,
                             tool_choice={"type": "tool", "name": "get_time"})
    names = [b.name for b in m.content if b.type == "tool_use"]
    return m.stop_reason, names[0] if names else None


def _gemini_forced(gem, prompt: str) -> tuple[str | None, str | None]:
    config = types.GenerateContentConfig(
        tools=[GEMINI_TOOL],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_time"])))
    r = gem.models.generate_content(model=GEMINI, contents=prompt, config=config)
    calls = r.function_calls or []
    return "function_call" if calls else "text", calls[0].name if calls else None


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "gemini"])
def test_forced_tool_choice_always_calls_the_named_tool(oai, anth, gem, dialect):
    client, ask, finish = {"openai": (oai, _openai_forced, "tool_calls"),
                           "anthropic": (anth, _anthropic_forced, "tool_use"),
                           "gemini": (gem, _gemini_forced, "function_call")}[dialect]
    answers = [ask(client, prompt) for prompt in PROMPTS[:6]]
    assert answers == [(finish, "get_time")] * len(answers)


# ------------------------------------------------------------------------------ rate limits and budgets (keys)

#: "Hi" is 1 token: with max 10 output tokens a call's estimate is 11.
LIMITED_KEYS = {
    "sdk-openai": {"tenant": "sdk-openai", "rpm": 2, "tpm": 10000},
    "sdk-anthropic": {"tenant": "sdk-anthropic", "rpm": 2, "tpm": 10000},
    "sdk-gemini-plain": {"tenant": "sdk-gemini-plain", "rpm": 1},
    "sdk-gemini-stream": {"tenant": "sdk-gemini-stream", "rpm": 1},
    "sdk-broke-openai": {"tenant": "broke-openai", "budget": 0},
    "sdk-broke-anthropic": {"tenant": "broke-anthropic", "budget": 0},
    "sdk-broke-gemini": {"tenant": "broke-gemini", "budget": 0},
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """A simulator whose keys have rate limits or an empty budget."""
    cfg = write_config(tmp_path_factory.mktemp("sdk-limits") / "limits.yaml", {"keys": LIMITED_KEYS})
    with SimProcess(config=cfg, seed=5) as proc:
        yield proc


def test_openai_sdk_reads_rate_limit_headers_and_raises_rate_limit_error(limited):
    with openai.OpenAI(api_key="sdk-openai", base_url=limited.url + "/v1", max_retries=0, timeout=20) as client:
        raw = client.chat.completions.with_raw_response.create(model=GPT, messages=user("Hi"),
                                                               max_completion_tokens=10)
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"
        assert raw.headers["x-ratelimit-limit-tokens"] == "10000"
        assert raw.headers["x-ratelimit-remaining-tokens"] == "9989"  # 10000 - (1 + 10)
        assert raw.headers["x-ratelimit-reset-requests"] == "30s"  # 1 request at 2/60 per second
        assert raw.parse().choices[0].message.content
        second = client.chat.completions.with_raw_response.create(model=GPT, messages=user("Hi"),
                                                                  max_completion_tokens=10)
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model=GPT, messages=user("Hi"), max_completion_tokens=10)
    err = info.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded" and err.type == "requests"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.response.headers["x-ratelimit-limit-requests"] == "2"
    assert "retry-after" not in err.response.headers
    assert truth_of(limited, err.request_id)["limit"]["refused"] == "requests"


def test_openai_sdk_budget_exhausted_is_insufficient_quota(limited):
    with openai.OpenAI(api_key="sdk-broke-openai", base_url=limited.url + "/v1", max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model=GPT, messages=user("Hi"))
    assert info.value.status_code == 429 and info.value.code == "insufficient_quota"
    assert info.value.type == "insufficient_quota"
    assert truth_of(limited, info.value.request_id)["limit"]["refused"] == "budget"


def test_anthropic_sdk_reads_rate_limit_headers_and_retry_after(limited):
    with anthropic.Anthropic(api_key="sdk-anthropic", base_url=limited.url, max_retries=0, timeout=20) as client:
        raw = client.messages.with_raw_response.create(model=CLAUDE, max_tokens=10, messages=user("Hi"))
        assert raw.headers["anthropic-ratelimit-requests-limit"] == "2"
        assert raw.headers["anthropic-ratelimit-requests-remaining"] == "1"
        assert raw.headers["anthropic-ratelimit-tokens-remaining"] == "9989"
        reset = datetime.fromisoformat(raw.headers["anthropic-ratelimit-requests-reset"].replace("Z", "+00:00"))
        assert reset.timestamp() - time.time() == pytest.approx(30, abs=2)  # RFC 3339, rounded up
        assert raw.parse().content[0].text
        client.messages.create(model=CLAUDE, max_tokens=10, messages=user("Hi"))
        with pytest.raises(anthropic.RateLimitError) as info:
            client.messages.create(model=CLAUDE, max_tokens=10, messages=user("Hi"))
    err = info.value
    assert err.status_code == 429 and err.body["error"]["type"] == "rate_limit_error"
    assert err.response.headers["retry-after"] in ("29", "30")  # (1 - level) / (2/60), the level just above 0
    assert err.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert truth_of(limited, err.request_id)["limit"]["refused"] == "requests"


def test_anthropic_sdk_budget_exhausted_is_bad_request(limited):
    with anthropic.Anthropic(api_key="sdk-broke-anthropic", base_url=limited.url, max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as info:
            client.messages.create(model=CLAUDE, max_tokens=10, messages=user("Hi"))
    assert info.value.status_code == 400
    assert "credit balance is too low" in info.value.body["error"]["message"]
    assert "retry-after" not in info.value.response.headers


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_gemini_sdk_rate_limit_is_client_error_429_with_details(limited, stream):
    with gemini_client(limited, api_key="sdk-gemini-stream" if stream else "sdk-gemini-plain") as client:
        assert client.models.generate_content(model=GEMINI, contents="Hi").text  # the one request a minute
        with pytest.raises(genai_errors.ClientError) as info:
            if stream:
                list(client.models.generate_content_stream(model=GEMINI, contents="Hi"))
            else:
                client.models.generate_content(model=GEMINI, contents="Hi")
    err = info.value
    assert err.code == 429 and err.status == "RESOURCE_EXHAUSTED"
    details = {d["@type"]: d for d in err.details["error"]["details"]}
    (violation,) = details["type.googleapis.com/google.rpc.QuotaFailure"]["violations"]
    assert violation["quotaValue"] == "1" and violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
    delay = details["type.googleapis.com/google.rpc.RetryInfo"]["retryDelay"]
    assert delay in ("59s", "60s")  # (1 - level) / (1/60) s, the level just above 0, rounded up


def test_gemini_sdk_budget_exhausted_has_no_retry_info(limited):
    with gemini_client(limited, api_key="sdk-broke-gemini") as client:
        with pytest.raises(genai_errors.ClientError) as info:
            client.models.generate_content(model=GEMINI, contents="Hi")
    err = info.value
    assert err.code == 429 and err.status == "RESOURCE_EXHAUSTED"
    assert [d["@type"] for d in err.details["error"]["details"]] == ["type.googleapis.com/google.rpc.QuotaFailure"]
