"""Benchmarks: each is `python -m bench.NAME` and prints one JSON line. Speed lives here, not in tests."""
