"""Clean: holds a private name."""

_V = 2
