"""JSON for people and programs: the outer levels indented, deeper values on one line each."""

from __future__ import annotations

import json
from typing import Any

_ENCODE = json.JSONEncoder(default=str, separators=(", ", ": ")).encode  # one line, the C encoder


def dumps(obj: Any, depth: int = 3) -> str:
    """`obj` as JSON text: dicts and lists of dicts indented down to `depth` levels, anything deeper on one line."""
    out: list[str] = []
    _write(obj, depth, "", out)
    out.append("\n")
    return "".join(out)


def _write(obj: Any, depth: int, pad: str, out: list[str]) -> None:
    inner = pad + "  "
    if depth > 0 and isinstance(obj, dict) and obj:
        out.append("{")
        for i, (k, v) in enumerate(obj.items()):
            out.append(("\n" if i == 0 else ",\n") + inner + _ENCODE(str(k) if not isinstance(k, str) else k) + ": ")
            _write(v, depth - 1, inner, out)
        out.append("\n" + pad + "}")
    elif depth > 0 and isinstance(obj, list | tuple) and obj and any(isinstance(v, dict | list | tuple) for v in obj):
        out.append("[")
        for i, v in enumerate(obj):
            out.append(("\n" if i == 0 else ",\n") + inner)
            _write(v, depth - 1, inner, out)
        out.append("\n" + pad + "]")
    else:
        out.append(_ENCODE(obj))
