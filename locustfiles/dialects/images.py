"""OpenAI image generation: POST /v1/images/generations."""

from __future__ import annotations

from typing import Any

from ..calls import CallSpec, WireRequest
from .base import Declaration, dumps
from .base import Reader as BaseReader

DECLARATION = Declaration("images", "openai", "gpt-image-1")


def build(spec: CallSpec) -> WireRequest:
    """The request: n images of a size and quality."""
    body = {"model": spec.model, "prompt": spec.prompt, "n": spec.images_n, "size": spec.image_size,
            "quality": spec.image_quality}
    return WireRequest("POST", "/v1/images/generations", {"Content-Type": "application/json"}, dumps(body))


class Reader(BaseReader):
    """Counts the images returned (billing is per image returned)."""

    __slots__ = ()

    def body(self, obj: Any) -> None:
        """An ImagesResponse."""
        data = obj.get("data") or []
        self.images_returned = sum(1 for d in data if d.get("b64_json") or d.get("url"))
        if self.images_returned:
            self.first_content = self.first_text = 0.0
        u = obj.get("usage") or {}
        self.usage_raw = u or None
        self.usage = {"input": int(u.get("input_tokens") or 0), "output": int(u.get("output_tokens") or 0),
                      "cached_input": 0, "cache_write": 0, "reasoning": 0}
