"""Gemini generateContent / streamGenerateContent (SSE with alt=sse, or the streamed JSON array)."""

from __future__ import annotations

from typing import Any

from ..calls import CallSpec, WireRequest
from .base import Declaration, dumps, loads
from .base import Reader as BaseReader

DECLARATION = Declaration("gemini", "gemini", "gemini-1.5-pro", text=True, auth_header="x-goog-api-key",
                          auth_scheme=None)
TOOL = {"functionDeclarations": [{"name": "lookup", "description": "Look a fact up.",
                                  "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}]}


def build(spec: CallSpec) -> WireRequest:
    """The request (the gateway profile puts the key in `x-goog-api-key`, or in `?key=` when it says so)."""
    contents = spec.messages or [{"role": "user", "parts": [{"text": spec.prompt}]}]
    body: dict[str, Any] = {"contents": contents}
    gen: dict[str, Any] = {}
    if spec.max_tokens is not None:
        gen["maxOutputTokens"] = spec.max_tokens
    if spec.ignore_eos:
        gen["ignoreEos"] = True
    if spec.reasoning:
        gen["thinkingConfig"] = {"includeThoughts": True, "thinkingBudget": 1024}
    if gen:
        body["generationConfig"] = gen
    if spec.tools:
        body["tools"] = [TOOL]
    if spec.stream:
        path = f"/v1beta/models/{spec.model}:streamGenerateContent"
        if spec.stream_format != "json_array":
            path += "?alt=sse"
    else:
        path = f"/v1beta/models/{spec.model}:generateContent"
    headers = {"Content-Type": "application/json"}
    return WireRequest("POST", path, headers, dumps(body))


def messages(history: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """A conversation as Gemini contents (the model's turns have role `model`)."""
    return [{"role": "model" if role == "assistant" else "user", "parts": [{"text": text}]} for role, text in history]


def normalize(u: dict[str, Any]) -> dict[str, int]:
    """usageMetadata to the record's: output counts thoughts too."""
    thoughts = int(u.get("thoughtsTokenCount") or 0)
    return {"input": int(u.get("promptTokenCount") or 0),
            "output": int(u.get("candidatesTokenCount") or 0) + thoughts,
            "cached_input": int(u.get("cachedContentTokenCount") or 0), "cache_write": 0, "reasoning": thoughts}


class Reader(BaseReader):
    """Reads GenerateContentResponse chunks; usageMetadata is cumulative (keep the last)."""

    framings = ("sse", "json_array")
    __slots__ = ()

    def _parts(self, obj: dict[str, Any], t: float | None) -> None:
        for cand in obj.get("candidates") or ():
            for part in (cand.get("content") or {}).get("parts") or ():
                if "functionCall" in part:
                    kind = "tool"
                elif part.get("text"):
                    kind = "reasoning" if part.get("thought") else "text"
                else:
                    continue
                if kind == "text":
                    self.keep(part.get("text") or "")
                if t is None:
                    setattr(self, {"tool": "first_tool", "text": "first_text", "reasoning": "first_reasoning"}[kind], 0.0)
                    self.first_content = 0.0
                    self.chars += len(part.get("text") or "")
                else:
                    self.content(kind, t, len(part.get("text") or ""))
            if cand.get("finishReason"):
                self.finish = cand["finishReason"]
        if obj.get("usageMetadata"):
            self.usage_raw = obj["usageMetadata"]
            self.usage = normalize(self.usage_raw)

    def event(self, name: str | None, data: str, t: float) -> None:
        """One chunk (an SSE data line or an array element)."""
        if self.first_event is None:
            self.first_event = t
        obj = loads(data)
        if "error" in obj:
            err = obj["error"] if isinstance(obj["error"], dict) else {}
            self.error = str(err.get("status") or err.get("code") or "error")[:64]
            return
        self._parts(obj, t)
        if self.finish is not None and self.stream_format == "sse":
            self.done = True

    def body(self, obj: Any) -> None:
        """A whole GenerateContentResponse."""
        if isinstance(obj, list):  # an error wrapped in a one-element list
            obj = obj[0] if obj else {}
        self._parts(obj, None)
