"""gatewaysim: an LLM API gateway simulator with a ledger and a truth log."""

__version__ = "0.1.0"
