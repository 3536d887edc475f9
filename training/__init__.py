"""Datasets, metrics and training recipes for the tokenizer and the decoder model."""
