"""Violation: a private name of another package."""

from locustfiles.scenario import _V

LIMIT = _V
