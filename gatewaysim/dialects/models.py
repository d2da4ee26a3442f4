"""Model listing: GET /v1/models in the OpenAI shape, the Anthropic shape, or Gemini's `models` list."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .anthropic import AnthropicMessages
from .gemini import Gemini
from .openai import OpenAIBase

CREATED = 1_700_000_000


class ModelList(OpenAIBase):
    """Lists the configured models; the shape follows the asking client's dialect."""

    endpoint = "models"

    def shape(self, request: web.Request) -> str:
        """'gemini', 'anthropic' or 'openai', from the path and the headers sent."""
        if request.path.startswith("/v1beta/") or request.query.get("key") or "x-goog-api-key" in request.headers:
            return "gemini"
        if "anthropic-version" in request.headers:
            return "anthropic"
        return "openai"

    def api_key(self, request: web.Request) -> str | None:
        """Any of the three dialects' credentials (and the OpenAI routes' `Ocp-Apim-Subscription-Key`)."""
        return (Gemini().api_key(request) or AnthropicMessages().api_key(request)
                or request.headers.get("Ocp-Apim-Subscription-Key"))

    def listing(self, request: web.Request, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The model list in the shape the client expects."""
        shape = self.shape(request)
        names = list(models)
        if shape == "gemini":
            return {"models": [{"name": f"models/{m}", "displayName": m,
                                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"]}
                               for m in names if models[m]["kind"] == "chat"]}
        if shape == "anthropic":
            data = [{"type": "model", "id": m, "display_name": m, "created_at": "2023-11-14T22:13:20Z"}
                    for m in names]
            return {"data": data, "has_more": False, "first_id": names[0], "last_id": names[-1]}
        return {"object": "list",
                "data": [{"id": m, "object": "model", "created": CREATED, "owned_by": models[m]["owned_by"]}
                         for m in names]}
