"""Benchmarks of issue 6: each one a script that prints its figures as a table (see docs/PERFORMANCE.md)."""
