"""Not a package module (a tests folder): its imports are not checked."""

import locustfiles.x

import ttbench.cli

__all__ = ["locustfiles", "ttbench"]
