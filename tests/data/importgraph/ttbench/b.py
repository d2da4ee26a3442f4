"""Violation, with a: a circle (this side imports inside a function)."""


def value() -> int:
    """a's value."""
    from .a import A

    return A
