"""One module per API dialect: how to build its request and read its answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import anthropic, embeddings, gemini, images, models, openai_chat

if TYPE_CHECKING:
    from types import ModuleType

#: endpoint name -> dialect module (each has `build(spec)` and `Reader`)
DIALECTS: dict[str, ModuleType] = {
    "chat": openai_chat,
    "messages": anthropic,
    "gemini": gemini,
    "embeddings": embeddings,
    "images": images,
    "models": models,
}

#: endpoint name -> the API family (Locust user class) it belongs to
FAMILIES = {"chat": "openai", "embeddings": "openai", "images": "openai", "models": "openai",
            "messages": "anthropic", "gemini": "gemini"}
