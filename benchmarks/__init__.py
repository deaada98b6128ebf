"""gnetpy's benchmark suite; the runner is benchmarks.harness (``python -m gnetpy bench``)."""
