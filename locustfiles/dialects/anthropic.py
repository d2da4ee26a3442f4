"""Anthropic Messages: POST /v1/messages, plain and SSE with `event:` lines."""

from __future__ import annotations

from typing import Any

from ..calls import CallSpec, WireRequest
from .base import Declaration, dumps, history_as_messages, loads
from .base import Reader as BaseReader

PATH = "/v1/messages"
VERSION = "2023-06-01"
DECLARATION = Declaration("messages", "anthropic", "claude-3-5-sonnet", text=True, auth_header="x-api-key",
                          auth_scheme=None)
messages = history_as_messages
TOOL = {"name": "lookup", "description": "Look a fact up.",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}


def build(spec: CallSpec) -> WireRequest:
    """The request for a Messages call (max_tokens is required by the API)."""
    body: dict[str, Any] = {"model": spec.model, "max_tokens": spec.max_tokens or 1024,
                            "messages": spec.messages or [{"role": "user", "content": spec.prompt}]}
    if spec.ignore_eos:
        body["ignore_eos"] = True
    if spec.stream:
        body["stream"] = True
    if spec.tools:
        body["tools"] = [TOOL]
    if spec.reasoning:  # the API wants 1024 <= budget_tokens < max_tokens
        body["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        body["max_tokens"] += 1024
    headers = {"anthropic-version": VERSION, "Content-Type": "application/json"}
    return WireRequest("POST", PATH, headers, dumps(body))


def normalize(u: dict[str, Any]) -> dict[str, int]:
    """Anthropic usage to the record's: input counts cache reads and writes too."""
    read = int(u.get("cache_read_input_tokens") or 0)
    write = int(u.get("cache_creation_input_tokens") or 0)
    return {"input": int(u.get("input_tokens") or 0) + read + write, "output": int(u.get("output_tokens") or 0),
            "cached_input": read, "cache_write": write, "reasoning": 0}


class Reader(BaseReader):
    """Reads message_start, content blocks, message_delta (cumulative usage: overwrite), message_stop."""

    __slots__ = ("_raw",)

    def __init__(self, stream_format: str | None = None) -> None:
        super().__init__(stream_format)
        self._raw: dict[str, Any] = {}

    def event(self, name: str | None, data: str, t: float) -> None:
        """One SSE event; the type comes from the JSON."""
        if self.first_event is None:
            self.first_event = t
        obj = loads(data)
        kind = obj.get("type") or name
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                self.content("text", t, len(delta.get("text") or ""))
                self.keep(delta.get("text") or "")
            elif dtype == "thinking_delta":
                self.content("reasoning", t, len(delta.get("thinking") or ""))
            elif dtype == "input_json_delta":
                self.content("tool", t)
        elif kind == "content_block_start":
            if (obj.get("content_block") or {}).get("type") == "tool_use":
                self.content("tool", t)
        elif kind == "message_start":
            usage = (obj.get("message") or {}).get("usage")
            if usage:
                self._raw = dict(usage)
                self.usage_raw = self._raw
                self.usage = normalize(self._raw)
        elif kind == "message_delta":
            usage = obj.get("usage")
            if usage:
                self._raw.update({k: v for k, v in usage.items() if v is not None})
                self.usage_raw = self._raw
                self.usage = normalize(self._raw)
            self.finish = (obj.get("delta") or {}).get("stop_reason") or self.finish
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            err = obj.get("error")
            self.error = str(err.get("type") or "error")[:64] if isinstance(err, dict) else "error"

    def body(self, obj: Any) -> None:
        """A message object."""
        if obj.get("usage"):
            self.usage_raw = obj["usage"]
            self.usage = normalize(obj["usage"])
        for block in obj.get("content") or ():
            btype = block.get("type")
            if btype == "text" and block.get("text"):
                self.chars += len(block["text"])
                self.keep(block["text"])
                self.first_text = 0.0
            elif btype == "tool_use":
                self.first_tool = 0.0
            elif btype == "thinking":
                self.first_reasoning = 0.0
        if self.first_text is not None or self.first_tool is not None or self.first_reasoning is not None:
            self.first_content = 0.0
        self.finish = obj.get("stop_reason")
