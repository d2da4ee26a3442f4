"""What every reader of a run's files shares: the one-line input error, what loading noticed, small file readers.

The readers themselves: attempt records in `records.py`, a billing ledger in `ledger.py`, chunk times in
`chunks.py`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad analysis input: one line naming the file, column or value."""


@dataclass
class LoadReport:
    """What loading noticed: skipped lines and why."""

    torn_lines: int = 0
    bad_lines: int = 0
    warnings: list[str] = field(default_factory=list)


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """A JSON Lines file (empty list if absent)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def warn(message: str) -> None:
    """A warning on stderr."""
    print(f"ttbench: warning: {message}", file=sys.stderr)
