"""Durations as scenarios write them: `30s`, `2m`, `1h`, `500ms`, or a number of seconds."""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any, positive: bool = True) -> float:
    """Seconds; ValueError (saying what was expected) for anything else, or for a non-positive duration."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ValueError(f"expected a duration like 30s, 2m or 1h, got {value!r}")
    if seconds != seconds or seconds < 0 or (positive and seconds <= 0):
        raise ValueError(f"must be {'positive' if positive else 'non-negative'}, got {value!r}")
    return seconds
