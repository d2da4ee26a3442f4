"""Model listing: GET /v1/models in the OpenAI shape, the Anthropic shape, or Gemini's `models` list."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..exchange import Exchange, send_bytes
from .anthropic import AnthropicMessages
from .base import Route
from .gemini import Gemini
from .openai import OpenAIBase

if TYPE_CHECKING:
    from ..state import Gateway

CREATED = 1_700_000_000
_GEMINI = Gemini()
_ANTHROPIC = AnthropicMessages()


class ModelList(OpenAIBase):
    """Lists the configured models; the shape follows the asking client's dialect."""

    endpoint = "models"
    routes = (Route("GET", "/v1/models"), Route("GET", "/v1beta/models"))
    configurable = True
    model_kind = None

    async def handle(self, gw: Gateway, request: web.Request) -> web.StreamResponse:
        """GET /v1/models and /v1beta/models: auth in the asking client's shape, then the listing."""
        ctx = request["ctx"]
        ctx["entry"].update(endpoint=self.endpoint)
        exchange = Exchange(gw, _GEMINI if self.shape(request) == "gemini" else self, request)
        key = self.api_key(request)
        if not key:
            return await exchange.error(401 if exchange.dialect is self else 403, "auth_missing",
                                        "You didn't provide an API key.")
        if not gw.limits.valid(key):
            return await exchange.error(401 if exchange.dialect is self else 400, "auth_invalid",
                                        "Incorrect API key provided.")
        tenant = gw.limits.tenant_of(key)  # a listing meets no limits, but the truth names its tenant
        ctx["entry"]["tenant"] = None if tenant is None else tenant.label
        body = json.dumps(self.listing(request, gw.config.models)).encode()
        ctx["entry"]["outcome"] = "ok"
        return await send_bytes(request, ctx, 200, body)

    def shape(self, request: web.Request) -> str:
        """'gemini', 'anthropic' or 'openai', from the path and the headers sent."""
        if request.path.startswith("/v1beta/") or request.query.get("key") or "x-goog-api-key" in request.headers:
            return "gemini"
        if "anthropic-version" in request.headers:
            return "anthropic"
        return "openai"

    def api_key(self, request: web.Request) -> str | None:
        """Any of the three dialects' credentials (and the OpenAI routes' `Ocp-Apim-Subscription-Key`)."""
        return (_GEMINI.api_key(request) or _ANTHROPIC.api_key(request)
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
