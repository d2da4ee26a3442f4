"""One module per API dialect; each parses requests and renders answers in its own wire format.

The registry: the application serves every route these dialects declare, and the config's `routes:` may
add exact paths for each `configurable` one, under its endpoint name. A new API is its module plus one line
here. The first dialect's error shape is the one unknown URLs get unless another dialect `owns_path` them.
"""

from __future__ import annotations

from .anthropic import AnthropicMessages
from .azure import AzureChat, AzureEmbeddings, AzureImages
from .base import Dialect, Route
from .embeddings import Embeddings
from .gemini import Gemini
from .images import Images
from .models import ModelList
from .openai import OpenAIChat
from .responses import Responses

DIALECTS: tuple[Dialect, ...] = (
    OpenAIChat(),
    AnthropicMessages(),
    Gemini(),
    Embeddings(),
    Images(),
    ModelList(),
    AzureChat(),
    AzureEmbeddings(),
    AzureImages(),
    Responses(),
)


def configurable() -> dict[str, Dialect]:
    """The dialects whose endpoint name the config's `routes:` may list, by that name."""
    return {d.endpoint: d for d in DIALECTS if d.configurable}


def builtin_routes() -> list[Route]:
    """Every route the registered dialects declare."""
    return [route for d in DIALECTS for route in d.routes]


__all__ = ["DIALECTS", "Dialect", "Route", "builtin_routes", "configurable"]
