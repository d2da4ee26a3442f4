"""Gemini generateContent / streamGenerateContent (SSE with alt=sse, else a streamed JSON array)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..cache import segment
from ..calls import BadRequest, Call, Frame, Plan
from ..textgen import count_texts
from .base import Dialect, Route, content_key, texts_of, want_bool, want_int

if TYPE_CHECKING:
    from ..limits import Refusal
    from ..state import Gateway

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 422: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
           502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}
METHODS = ("generateContent", "streamGenerateContent")
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
EXHAUSTED = "Resource has been exhausted (e.g. check quota)."
QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
#: The quota metric and id of a refusal, per dimension.
_QUOTAS = {
    "requests": ("generativelanguage.googleapis.com/generate_content_requests",
                 "GenerateRequestsPerMinutePerProjectPerModel"),
    "tokens": ("generativelanguage.googleapis.com/generate_content_input_token_count",
               "GenerateContentInputTokensPerModelPerMinute"),
    # neither "request" nor "token" in its names: a client reading them as per-minute figures passes it by
    "concurrency": ("generativelanguage.googleapis.com/generate_content_concurrency",
                    "GenerateContentConcurrencyPerProjectPerModel"),
}


def _dump(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


class Gemini(Dialect):
    """generateContent and streamGenerateContent."""

    name = "gemini"
    endpoint = "gemini"
    routes = (Route("POST", "/v1beta/models/{spec:.+}", model_in_path="spec"),
              Route("POST", "/v1/models/{spec:.+}", model_in_path="spec"))

    async def handle(self, gw: Gateway, request: web.Request) -> web.StreamResponse:
        """POST /v1beta/models/{model}:{method} (and /v1/...): split on the last colon."""
        spec = self.path_model(request) or ""
        while spec.startswith("models/"):
            spec = spec[len("models/"):]
        model, _, method = spec.rpartition(":")
        if not model or method not in METHODS:
            raise web.HTTPNotFound()
        request["gemini"] = (model, method)
        return await super().handle(gw, request)

    def owns_path(self, path: str) -> bool:
        """Unknown URLs under /v1beta/, or with a `model:method` colon, get Gemini's error shape."""
        return path.startswith("/v1beta/") or ":" in path or "%3A" in path.upper()

    def auth_failure(self, missing: bool) -> tuple[int, str]:
        """403 without a key, 400 with a wrong one, as the real API does."""
        if missing:
            return 403, ("Method doesn't allow unregistered callers. "
                         "Please use API Key or other form of API consumer identity to call this API.")
        return 400, "API key not valid. Please pass a valid API key."

    def stream_content_type(self, call: Call) -> str:
        """SSE with `?alt=sse`, else a streamed JSON array."""
        return "text/event-stream" if call.sse else "application/json"

    def api_key(self, request: web.Request) -> str | None:
        """`?key=`, else `x-goog-api-key`."""
        return request.query.get("key") or request.headers.get("x-goog-api-key")

    def error(self, status: int, category: str, message: str, param: str | None = None,
              code: str | None = None) -> dict[str, Any]:
        """{"error": {code, message, status}}; a bad key carries API_KEY_INVALID details."""
        err: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
        if category == "auth_invalid":
            err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                               "domain": "googleapis.com",
                               "metadata": {"service": "generativelanguage.googleapis.com"}}]
        return {"error": err}

    def rate_limited(self, refusal: Refusal) -> tuple[int, dict[str, Any], dict[str, str]]:
        """429 RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo details; no headers."""
        metric, quota_id = _QUOTAS[refusal.dimension]
        violation = {"quotaMetric": metric, "quotaId": quota_id,
                     "quotaDimensions": {"model": refusal.model, "location": "global"},
                     "quotaValue": str(refusal.limit)}
        details = [{"@type": QUOTA_FAILURE, "violations": [violation]},
                   {"@type": RETRY_INFO, "retryDelay": f"{refusal.retry_after_s}s"}]
        return 429, {"error": {"code": 429, "message": EXHAUSTED, "status": "RESOURCE_EXHAUSTED",
                               "details": details}}, {}

    def quota_exceeded(self) -> tuple[int, dict[str, Any]]:
        """429 RESOURCE_EXHAUSTED naming the billing quota, without RetryInfo (waiting does not help)."""
        violation = {"quotaMetric": "generativelanguage.googleapis.com/billing_prepay_credit",
                     "quotaId": "BillingPrepayCreditPerProject", "quotaDimensions": {"location": "global"}}
        return 429, {"error": {"code": 429, "message": QUOTA_MESSAGE, "status": "RESOURCE_EXHAUSTED",
                               "details": [{"@type": QUOTA_FAILURE, "violations": [violation]}]}}

    def parse(self, body: Any, request: web.Request) -> Call:
        """Validate a generateContent request; the model and method come from the path."""
        if not isinstance(body, dict):
            raise BadRequest("Invalid JSON payload received. Expected an object.")
        model, method = request["gemini"]
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise BadRequest("* GenerateContentRequest.contents: contents is not specified", param="contents")
        texts: list[str] = []
        segments: list[tuple[str, int]] = []
        sys_inst = body.get("systemInstruction") or body.get("system_instruction")
        if isinstance(sys_inst, dict):
            texts.extend(texts_of(sys_inst.get("parts")))
            segments.append((segment("system", list(texts)), count_texts(texts)))
        for i, c in enumerate(contents):
            if not isinstance(c, dict) or not isinstance(c.get("parts"), list):
                raise BadRequest(f"* GenerateContentRequest.contents[{i}].parts: must be a list",
                                 param=f"contents[{i}]")
            mine = texts_of(c["parts"])
            texts.extend(mine)
            segments.append((segment(str(c.get("role", "user")), mine), count_texts(mine)))
        gen = body.get("generationConfig") or body.get("generation_config") or {}
        if not isinstance(gen, dict):
            raise BadRequest("generationConfig must be an object", param="generationConfig")
        cap = want_int(gen, "maxOutputTokens")
        if cap is None:
            cap = want_int(gen, "max_output_tokens")
        thinking = gen.get("thinkingConfig") or gen.get("thinking_config") or {}
        budget = thinking.get("thinkingBudget", thinking.get("thinking_budget")) if isinstance(thinking, dict) else None
        show = bool(thinking.get("includeThoughts", thinking.get("include_thoughts"))) if isinstance(thinking, dict) else False
        tools: list[str] = []
        for t in body.get("tools") or []:
            decls = t.get("functionDeclarations") or t.get("function_declarations") if isinstance(t, dict) else None
            for d in decls or []:
                if isinstance(d, dict) and isinstance(d.get("name"), str):
                    tools.append(d["name"])
        fcc = ((body.get("toolConfig") or body.get("tool_config") or {}).get("functionCallingConfig")
               or (body.get("toolConfig") or {}).get("function_calling_config") or {})
        mode = str(fcc.get("mode", "AUTO")).upper() if isinstance(fcc, dict) else "AUTO"
        force = None
        if mode == "NONE":
            tools = []
        elif mode == "ANY" and tools:
            allowed = [n for n in (fcc.get("allowedFunctionNames") or fcc.get("allowed_function_names") or [])
                       if n in tools]
            force = allowed[0] if allowed else tools[0]
        return Call(
            endpoint=self.endpoint,
            model=model,
            force_tool=force,
            stream=method == "streamGenerateContent",
            input_tokens=max(1, count_texts(texts)),
            max_tokens=cap,
            ignore_eos=want_bool(gen, "ignoreEos"),
            tools=tools,
            reasoning=show or (isinstance(budget, int) and budget > 0),
            reasoning_budget=budget if isinstance(budget, int) and budget > 0 else None,
            show_reasoning=show,
            sse=request.query.get("alt") == "sse",
            content_key=content_key(body, model),
            segments=segments,
        )

    def usage(self, plan: Plan, upto: int | None = None) -> dict[str, Any]:
        """Cumulative usageMetadata over the first `upto` pieces (all when None)."""
        pieces = plan.pieces if upto is None else plan.pieces[:upto]
        thoughts = sum(1 for p in pieces if p.kind == "reasoning")
        cands = len(pieces) - thoughts
        meta: dict[str, Any] = {
            "promptTokenCount": plan.input_tokens,
            "candidatesTokenCount": cands,
            "totalTokenCount": plan.input_tokens + cands + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": plan.input_tokens}],
        }
        if thoughts:
            meta["thoughtsTokenCount"] = thoughts
        if plan.cached_input_tokens:
            meta["cachedContentTokenCount"] = plan.cached_input_tokens
        return meta

    def _parts(self, call: Call, plan: Plan) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if plan.reasoning_tokens and call.show_reasoning:
            parts.append({"text": plan.text("reasoning"), "thought": True})
        if plan.tool_name:
            parts.append({"functionCall": {"name": plan.tool_name, "args": json.loads(plan.tool_args)}})
        else:
            parts.append({"text": plan.text()})
        return parts

    def _response(self, call: Call, plan: Plan, ctx: dict[str, Any], parts: list[dict[str, Any]],
                  finish: str | None, upto: int | None) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            cand["finishReason"] = finish
        return {"candidates": [cand], "usageMetadata": self.usage(plan, upto),
                "modelVersion": call.model, "responseId": ctx["request_id"]}

    def render(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> dict[str, Any]:
        """A GenerateContentResponse."""
        return self._response(call, plan, ctx, self._parts(call, plan), FINISH[plan.finish], None)

    def frames(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> list[Frame]:
        """One full response per chunk with cumulative usage; SSE or a JSON array."""
        chunks: list[tuple[dict[str, Any], int]] = []
        done = 0
        pieces = plan.pieces
        i = 0
        while i < len(pieces):
            p = pieces[i]
            if p.kind == "reasoning":
                done += 1
                i += 1
                part = {"text": p.text, "thought": True}
                if not call.show_reasoning:
                    # Hidden thoughts still take decode time; they ride with the next visible chunk.
                    continue
                chunks.append(({"part": part, "upto": done}, 1))
            elif p.kind == "text":
                done += 1
                i += 1
                chunks.append(({"part": {"text": p.text}, "upto": done}, 1))
            else:  # a tool call arrives whole, in one chunk
                n = sum(1 for q in pieces[i:] if q.kind in ("tool_name", "tool_args"))
                done += n
                i += n
                part = {"functionCall": {"name": plan.tool_name, "args": json.loads(plan.tool_args)}}
                chunks.append(({"part": part, "upto": done}, n))
        if not chunks:
            chunks.append(({"part": {"text": ""}, "upto": done}, 0))
        hidden = plan.reasoning_tokens if not call.show_reasoning else 0
        out: list[Frame] = []
        for k, (c, tokens) in enumerate(chunks):
            last = k == len(chunks) - 1
            resp = self._response(call, plan, ctx, [c["part"]], FINISH[plan.finish] if last else None,
                                  None if last else c["upto"])
            if k == 0:
                tokens += hidden
            out.append(Frame(self._wrap(call, resp, k), tokens))
        if not call.sse:
            out.append(Frame(b"\n]"))
        return out

    def _wrap(self, call: Call, resp: dict[str, Any], k: int) -> bytes:
        if call.sse:
            return f"data: {_dump(resp)}\r\n\r\n".encode()
        return (("[" if k == 0 else "\n,\r\n") + _dump(resp)).encode()

    def inband_error(self, call: Call, ctx: dict[str, Any], sent: int) -> bytes:
        """A chunk whose first key is `error`, in the call's stream format."""
        err = _dump({"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                               "status": "UNAVAILABLE"}})
        return f"data: {err}\r\n\r\n".encode() if call.sse else f"\n,\r\n{err}".encode()

    def stream_tail(self, call: Call) -> bytes:
        """The JSON array's closing bracket."""
        return b"" if call.sse else b"\n]"

    def malformed(self, call: Call) -> bytes:
        """A chunk whose JSON is cut."""
        if call.sse:
            return b'data: {"candidates": [{"content": {"parts": [{"text": "\r\n\r\n'
        return b'\n,\r\n{"candidates": [{"content": }]}'  # a whole element, so a client sees it does not parse
