"""What every dialect reader records while a response arrives."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orjson import loads as _orjson_loads

from ttformats.jsonline import compact_bytes

USAGE_KEYS = ("input", "output", "cached_input", "cache_write", "reasoning")


@dataclass(frozen=True, slots=True)
class Declaration:
    """What a dialect is, for everything that takes the list of dialects from the dialects themselves: the
    registry, the user classes (one per family), scenario validation, trace replay, conversations, live figures
    and the records the analysis reads."""

    endpoint: str              # the mix's `endpoint:`, the records' `endpoint`
    family: str                # the API family: one Locust user class per family, and its default auth
    default_model: str
    text: bool = False         # generates text token by token (streams, TTFT, conversations, trace replay)
    auth_header: str = "Authorization"   # the family's standard credential header ...
    auth_scheme: str | None = "Bearer"   # ... and its scheme
    family_title: str = ""     # the family's user class is `<family_title>User` (default: the family capitalised)


def history_as_messages(history: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """A conversation as role/content messages (OpenAI chat, Anthropic Messages)."""
    return [{"role": role, "content": text} for role, text in history]


#: A request body's bytes: compact JSON, its text as UTF-8 (not \u escapes).
dumps = compact_bytes


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf (1e400) or nan
        raise ValueError(f"{text[:24]} is not a finite number")
    return value


#: Strict JSON: NaN, Infinity and numbers that overflow a double are refused (ValueError, so `protocol`),
#: because whatever a reader keeps (usage_raw, a dry run's estimate) must be written back as valid JSON:
#: Python's json would read them and write them out again as NaN/Infinity, which no strict reader accepts.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def loads(text: str) -> Any:
    """Strict JSON (see _DECODER): orjson, which refuses all that too, on the hot path; what orjson refuses is
    decided by _DECODER, so both accept and refuse the same texts (lone surrogates included); an integer past 64
    bits reads as a float here."""
    try:
        return _orjson_loads(text)
    except ValueError:  # orjson.JSONDecodeError is one
        return _DECODER.decode(text)


class Reader:
    """Accumulates one attempt's answer: content anchors, chunk times, usage, finish, in-band errors.

    Times are perf_counter seconds; the transport turns them into offsets.
    """

    #: The stream framings the dialect has (a gateway may answer in either).
    framings: tuple[str, ...] = ("sse",)
    __slots__ = ("first_event", "first_content", "first_text", "first_tool", "first_reasoning", "chunks",
                 "usage", "usage_raw", "finish", "done", "error", "chars", "estimate", "images_returned",
                 "embeddings", "protocol", "stream_format", "text_parts")

    def __init__(self, stream_format: str | None = None) -> None:
        self.first_event: float | None = None
        self.first_content: float | None = None
        self.first_text: float | None = None
        self.first_tool: float | None = None
        self.first_reasoning: float | None = None
        self.chunks: list[float] = []
        self.usage: dict[str, int] | None = None
        self.usage_raw: dict[str, Any] | None = None
        self.finish: str | None = None
        self.done = False
        self.error: str | None = None
        self.chars = 0
        self.estimate: dict[str, Any] | None = None
        self.images_returned: int | None = None
        self.embeddings: dict[str, int] | None = None
        self.protocol: str | None = None
        self.stream_format = stream_format
        self.text_parts: list[str] | None = None  # set to [] to keep the answer's text (conversations)

    def content(self, kind: str, t: float, chars: int = 0) -> None:
        """Note one content event: kind is text, tool or reasoning."""
        if self.first_content is None:
            self.first_content = t
        if kind == "text":
            if self.first_text is None:
                self.first_text = t
        elif kind == "tool":
            if self.first_tool is None:
                self.first_tool = t
        elif self.first_reasoning is None:
            self.first_reasoning = t
        self.chunks.append(t)
        self.chars += chars

    def keep(self, text: str) -> None:
        """Keep answer text when asked to (a conversation's next turn needs it)."""
        if self.text_parts is not None and text:
            self.text_parts.append(text)

    @property
    def text(self) -> str | None:
        """The answer's text, when it was kept."""
        return None if self.text_parts is None else "".join(self.text_parts)

    def event(self, name: str | None, data: str, t: float) -> None:
        """One stream event (SSE data, or a JSON-array element)."""
        raise NotImplementedError

    def events(self, items: list[tuple[str | None, str]], t: float) -> None:
        """Stream events that arrived together: (event name or None, data) each."""
        for name, data in items:
            self.event(name, data, t)

    def body(self, obj: Any) -> None:
        """A whole non-streamed JSON answer."""
        raise NotImplementedError

    @property
    def has_content(self) -> bool:
        """Whether any text, tool call or reasoning arrived."""
        return self.first_content is not None

    def stream_complete(self) -> bool:
        """Whether the stream ended properly (its dialect's terminator was seen)."""
        return self.done
