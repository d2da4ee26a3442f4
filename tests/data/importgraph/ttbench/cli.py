"""Clean: the top floor may import every room."""

from analysis.clean import e2e_ms

from gatewaysim.state import Gateway
from locustfiles import x

__all__ = ["Gateway", "e2e_ms", "x"]
