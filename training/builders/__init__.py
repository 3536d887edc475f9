"""Seeded builders of training conversations (JSONL + PNGs); see `python -m training.build_data`."""
