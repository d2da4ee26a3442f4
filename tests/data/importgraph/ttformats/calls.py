"""Clean: the ground floor imports nothing of ours."""


def e2e_ms(start: float, end: float) -> float:
    """Milliseconds from start to end."""
    return (end - start) * 1000
