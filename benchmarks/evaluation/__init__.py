"""The evaluation suite's tasks; `python -m benchmarks.evaluate` runs them and writes the report."""
