"""Violation, with b: a circle."""

from . import b

A = 1


def twice() -> int:
    """Two of b's value."""
    return 2 * b.value()
