"""OpenAI Responses: POST /v1/responses, plain and SSE of typed events ending in `response.completed` (or
`response.incomplete` when `max_output_tokens` cut the answer: a normal end); no `[DONE]`; usage only in the
final event's `response.usage`."""

from __future__ import annotations

from typing import Any

from ..calls import CallSpec, WireRequest
from .base import Declaration, dumps, loads
from .base import Reader as BaseReader

PATH = "/v1/responses"
DECLARATION = Declaration("responses", "openai", "gpt-4o-mini", text=True)
#: The API refuses a smaller `max_output_tokens`, so a smaller cap is raised to it.
MIN_OUTPUT_TOKENS = 16
TOOL = {"type": "function", "name": "lookup", "description": "Look a fact up.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
#: The events that end a stream properly.
TERMINAL = ("response.completed", "response.incomplete")


#: A conversation may go on server-side: the next turn names the last response and sends only its new message.
CONTINUES_BY_ID = True


def messages(history: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """A conversation as Responses input items (the whole input resent each turn)."""
    return [{"role": role, "content": text} for role, text in history]


def build(spec: CallSpec) -> WireRequest:
    """The request: the prompt (or the conversation so far) as input, the cap as `max_output_tokens`."""
    body: dict[str, Any] = {"model": spec.model,
                            "input": spec.messages or [{"role": "user", "content": spec.prompt}]}
    if spec.previous_response_id:
        body["previous_response_id"] = spec.previous_response_id
    if spec.max_tokens is not None:
        body["max_output_tokens"] = max(MIN_OUTPUT_TOKENS, spec.max_tokens)
    if spec.ignore_eos:
        body["ignore_eos"] = True
    if spec.stream:
        body["stream"] = True
    if spec.tools:
        body["tools"] = [TOOL]
    if spec.reasoning:
        body["reasoning"] = {"effort": "low", "summary": "auto"}
    headers = {"Content-Type": "application/json"}
    if spec.stream:
        headers["Accept"] = "text/event-stream"
    return WireRequest("POST", PATH, headers, dumps(body))


def normalize(u: dict[str, Any]) -> dict[str, int]:
    """Responses usage to the record's: input counts cached tokens, output counts reasoning."""
    inp = u.get("input_tokens_details") or {}
    out = u.get("output_tokens_details") or {}
    return {"input": int(u.get("input_tokens") or 0), "output": int(u.get("output_tokens") or 0),
            "cached_input": int(inp.get("cached_tokens") or 0), "cache_write": 0,
            "reasoning": int(out.get("reasoning_tokens") or 0)}


class Reader(BaseReader):
    """Reads typed events: text, function-call argument and reasoning-summary deltas; the final response."""

    __slots__ = ("response_id",)

    def __init__(self, stream_format: str | None = None) -> None:
        super().__init__(stream_format)
        self.response_id: str | None = None  # for a conversation that goes on by previous_response_id

    def _final(self, response: dict[str, Any]) -> None:
        if isinstance(response.get("id"), str):
            self.response_id = response["id"]
        usage = response.get("usage")
        if usage:
            self.usage_raw = usage
            self.usage = normalize(usage)
        status = response.get("status")
        if status == "incomplete":
            self.finish = str((response.get("incomplete_details") or {}).get("reason") or "incomplete")
        elif status:
            self.finish = str(status)

    def event(self, name: str | None, data: str, t: float) -> None:
        """One SSE event; the type comes from the JSON."""
        if self.first_event is None:
            self.first_event = t
        if data.startswith("[DONE]"):
            return  # not the API's, but some gateways (LiteLLM) end every stream with it: the end is the final event
        obj = loads(data)
        kind = obj.get("type") or name
        if kind == "response.output_text.delta":
            delta = obj.get("delta") or ""
            if delta:
                self.content("text", t, len(delta))
                self.keep(delta)
        elif kind == "response.function_call_arguments.delta":
            self.content("tool", t)
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            self.content("reasoning", t, len(obj.get("delta") or ""))
        elif kind == "response.output_item.added":
            if (obj.get("item") or {}).get("type") == "function_call":
                self.content("tool", t)
        elif kind in TERMINAL:
            self._final(obj.get("response") or {})
            self.done = True
        elif kind in ("error", "response.failed"):
            err = obj.get("error") or (obj.get("response") or {}).get("error")
            self.error = str(err.get("type") or err.get("code") or "error")[:64] if isinstance(err, dict) else "error"

    def body(self, obj: Any) -> None:
        """A whole response object."""
        self._final(obj)
        for item in obj.get("output") or ():
            kind = item.get("type")
            if kind == "message":
                for part in item.get("content") or ():
                    text = part.get("text") or ""
                    if part.get("type") == "output_text" and text:
                        self.chars += len(text)
                        self.keep(text)
                        self.first_text = 0.0
            elif kind == "function_call":
                self.first_tool = 0.0
            elif kind == "reasoning" and item.get("summary"):
                self.first_reasoning = 0.0
        if self.first_text is not None or self.first_tool is not None or self.first_reasoning is not None:
            self.first_content = 0.0
