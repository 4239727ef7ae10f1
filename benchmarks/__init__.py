"""Benchmark scripts: each prints a ratio measured side by side in one run and writes it with
its goal (``python benchmarks/run_all.py``)."""
