"""Clean."""

VALUE = 1
