"""Violation: the simulator imports the load generator."""

from locustfiles import x


def value() -> int:
    """A value from the load generator."""
    return x.VALUE
