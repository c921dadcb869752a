"""Throughput and latency benchmarks; run ``python -m benchmarks --help``."""
