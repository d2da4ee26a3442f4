"""Violation: the load generator imports the command line (inside a function)."""


def main() -> str:
    """Borrow the command line."""
    import ttbench.cli

    return ttbench.cli.__name__
