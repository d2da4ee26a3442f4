"""One module per API dialect: its declaration, how to build its request and read its answer.

A new dialect is one module here (with `DECLARATION`, `build(spec)`, `Reader`, and for text dialects
`messages(history)`) and one line in `_MODULES`; everything else takes the list from the declarations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import anthropic, embeddings, gemini, images, models, openai_chat, responses

if TYPE_CHECKING:
    from types import ModuleType

_MODULES = (openai_chat, responses, anthropic, gemini, embeddings, images, models)

#: endpoint name -> dialect module
DIALECTS: dict[str, ModuleType] = {m.DECLARATION.endpoint: m for m in _MODULES}
#: endpoint name -> the API family (Locust user class) it belongs to
FAMILIES: dict[str, str] = {e: m.DECLARATION.family for e, m in DIALECTS.items()}
#: the API families, in registry order (one Locust user class each)
FAMILY_NAMES: tuple[str, ...] = tuple(dict.fromkeys(FAMILIES.values()))
#: endpoints that generate text: streams, TTFT, conversations, trace replay
TEXT_ENDPOINTS: tuple[str, ...] = tuple(e for e, m in DIALECTS.items() if m.DECLARATION.text)
#: endpoint name -> the model a mix line without `models` calls
DEFAULT_MODELS: dict[str, str] = {e: m.DECLARATION.default_model for e, m in DIALECTS.items()}
