"""Small HTTP helpers shared by the simulator tests."""

from __future__ import annotations

from typing import Any

import httpx

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 12}
MESSAGES = {"model": "claude-3-5-sonnet", "max_tokens": 12, "messages": [{"role": "user", "content": "Hello"}]}
GEMINI = {"contents": [{"parts": [{"text": "Hello"}]}], "generationConfig": {"maxOutputTokens": 12}}
STREAM_CHAT = dict(CHAT, stream=True, stream_options={"include_usage": True})


def auth(sim: Any, dialect: str = "openai") -> dict[str, str]:
    """The dialect's auth header for the simulator's key."""
    if dialect == "anthropic":
        return {"x-api-key": sim.api_key}
    if dialect == "gemini":
        return {"x-goog-api-key": sim.api_key}
    return {"Authorization": f"Bearer {sim.api_key}"}


def chat(sim: Any, body: dict[str, Any] | None = None, attempt: str | None = None, key: str | None = None,
         timeout: float = 30, **headers: str) -> httpx.Response:
    """POST a chat completion (non-streamed unless the body says so), reading the whole body."""
    h = {**auth(sim), **headers}
    if attempt:
        h["X-Client-Attempt-ID"] = attempt
    if key:
        h["Idempotency-Key"] = key
    return httpx.post(sim.url + "/v1/chat/completions", json=body or CHAT, headers=h, timeout=timeout)


def charges(sim: Any) -> list[dict[str, Any]]:
    """The ledger's charge rows."""
    return [r for r in sim.ledger() if r["type"] == "charge"]


def truth_by_id(sim: Any) -> dict[str, dict[str, Any]]:
    """The truth entries by request id."""
    return {e["request_id"]: e for e in sim.truth()}


def sse_events(text: str) -> list[tuple[str | None, str | None]]:
    """(event line, data line) of every SSE event in a body."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        event = data = None
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((event, data))
    return out
