"""OpenAI embeddings: POST /v1/embeddings, float or base64 vectors."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..calls import BadRequest, Call, Plan
from ..textgen import count_tokens, embedding_b64
from .base import Route, content_key, want_int
from .openai import OpenAIBase


class Embeddings(OpenAIBase):
    """Embeddings."""

    endpoint = "embeddings"
    routes = (Route("POST", "/v1/embeddings"),)
    configurable = True
    model_kind = "embedding"

    def parse(self, body: Any, request: web.Request) -> Call:
        """Validate an embeddings request: input is a string, strings, token ids or lists of ids."""
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter", param="model")
        raw = body.get("input")
        items = raw if isinstance(raw, list) else [raw]
        if raw is None or raw == "" or not items:
            raise BadRequest("'input' must be a non-empty string or array", param="input")
        if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
            items = [items]  # one list of token ids
        inputs: list[str] = []
        counts: list[int] = []
        for i, item in enumerate(items):
            if isinstance(item, str) and item:
                inputs.append(item)
                counts.append(count_tokens(item))
            elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
                inputs.append(" ".join(map(str, item)))
                counts.append(len(item))
            else:
                raise BadRequest(f"'input[{i}]' must be a non-empty string or token array", param="input")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise BadRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        return Call(
            endpoint=self.endpoint,
            model=model,
            inputs=inputs,
            input_token_counts=counts,
            input_tokens=sum(counts),
            encoding_format=fmt,
            dimensions=want_int(body, "dimensions", 1, 8192),
            content_key=content_key(body, model),
        )

    def render(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> dict[str, Any]:
        """A list of embedding objects in input order."""
        data = [
            {"object": "embedding", "index": i,
             "embedding": embedding_b64(v) if call.encoding_format == "base64" else v}
            for i, v in enumerate(plan.vectors)
        ]
        return {"object": "list", "data": data, "model": call.model,
                "usage": {"prompt_tokens": plan.input_tokens, "total_tokens": plan.input_tokens}}
