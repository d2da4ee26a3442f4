"""OpenAI Chat Completions: POST /v1/chat/completions, plain and SSE; the OpenAI error shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ttformats.jsonline import compact_bytes as _dumps

from ..cache import segment
from ..calls import BadRequest, Call, Frame, Plan
from ..textgen import count_texts
from .base import Dialect, Route, bearer, content_key, sse, texts_of, want_bool, want_int

if TYPE_CHECKING:
    from ..limits import Refusal

_OPENAI_TYPES = {
    "invalid_request": ("invalid_request_error", None),
    "auth_missing": ("invalid_request_error", "missing_api_key"),
    "auth_invalid": ("invalid_request_error", "invalid_api_key"),
    "not_found": ("invalid_request_error", "model_not_found"),
    "unknown_url": ("invalid_request_error", "unknown_url"),
    "rate_limit": ("requests", "rate_limit_exceeded"),
    "server_error": ("server_error", None),
    "overloaded": ("server_error", "overloaded"),
    "in_flight": ("idempotency_error", "idempotency_key_in_use"),
    "key_reused": ("idempotency_error", "idempotency_key_reused"),
}
FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}
QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
_PER_MINUTE = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)",
               "concurrency": "concurrent requests"}


class OpenAIBase(Dialect):
    """Auth and errors shared by the OpenAI-shaped routes."""

    name = "openai"
    ratelimit_style = "openai"

    def api_key(self, request: web.Request) -> str | None:
        """`Authorization: Bearer`, else `Ocp-Apim-Subscription-Key` (Azure API Management)."""
        return bearer(request) or request.headers.get("Ocp-Apim-Subscription-Key")

    def error(self, status: int, category: str, message: str, param: str | None = None,
              code: str | None = None) -> dict[str, Any]:
        """{"error": {message, type, param, code}} with all four keys."""
        etype, default_code = _OPENAI_TYPES.get(category, ("invalid_request_error", None))
        return {"error": {"message": message, "type": etype, "param": param, "code": code or default_code}}

    def rate_limited(self, refusal: Refusal) -> tuple[int, dict[str, Any], dict[str, str]]:
        """429 `rate_limit_exceeded` of type requests or tokens; no retry-after (the x-ratelimit-* headers tell)."""
        where = f"for {refusal.model} in organization org-{refusal.tenant} on {_PER_MINUTE[refusal.dimension]}"
        if refusal.too_large:
            message = (f"Request too large {where}: Limit {refusal.limit}, Requested {refusal.requested}. "
                       "The input or output tokens must be reduced in order to run successfully.")
        else:
            message = (f"Rate limit reached {where}: Limit {refusal.limit}, Used {refusal.used}, Requested "
                       f"{refusal.requested}. Please try again in {refusal.wait_text}.")
        message += " Visit https://platform.openai.com/account/rate-limits to learn more."
        etype = "tokens" if refusal.dimension == "tokens" else "requests"
        return 429, {"error": {"message": message, "type": etype, "param": None, "code": "rate_limit_exceeded"}}, {}

    def quota_exceeded(self) -> tuple[int, dict[str, Any]]:
        """429 `insufficient_quota`."""
        return 429, {"error": {"message": QUOTA_MESSAGE, "type": "insufficient_quota", "param": None,
                               "code": "insufficient_quota"}}


class OpenAIChat(OpenAIBase):
    """Chat completions."""

    endpoint = "chat"
    routes = (Route("POST", "/v1/chat/completions"),)
    configurable = True

    def parse(self, body: Any, request: web.Request) -> Call:
        """Validate a chat request."""
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty array", param="messages")
        texts: list[str] = []
        segments: list[tuple[str, int]] = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m:
                raise BadRequest(f"'messages.{i}' must be an object with a 'role'", param=f"messages.{i}")
            mine = texts_of(m.get("content"))
            texts.extend(mine)
            segments.append((segment(str(m["role"]), mine), count_texts(mine)))
        n = want_int(body, "n", 1, 128)
        if n not in (None, 1):
            raise BadRequest("n > 1 is not supported", param="n")
        cap = want_int(body, "max_completion_tokens")
        if cap is None:
            cap = want_int(body, "max_tokens")
        tools: list[str] = []
        raw_tools = body.get("tools")
        if raw_tools is not None:
            if not isinstance(raw_tools, list):
                raise BadRequest("'tools' must be an array", param="tools")
            for i, t in enumerate(raw_tools):
                fn = t.get("function") if isinstance(t, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise BadRequest(f"'tools.{i}.function.name' is required", param=f"tools.{i}")
                tools.append(fn["name"])
        choice = body.get("tool_choice")
        force = None
        if choice == "none":
            tools = []
        elif tools and choice == "required":
            force = tools[0]
        elif tools and isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name")
            if name not in tools:
                raise BadRequest(f"tool_choice names an unknown function {name!r}", param="tool_choice")
            force = name
        opts = body.get("stream_options") or {}
        if not isinstance(opts, dict):
            raise BadRequest("'stream_options' must be an object", param="stream_options")
        effort = body.get("reasoning_effort")
        return Call(
            endpoint=self.endpoint,
            model=model,
            stream=want_bool(body, "stream"),
            input_tokens=max(1, count_texts(texts)),
            max_tokens=cap,
            ignore_eos=want_bool(body, "ignore_eos"),
            tools=tools,
            force_tool=force,
            reasoning=isinstance(effort, str) and effort not in ("none", "minimal"),
            include_usage=bool(opts.get("include_usage")),
            content_key=content_key(body, model),
            segments=segments,
        )

    def usage(self, plan: Plan) -> dict[str, Any]:
        """The usage object."""
        return {
            "prompt_tokens": plan.input_tokens,
            "completion_tokens": plan.output_tokens,
            "total_tokens": plan.input_tokens + plan.output_tokens,
            "prompt_tokens_details": {"cached_tokens": plan.cached_input_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": plan.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def render(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> dict[str, Any]:
        """A chat.completion object."""
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
        if plan.tool_name:
            message["tool_calls"] = [
                {
                    "id": plan.tool_call_id,
                    "type": "function",
                    "function": {"name": plan.tool_name, "arguments": plan.tool_args},
                }
            ]
        else:
            message["content"] = plan.text()
        if plan.reasoning_tokens:
            message["reasoning_content"] = plan.text("reasoning")
        return {
            "id": "chatcmpl-" + ctx["request_id"],
            "object": "chat.completion",
            "created": ctx["created"],
            "model": call.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": FINISH[plan.finish]}],
            "usage": self.usage(plan),
            "service_tier": "default",
            "system_fingerprint": "fp_gatewaysim",
        }

    def frames(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> list[Frame]:
        """Role chunk, deltas, finish chunk, optional usage chunk, [DONE]."""
        head = {
            "id": "chatcmpl-" + ctx["request_id"],
            "object": "chat.completion.chunk",
            "created": ctx["created"],
            "model": call.model,
            "system_fingerprint": "fp_gatewaysim",
        }
        extra = {"usage": None} if call.include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse({**head, "choices": [choice], **extra})

        # a text delta is the same bytes as chunk({"content": text}) with the text spliced in: one dumps of the
        # text instead of the whole chunk (most of a stream's frames are text deltas)
        around = chunk({"content": ""})
        cut = around.index(b'"content":""') + len(b'"content":')
        before, after = around[:cut], around[cut + 2:]
        out = [Frame(chunk({"role": "assistant", "content": "", "refusal": None}))]
        for p in plan.pieces:
            if p.kind == "text":
                out.append(Frame(before + _dumps(p.text) + after, 1))
            elif p.kind == "reasoning":
                out.append(Frame(chunk({"reasoning_content": p.text}), 1))
            elif p.kind == "tool_name":
                tc = {"index": 0, "id": plan.tool_call_id, "type": "function",
                      "function": {"name": p.text, "arguments": ""}}
                out.append(Frame(chunk({"tool_calls": [tc]}), 1))
            else:
                out.append(Frame(chunk({"tool_calls": [{"index": 0, "function": {"arguments": p.text}}]}), 1))
        out.append(Frame(chunk({}, FINISH[plan.finish])))
        if call.include_usage:
            out.append(Frame(sse({**head, "choices": [], "usage": self.usage(plan)})))
        out.append(Frame(b"data: [DONE]\n\n"))
        return out

    def inband_error(self, call: Call, ctx: dict[str, Any], sent: int) -> bytes:
        """A data line with a top-level error object."""
        return sse({"error": {"message": "The server had an error while processing your request.",
                              "type": "server_error", "param": None, "code": None}})
