"""Benchmarks: scripts that print tables (quality, speed, memory); never timed tests."""
