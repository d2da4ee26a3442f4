"""Violation: the ground floor imports a room."""

import analysis


def name() -> str:
    """The room's name."""
    return analysis.__name__
