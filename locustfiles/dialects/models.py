"""Model listing: GET /v1/models."""

from __future__ import annotations

from typing import Any

from ..calls import CallSpec, WireRequest
from .base import Declaration
from .base import Reader as BaseReader

DECLARATION = Declaration("models", "openai", "-")


def build(spec: CallSpec) -> WireRequest:
    """The request."""
    return WireRequest("GET", "/v1/models", {})


class Reader(BaseReader):
    """Counts the models listed."""

    __slots__ = ()

    def body(self, obj: Any) -> None:
        """A list object."""
        data = obj.get("data") if isinstance(obj, dict) else None
        if data:
            self.first_content = self.first_text = 0.0
        self.embeddings = None
        self.chars = len(data or [])
