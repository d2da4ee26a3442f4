"""ttbench: load-testing and benchmarking harness for LLM API gateways."""

__version__ = "0.1.0"
