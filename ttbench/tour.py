"""`ttbench tour`: start the simulator, call every endpoint once, print what it served."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from .simproc import SimProcess

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}
MESSAGES = {"model": "claude-3-5-sonnet", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}
GEMINI = {"contents": [{"parts": [{"text": "Hello"}]}], "generationConfig": {"maxOutputTokens": 16}}


def _calls(key: str) -> list[tuple[str, str, str, dict[str, str], Any]]:
    bearer = {"Authorization": f"Bearer {key}"}
    anth = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    goog = {"x-goog-api-key": key}
    stream_chat = dict(CHAT, stream=True, stream_options={"include_usage": True})
    return [
        ("chat", "POST", "/v1/chat/completions", bearer, CHAT),
        ("chat stream", "POST", "/v1/chat/completions", bearer, stream_chat),
        ("messages", "POST", "/v1/messages", anth, MESSAGES),
        ("messages stream", "POST", "/v1/messages", anth, dict(MESSAGES, stream=True)),
        ("gemini", "POST", "/v1beta/models/gemini-1.5-pro:generateContent", goog, GEMINI),
        ("gemini stream sse", "POST", "/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse", goog, GEMINI),
        ("gemini stream array", "POST", "/v1beta/models/gemini-1.5-pro:streamGenerateContent", goog, GEMINI),
        ("embeddings", "POST", "/v1/embeddings", bearer, {"model": "text-embedding-3-small", "input": "some text"}),
        ("images", "POST", "/v1/images/generations", bearer,
         {"model": "gpt-image-1", "prompt": "a city at night", "n": 1, "size": "1024x1024"}),
        ("models", "GET", "/v1/models", bearer, None),
        ("chat dry run", "POST", "/v1/chat/completions", {**bearer, "X-TT-Dry-Run": "true"}, CHAT),
    ]


def run_tour(config: str | None = None, seed: int = 0, out: Callable[[str], None] = print) -> int:
    """Drive every endpoint once against a fresh simulator; 0 when every call succeeded."""
    failures = 0
    with SimProcess(config=config, seed=seed) as sim:
        out(f"gatewaysim listening on {sim.url}")
        with httpx.Client(base_url=sim.url, timeout=30) as client:
            for label, method, path, headers, body in _calls(sim.api_key):
                resp = client.request(method, path, headers=headers, json=body)
                rid = resp.headers.get("X-TT-Request-ID", "-")
                ok = resp.status_code == 200
                failures += not ok
                out(f"  {label:<20} {resp.status_code}  {len(resp.content):>6} B  {rid}")
        stats = sim.admin("/_sim/stats").json()
        charges = [r for r in sim.ledger() if r["type"] == "charge"]
        out(f"served: {json.dumps(stats['served'], sort_keys=True)}")
        out(f"ledger: {len(charges)} charges")
    return 0 if failures == 0 else 1
