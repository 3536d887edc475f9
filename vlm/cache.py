"""The one place the project keeps derived files (rendered data, converted backbones)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$HYBRID_VLM_CACHE if set, else ~/.cache/hybrid-vlm. Everything in it can be rebuilt."""
    return Path(os.environ.get("HYBRID_VLM_CACHE", Path.home() / ".cache" / "hybrid-vlm"))
