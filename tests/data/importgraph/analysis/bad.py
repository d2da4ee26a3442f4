"""Violation: the analysis imports the simulator (only for type checking, which still counts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatewaysim.state import Gateway


def serve(gateway: Gateway) -> float:
    """Serve one call."""
    return gateway.serve()
