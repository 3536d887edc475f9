"""Folder writes that never leave a half-written folder where a good one was."""

from __future__ import annotations

import shutil
from pathlib import Path


def swap_in(staging: Path, target: Path) -> None:
    """Put a fully written `staging` folder at `target`, replacing what was there."""
    if target.exists():
        old = target.with_name(target.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        target.replace(old)
        staging.replace(target)
        shutil.rmtree(old)
    else:
        staging.replace(target)
