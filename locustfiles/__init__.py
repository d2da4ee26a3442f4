"""ttbench's load generator: Locust users, dialect clients and per-attempt records."""
