"""The model: turns a Call into a Plan of output tokens, vectors or images, seeded per request."""

from __future__ import annotations

import json
from typing import Any

from .calls import Call, Piece, Plan
from .capacity import ttft_s
from .draws import rng, uniform
from .textgen import embedding, output_words, png

ARG_FRAGMENT_CHARS = 4


def plan_chat(spec: dict[str, Any], call: Call, seed: int, tool_share: float) -> Plan:
    """Plan a chat answer: reasoning, then text or a tool call, within max_tokens."""
    r = rng(seed, "plan", call.content_key)
    plan = Plan(input_tokens=call.input_tokens)
    plan.ttft_s = ttft_s(spec, call.input_tokens, r.random())
    cap = call.max_tokens if call.max_tokens is not None else int(spec["max_output_default"])
    lo, hi = spec["output_tokens"]["min"], spec["output_tokens"]["max"]
    natural = r.randint(lo, hi)
    n_reason = 0
    if call.reasoning:
        rlo, rhi = spec["reasoning_tokens"]["min"], spec["reasoning_tokens"]["max"]
        n_reason = r.randint(rlo, rhi)
        if call.reasoning_budget is not None:
            n_reason = max(1, min(n_reason, call.reasoning_budget))
        n_reason = min(n_reason, max(0, cap - 1))  # reasoning counts against the output cap
        for w in output_words(seed, "reason:" + call.content_key, n_reason):
            plan.pieces.append(Piece("reasoning", w))
    cap -= n_reason
    if call.force_tool or (call.tools and uniform(seed, "tool", call.content_key) < tool_share):
        plan.tool_name = call.force_tool or call.tools[0]
        plan.tool_call_id = "call_" + format(r.getrandbits(64), "016x")
        words = output_words(seed, "args:" + call.content_key, max(1, min(6, natural)))
        plan.tool_args = json.dumps({"query": "".join(words)})
        plan.pieces.append(Piece("tool_name", plan.tool_name))
        args = plan.tool_args
        for i in range(0, len(args), ARG_FRAGMENT_CHARS):
            plan.pieces.append(Piece("tool_args", args[i : i + ARG_FRAGMENT_CHARS]))
        plan.finish = "tool"
        return plan
    if call.ignore_eos:
        n = cap
    else:
        n = min(natural, cap)
        if natural > cap:
            plan.finish = "length"
    for w in output_words(seed, call.content_key, n):
        plan.pieces.append(Piece("text", w))
    return plan


def plan_embeddings(spec: dict[str, Any], call: Call, seed: int) -> Plan:
    """Plan embedding vectors, one per input."""
    r = rng(seed, "plan", call.content_key)
    plan = Plan(input_tokens=call.input_tokens)
    dims = call.dimensions or int(spec["dimensions"])
    plan.vectors = [embedding(seed, text, dims) for text in call.inputs]
    plan.work_s = ttft_s(spec, call.input_tokens, r.random())
    return plan


def plan_images(spec: dict[str, Any], call: Call, seed: int, returned: int) -> Plan:
    """Plan `returned` small PNG images."""
    r = rng(seed, "plan", call.content_key)
    plan = Plan(input_tokens=call.input_tokens)
    plan.images = [png(seed, f"{call.content_key}:{i}") for i in range(returned)]
    plan.work_s = (
        float(spec["base_ms"]) + float(spec["per_image_ms"]) * returned + float(spec["ttft_jitter_ms"]) * r.random()
    ) / 1000.0
    return plan
