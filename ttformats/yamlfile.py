"""Reading a YAML file with one-line errors naming the file (and the line when the YAML is broken)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """A file that is not readable YAML: the message is one line naming the file."""


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed document; unreadable, binary, non-UTF-8 or broken YAML raises YamlFileError."""
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise YamlFileError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    if b"\0" in blob:
        raise YamlFileError(f"{p}: not a YAML file (binary content)")
    try:
        return yaml.safe_load(blob.decode("utf-8"))
    except UnicodeDecodeError:
        raise YamlFileError(f"{p}: not a YAML file (not UTF-8)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise YamlFileError(f"{p}:{where} invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
