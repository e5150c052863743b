"""Load generators and benchmarks (not part of the server; see docs/BENCHMARKS.md)."""
