"""Compact JSON text, the one way every room writes JSON lines and wire payloads on a hot path."""

from __future__ import annotations

import json
from typing import Any

from orjson import dumps as _orjson_dumps


def compact(obj: Any) -> str:
    """Compact JSON text of obj (no spaces; non-ASCII as UTF-8 where orjson writes it)."""
    try:
        return _orjson_dumps(obj).decode()
    except TypeError:  # what orjson will not write (a lone surrogate, an integer past 64 bits, a non-str key)
        return json.dumps(obj, separators=(",", ":"))


def json_line(obj: Any) -> str:
    """One compact JSON line, newline included."""
    return compact(obj) + "\n"


def compact_bytes(obj: Any) -> bytes:
    """compact(obj) as UTF-8 bytes."""
    try:
        return _orjson_dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":")).encode()
