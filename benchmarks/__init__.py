"""Benchmark runners (used by `make bench` and by the book's notebooks)."""
