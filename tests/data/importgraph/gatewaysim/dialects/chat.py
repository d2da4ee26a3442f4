"""Clean: a relative import two levels up."""

from ..state import Gateway


def build() -> Gateway:
    """A gateway."""
    return Gateway()
