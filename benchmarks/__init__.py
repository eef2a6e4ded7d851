"""Benchmarks of the course's code, run side by side in one process: ``python -m benchmarks.<name>``."""
