"""What one logical call asks for, and the wire request a dialect builds from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class CallSpec:
    """One logical call, dialect-neutral."""

    endpoint: str
    model: str
    name: str
    stream: bool = False
    stream_format: str | None = None  # sse | json_array (Gemini streams)
    dry_run: bool = False
    prompt: str = ""
    prompt_tokens_target: int | None = None
    prompt_words: int = 0
    max_tokens: int | None = None
    ignore_eos: bool = False
    tools: bool = False
    reasoning: bool = False
    images_n: int = 1
    image_size: str = "1024x1024"
    image_quality: str = "low"
    inputs: list[str] = field(default_factory=list)
    dims: int | None = None
    pair_id: str | None = None
    session_id: str | None = None
    turn: int | None = None
    messages: list[dict[str, Any]] | None = None
    headers: dict[str, Any] | None = None  # the mix line's extra headers (name -> profile.Secret)
    previous_response_id: str | None = None  # a conversation going on server-side (dialects that can)


@dataclass(slots=True)
class WireRequest:
    """An HTTP request ready to send."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    base: str | None = None  # another origin than the target's (a per-dialect URL in the gateway profile)
