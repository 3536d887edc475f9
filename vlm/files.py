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


def recover(target: Path) -> None:
    """Finish a `swap_in` that a crash cut between its two renames: the old folder comes back.

    `swap_in` moves `target` aside to `target.old` before moving the new folder in; a process
    killed between the two leaves no `target` at all, and a resume would start from scratch.
    """
    old = target.with_name(target.name + ".old")
    if not target.exists() and old.is_dir():
        old.replace(target)


class PathEscapeError(ValueError):
    """A path in a data or conversation file that points outside that file's folder."""


def confined_path(base: Path, relative: str) -> Path:
    """`base / relative`, resolved, refused if it leaves `base`.

    Image paths inside JSONL files and saved conversations come from files a user may have
    been handed; `../`, absolute paths or a symlink out of the folder would let such a file
    read (and, for training, memorise) anything on the disk.
    """
    if Path(relative).is_absolute():
        raise PathEscapeError(f"image path {relative!r} is absolute; paths must be relative to {base}")
    root = Path(base).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise PathEscapeError(f"image path {relative!r} leads outside {root} (to {path})")
    return path
