"""Benchmarks of the request path: ``make bench`` (see docs/performance.md)."""
