"""Clean: a private name from its own package is fine."""

from .scenario import _V


def value() -> int:
    """The private value."""
    return _V
