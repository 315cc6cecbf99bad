"""Reproducible benchmarks: accuracy, speed, memory and cost (``python -m bench``)."""
