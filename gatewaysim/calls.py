"""What a dialect parses a request into, and what the model produces for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class BadRequest(Exception):
    """A request the dialect rejects with 400 (or the given status) in its own error shape."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


@dataclass
class Call:
    """A dialect-neutral view of one request."""

    endpoint: str  # the dialect's endpoint name: chat | messages | gemini | embeddings | images | responses
    model: str
    kind: str = "chat"  # the served model's kind (chat | embedding | image), set once the model is found
    stream: bool = False
    input_tokens: int = 0
    max_tokens: int | None = None
    ignore_eos: bool = False
    tools: list[str] = field(default_factory=list)
    force_tool: str | None = None  # tool_choice forcing a call (to this tool)
    reasoning: bool = False
    reasoning_budget: int | None = None
    show_reasoning: bool = True
    include_usage: bool = False
    sse: bool = True  # Gemini: alt=sse (True) or the streamed JSON array (False)
    inputs: list[str] = field(default_factory=list)  # embeddings
    input_token_counts: list[int] = field(default_factory=list)
    encoding_format: str = "float"
    dimensions: int | None = None
    images_n: int = 1
    image_size: str = "auto"
    image_quality: str = "auto"
    content_key: str = ""  # seeds the output: same request, same answer
    segments: list[tuple[str, int]] = field(default_factory=list)  # (message, tokens): what the prefix cache sees
    extra: dict[str, Any] = field(default_factory=dict)  # what one dialect keeps for its own rendering


@dataclass
class Piece:
    """One output token: text, reasoning, or a fragment of a tool call."""

    kind: str  # text | reasoning | tool_name | tool_args
    text: str


@dataclass
class Plan:
    """Everything the model produced for one call, before any rendering."""

    pieces: list[Piece] = field(default_factory=list)
    finish: str = "stop"  # stop | length | tool
    tool_name: str | None = None
    tool_call_id: str | None = None
    tool_args: str = ""
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    ttft_s: float = 0.0
    vectors: list[list[float]] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    work_s: float = 0.0  # embeddings and images: time holding the slot

    @property
    def output_tokens(self) -> int:
        """All output tokens, reasoning included."""
        return len(self.pieces)

    @property
    def reasoning_tokens(self) -> int:
        """Reasoning tokens among the output."""
        return sum(1 for p in self.pieces if p.kind == "reasoning")

    def text(self, kind: str = "text") -> str:
        """Concatenated output of one kind."""
        return "".join(p.text for p in self.pieces if p.kind == kind)

    def usage_dict(self) -> dict[str, Any]:
        """Normalised usage for the truth log."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


@dataclass
class Frame:
    """One write of a streamed response, carrying `tokens` output tokens."""

    data: bytes
    tokens: int = 0
