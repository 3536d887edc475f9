"""Sampling and the interleaved text/image generation loop (built on `vlm`; nothing about UI)."""
