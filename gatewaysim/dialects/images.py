"""OpenAI image generation: POST /v1/images/generations, small real PNGs as b64_json."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from ..calls import BadRequest, Call, Plan
from ..textgen import count_tokens
from .base import Route, content_key, want_int
from .openai import OpenAIBase

SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536", "256x256", "512x512", "1792x1024", "1024x1792")
QUALITIES = ("auto", "low", "medium", "high", "standard", "hd")


class Images(OpenAIBase):
    """Image generations."""

    endpoint = "images"
    routes = (Route("POST", "/v1/images/generations"),)
    configurable = True
    model_kind = "image"

    def parse(self, body: Any, request: web.Request) -> Call:
        """Validate an image request; gpt-image models reject response_format as the real API does."""
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise BadRequest("'prompt' is required", param="prompt")
        model = body.get("model", "gpt-image-1")
        if not isinstance(model, str):
            raise BadRequest("'model' must be a string", param="model")
        if "response_format" in body and model.startswith("gpt-image"):
            raise BadRequest("Unknown parameter: 'response_format'.", param="response_format", code="unknown_parameter")
        n = want_int(body, "n", 1, 10) or 1
        size = body.get("size", "auto")
        if size not in SIZES:
            raise BadRequest(f"Invalid value: '{size}'. Supported values are: {', '.join(SIZES)}", param="size")
        quality = body.get("quality", "auto")
        if quality not in QUALITIES:
            raise BadRequest(f"Invalid value: '{quality}'.", param="quality")
        return Call(
            endpoint=self.endpoint,
            model=model,
            input_tokens=count_tokens(prompt),
            images_n=n,
            image_size=size,
            image_quality=quality,
            content_key=content_key(body, model),
        )

    def render(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> dict[str, Any]:
        """An ImagesResponse with b64_json images and usage."""
        out_tokens = 100 * len(plan.images)
        return {
            "created": ctx["created"],
            "data": [{"b64_json": base64.b64encode(img).decode()} for img in plan.images],
            "background": "opaque",
            "output_format": "png",
            "size": call.image_size,
            "quality": call.image_quality,
            "usage": {
                "total_tokens": plan.input_tokens + out_tokens,
                "input_tokens": plan.input_tokens,
                "output_tokens": out_tokens,
                "input_tokens_details": {"text_tokens": plan.input_tokens, "image_tokens": 0},
                "output_tokens_details": {"text_tokens": 0, "image_tokens": out_tokens},
            },
        }
