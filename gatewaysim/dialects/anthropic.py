"""Anthropic Messages: POST /v1/messages, plain and SSE with event lines; the Anthropic error shape."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..cache import segment
from ..calls import BadRequest, Call, Frame, Plan
from ..textgen import count_texts
from .base import Dialect, Route, bearer, content_key, sse, texts_of, want_bool, want_int

if TYPE_CHECKING:
    from ..limits import Refusal

_TYPES = {
    "invalid_request": "invalid_request_error",
    "auth_missing": "authentication_error",
    "auth_invalid": "authentication_error",
    "not_found": "not_found_error",
    "unknown_url": "not_found_error",
    "rate_limit": "rate_limit_error",
    "server_error": "api_error",
    "overloaded": "overloaded_error",
    "in_flight": "conflict_error",
    "key_reused": "invalid_request_error",
}
STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
CREDIT_MESSAGE = ("Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to "
                  "upgrade or purchase credits.")
_PER_MINUTE = {"requests": "requests per minute", "tokens": "tokens per minute",
               "concurrency": "concurrent requests"}


class AnthropicMessages(Dialect):
    """Messages API."""

    name = "anthropic"
    endpoint = "messages"
    routes = (Route("POST", "/v1/messages"),)
    configurable = True
    cache_writes = True
    ratelimit_style = "anthropic"

    def owns_path(self, path: str) -> bool:
        """Unknown URLs under /v1/messages get the Anthropic error shape."""
        return path.startswith("/v1/messages")

    def server_error_status(self, status: int) -> int:
        """502 and 503 are 529 (overloaded) on Messages."""
        return 529 if status in (502, 503) else status

    def api_key(self, request: web.Request) -> str | None:
        """`x-api-key`, else `Authorization: Bearer`."""
        return request.headers.get("x-api-key") or bearer(request)

    def error(self, status: int, category: str, message: str, param: str | None = None,
              code: str | None = None) -> dict[str, Any]:
        """{"type": "error", "error": {type, message}}."""
        return {"type": "error", "error": {"type": _TYPES.get(category, "api_error"), "message": message}}

    def rate_limited(self, refusal: Refusal) -> tuple[int, dict[str, Any], dict[str, str]]:
        """429 `rate_limit_error` with retry-after in whole seconds."""
        message = (f"This request would exceed your organization's rate limit of {refusal.limit} "
                   f"{_PER_MINUTE[refusal.dimension]}. For details, refer to: "
                   "https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. "
                   "Please reduce the prompt length or the maximum tokens requested, or try again later.")
        return 429, self.error(429, "rate_limit", message), {"retry-after": str(refusal.retry_after_s)}

    def quota_exceeded(self) -> tuple[int, dict[str, Any]]:
        """400 `invalid_request_error`: the credit balance is too low."""
        return 400, self.error(400, "invalid_request", CREDIT_MESSAGE)

    def parse(self, body: Any, request: web.Request) -> Call:
        """Validate a Messages request."""
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required", param="model")
        cap = want_int(body, "max_tokens")
        if cap is None:
            raise BadRequest("max_tokens: Field required", param="max_tokens")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: must be a non-empty list", param="messages")
        texts = texts_of(body.get("system"))
        segments = [(segment("system", texts), count_texts(texts))] if texts else []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise BadRequest(f"messages.{i}.role: must be 'user' or 'assistant'", param=f"messages.{i}")
            mine = texts_of(m.get("content"))
            texts.extend(mine)
            segments.append((segment(str(m["role"]), mine), count_texts(mine)))
        tools: list[str] = []
        raw_tools = body.get("tools")
        if raw_tools is not None:
            if not isinstance(raw_tools, list):
                raise BadRequest("tools: must be a list", param="tools")
            for i, t in enumerate(raw_tools):
                if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                    raise BadRequest(f"tools.{i}.name: Field required", param=f"tools.{i}")
                tools.append(t["name"])
        choice = body.get("tool_choice")
        force = None
        if isinstance(choice, dict) and choice.get("type") == "none":
            tools = []
        elif tools and isinstance(choice, dict) and choice.get("type") == "any":
            force = tools[0]
        elif tools and isinstance(choice, dict) and choice.get("type") == "tool":
            if choice.get("name") not in tools:
                raise BadRequest(f"tool_choice.name: unknown tool {choice.get('name')!r}", param="tool_choice")
            force = choice["name"]
        thinking = body.get("thinking")
        reasoning, budget = False, None
        if isinstance(thinking, dict) and thinking.get("type") == "enabled":
            reasoning = True
            budget = want_int(thinking, "budget_tokens", 1024)
            if budget is None:
                raise BadRequest("thinking.budget_tokens: Field required", param="thinking")
            if budget >= cap:
                raise BadRequest("`max_tokens` must be greater than `thinking.budget_tokens`", param="max_tokens")
        return Call(
            endpoint=self.endpoint,
            model=model,
            stream=want_bool(body, "stream"),
            input_tokens=max(1, count_texts(texts)),
            max_tokens=cap,
            ignore_eos=want_bool(body, "ignore_eos"),
            tools=tools,
            force_tool=force,
            reasoning=reasoning,
            reasoning_budget=budget,
            content_key=content_key(body, model),
            segments=segments,
        )

    def usage(self, plan: Plan) -> dict[str, Any]:
        """Usage; input_tokens excludes cache reads and writes."""
        plain = plan.input_tokens - plan.cached_input_tokens - plan.cache_write_tokens
        return {
            "input_tokens": max(0, plain),
            "output_tokens": plan.output_tokens,
            "cache_creation_input_tokens": plan.cache_write_tokens,
            "cache_read_input_tokens": plan.cached_input_tokens,
            "service_tier": "standard",
        }

    def _blocks(self, plan: Plan, ctx: dict[str, Any]) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if plan.reasoning_tokens:
            blocks.append({"type": "thinking", "thinking": plan.text("reasoning"),
                           "signature": "sig_" + ctx["request_id"]})
        if plan.tool_name:
            blocks.append({"type": "tool_use", "id": "toolu_" + ctx["request_id"], "name": plan.tool_name,
                           "input": json.loads(plan.tool_args)})
        else:
            blocks.append({"type": "text", "text": plan.text()})
        return blocks

    def render(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> dict[str, Any]:
        """A message object."""
        return {
            "id": "msg_" + ctx["request_id"],
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": self._blocks(plan, ctx),
            "stop_reason": STOP[plan.finish],
            "stop_sequence": None,
            "usage": self.usage(plan),
        }

    def frames(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> list[Frame]:
        """message_start, content blocks with deltas, message_delta, message_stop."""

        def ev(data: dict[str, Any], tokens: int = 0) -> Frame:
            return Frame(sse(data, event=data["type"]), tokens)

        start_usage = dict(self.usage(plan), output_tokens=1)
        message = {"id": "msg_" + ctx["request_id"], "type": "message", "role": "assistant", "content": [],
                   "model": call.model, "stop_reason": None, "stop_sequence": None, "usage": start_usage}
        out = [ev({"type": "message_start", "message": message})]
        index = 0
        reasoning = [p for p in plan.pieces if p.kind == "reasoning"]
        if reasoning:
            out.append(ev({"type": "content_block_start", "index": index,
                           "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
            for p in reasoning:
                out.append(ev({"type": "content_block_delta", "index": index,
                               "delta": {"type": "thinking_delta", "thinking": p.text}}, 1))
            out.append(ev({"type": "content_block_delta", "index": index,
                           "delta": {"type": "signature_delta", "signature": "sig_" + ctx["request_id"]}}))
            out.append(ev({"type": "content_block_stop", "index": index}))
            index += 1
        if plan.tool_name:
            block = {"type": "tool_use", "id": "toolu_" + ctx["request_id"], "name": plan.tool_name, "input": {}}
            out.append(ev({"type": "content_block_start", "index": index, "content_block": block}, 1))
            for p in plan.pieces:
                if p.kind == "tool_args":
                    out.append(ev({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "input_json_delta", "partial_json": p.text}}, 1))
        else:
            out.append(ev({"type": "content_block_start", "index": index,
                           "content_block": {"type": "text", "text": ""}}))
            out.append(ev({"type": "ping"}))
            for p in plan.pieces:
                if p.kind == "text":
                    out.append(ev({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "text_delta", "text": p.text}}, 1))
        out.append(ev({"type": "content_block_stop", "index": index}))
        out.append(ev({"type": "message_delta", "delta": {"stop_reason": STOP[plan.finish], "stop_sequence": None},
                       "usage": {"output_tokens": plan.output_tokens}}))
        out.append(ev({"type": "message_stop"}))
        return out

    def inband_error(self, call: Call, ctx: dict[str, Any], sent: int) -> bytes:
        """An `event: error` on the 200 stream."""
        return sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                    "request_id": ctx["request_id"]}, event="error")

    def malformed(self, call: Call) -> bytes:
        """A content_block_delta whose JSON is cut."""
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type\n\n'
