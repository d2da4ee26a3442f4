"""OpenAI chat completions: POST /v1/chat/completions, plain and SSE (`data: [DONE]`)."""

from __future__ import annotations

import re
from typing import Any

from ..calls import CallSpec, WireRequest
from .base import Declaration, dumps, history_as_messages, loads
from .base import Reader as BaseReader

PATH = "/v1/chat/completions"
DECLARATION = Declaration("chat", "openai", "gpt-4o-mini", text=True, family_title="OpenAI")
messages = history_as_messages
TOOL = {"type": "function", "function": {"name": "lookup", "description": "Look a fact up.",
                                         "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                                                        "required": ["query"]}}}


def build(spec: CallSpec) -> WireRequest:
    """The request for a chat call."""
    body: dict[str, Any] = {"model": spec.model,
                            "messages": spec.messages or [{"role": "user", "content": spec.prompt}]}
    if spec.max_tokens is not None:
        body["max_tokens"] = spec.max_tokens
    if spec.ignore_eos:
        body["ignore_eos"] = True
    if spec.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if spec.tools:
        body["tools"] = [TOOL]
    if spec.reasoning:
        body["reasoning_effort"] = "low"
    headers = {"Content-Type": "application/json"}
    if spec.stream:
        headers["Accept"] = "text/event-stream"
    return WireRequest("POST", PATH, headers, dumps(body))


def normalize(u: dict[str, Any]) -> dict[str, int]:
    """OpenAI usage to the record's normalised usage."""
    pd = u.get("prompt_tokens_details") or {}
    cd = u.get("completion_tokens_details") or {}
    return {"input": int(u.get("prompt_tokens") or 0), "output": int(u.get("completion_tokens") or 0),
            "cached_input": int(pd.get("cached_tokens") or 0), "cache_write": 0,
            "reasoning": int(cd.get("reasoning_tokens") or 0)}


#: Where a text chunk's content string starts, and a JSON string token: its text when it has no escape (group 1),
#: else the whole token (group 2, its escapes checked when it is decoded).
_CONTENT = '"delta":{"content":'
_TOKEN = re.compile(r'"([^"\\\x00-\x1f]*)"|("(?:[^"\\\x00-\x1f]|\\.)*")')


class Reader(BaseReader):
    """Reads chat chunks: role chunk, deltas, finish chunk, usage chunk, [DONE].

    A stream's text chunks differ only in their content string, so once one parsed (strictly) as nothing but text,
    a later chunk that is the same text around a different, strictly valid JSON string is that string's text
    chunk: it is read without parsing the rest again. Anything else is parsed whole.
    """

    __slots__ = ("_template",)

    def __init__(self, stream_format: str | None = None) -> None:
        super().__init__(stream_format)
        self._template: tuple[str, str] | None = None  # (text before, text after) the content of a text chunk

    def _content_at(self, data: str) -> tuple[int, int]:
        """The span of the content string token of a chunk shaped like a text chunk, or (-1, -1)."""
        i = data.find(_CONTENT)
        if i < 0:
            return -1, -1
        i += len(_CONTENT)
        m = _TOKEN.match(data, i)
        return (i, m.end()) if m else (-1, -1)

    def events(self, items: list[tuple[str | None, str]], t: float) -> None:
        """Events that arrived together: the text chunks that match the stream's template are counted here."""
        chunks, parts, token = self.chunks, self.text_parts, _TOKEN.fullmatch
        before, after = self._template or ("", "")
        for _name, data in items:  # nearly every event of a stream: kept to C calls where it can be
            if before and data.startswith(before) and data.endswith(after):
                m = token(data, len(before), len(data) - len(after))
                if m is not None:
                    text = m.group(1)
                    if text is None:
                        try:
                            text = loads(m.group(2))
                        except ValueError:
                            text = None  # an escape strict JSON refuses: the whole chunk is parsed, and refused
                    if text:  # what _text does for a later text chunk
                        chunks.append(t)
                        self.chars += len(text)
                        if parts is not None:
                            parts.append(text)
                        continue
            self._whole(data, t)
            if not before and self._template is not None:
                before, after = self._template

    def event(self, name: str | None, data: str, t: float) -> None:
        """One `data:` line."""
        self.events([(name, data)], t)

    def _whole(self, data: str, t: float) -> None:
        """A `data:` event parsed whole: a text chunk before the stream's template is learnt (the first one sets
        it), and everything that is not a text chunk of the template (role, finish, usage, errors, [DONE])."""
        if self.first_event is None:
            self.first_event = t
        if data.startswith("[DONE]"):
            self.done = True
            return
        template = self._template
        obj = loads(data)
        if obj.get("error"):
            err = obj["error"]
            # the error's type or code, never its message (it may quote the prompt or the key's owner)
            self.error = str(err.get("type") or err.get("code") or "error")[:64] if isinstance(err, dict) else "error"
            return
        usage = obj.get("usage")
        if usage:
            self.usage_raw = usage
            self.usage = normalize(usage)
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text and isinstance(text, str):
                self._text(text, t)
                if len(delta) == 1:  # nothing but text in it
                    if choice.get("finish_reason"):
                        self.finish = choice["finish_reason"]
                    elif template is None and len(obj["choices"]) == 1 and not usage:
                        i, j = self._content_at(data)
                        # the content string is the one read, and no second "content" key after it could be
                        if i >= 0 and loads(data[i:j]) == text and '"content"' not in data[j:]:
                            self._template = (data[:i], data[j:])
                    continue
            elif text:
                self.content("text", t, len(text))
                self.keep(text)
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                self.content("reasoning", t, len(reasoning))
            if delta.get("tool_calls"):
                self.content("tool", t)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def _text(self, text: str, t: float) -> None:
        """A text chunk (Reader.content and Reader.keep for text, written out: the most frequent event)."""
        if self.first_text is None:
            self.first_text = t
            if self.first_content is None:
                self.first_content = t
        self.chunks.append(t)
        self.chars += len(text)
        if self.text_parts is not None:
            self.text_parts.append(text)

    def body(self, obj: Any) -> None:
        """A chat.completion object."""
        if obj.get("usage"):
            self.usage_raw = obj["usage"]
            self.usage = normalize(obj["usage"])
        for choice in obj.get("choices") or ():
            msg = choice.get("message") or {}
            if msg.get("content"):
                self.chars += len(msg["content"])
                self.keep(msg["content"])
                self.first_content = self.first_text = 0.0
            if msg.get("tool_calls"):
                self.first_content = 0.0 if self.first_content is None else self.first_content
                self.first_tool = 0.0
            self.finish = choice.get("finish_reason")
