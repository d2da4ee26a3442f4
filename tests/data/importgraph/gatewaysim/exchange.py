"""Clean: imports state only for type checking, so state <-> exchange is no circle."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .state import Gateway


def handle(gateway: Gateway) -> float:
    """Handle one call."""
    return 0.0 if gateway else 1.0
