"""OpenAI embeddings: POST /v1/embeddings."""

from __future__ import annotations

from typing import Any

from ..calls import CallSpec, WireRequest
from .base import Declaration, dumps
from .base import Reader as BaseReader

DECLARATION = Declaration("embeddings", "openai", "text-embedding-3-small")


def build(spec: CallSpec) -> WireRequest:
    """The request: a list of inputs, float vectors."""
    body: dict[str, Any] = {"model": spec.model, "input": spec.inputs or [spec.prompt], "encoding_format": "float"}
    if spec.dims:
        body["dimensions"] = spec.dims
    return WireRequest("POST", "/v1/embeddings", {"Content-Type": "application/json"}, dumps(body))


class Reader(BaseReader):
    """Counts embeddings and their dimensions; usage is prompt tokens only."""

    __slots__ = ()

    def body(self, obj: Any) -> None:
        """A list of embedding objects."""
        data = obj.get("data") or []
        dims = len(data[0].get("embedding") or "") if data else 0
        self.embeddings = {"count": len(data), "dims": dims}
        if data:
            self.first_content = self.first_text = 0.0
        u = obj.get("usage") or {}
        self.usage_raw = u
        self.usage = {"input": int(u.get("prompt_tokens") or 0), "output": 0, "cached_input": 0, "cache_write": 0,
                      "reasoning": 0}
