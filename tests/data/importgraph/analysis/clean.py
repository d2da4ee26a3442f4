"""Clean: the analysis imports the ground floor."""

from ttformats.calls import e2e_ms

__all__ = ["e2e_ms"]
