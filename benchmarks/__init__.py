"""Benchmarks: `python -m benchmarks.<name> --help`; results go to benchmarks/results/."""
