"""Not a package module (a benchmarks folder): its imports are not checked."""

import gatewaysim.state

__all__ = ["gatewaysim"]
