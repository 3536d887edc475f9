"""Writes conversations in the training data format: one JSONL line each, PNGs beside it.

The format is defined (and read, line by line) by `training/data.py`; the writer sits here,
below both, because the data builders (`training/builders`) and the benchmarks that train on
data of their own (`benchmarks/overfit.py`, `benchmarks/learnability.py`) both write it.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


class ConversationWriter:
    """Conversations whose image parts hold PIL images -> `NAME.jsonl` + `images/NAME/*.png`.

    Writes to temporary names and renames at the end, so an interrupted build never leaves a
    half-written file where a good one was.
    """

    def __init__(self, out_dir: str | Path, name: str):
        self.out_dir = Path(out_dir)
        self.name = name
        self.image_dir = self.out_dir / "images" / name
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / f"{name}.jsonl"
        self._temporary = self.path.with_suffix(".jsonl.tmp")
        self._handle = self._temporary.open("w", encoding="utf-8")
        self.count = 0
        self._images = 0

    def add(self, messages: list[dict]) -> None:
        stored = []
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            parts = []
            for part in content:
                if part["type"] == "image" and isinstance(part.get("image"), Image.Image):
                    relative = f"images/{self.name}/{self._images:06d}.png"
                    part["image"].save(self.out_dir / relative)
                    self._images += 1
                    parts.append({"type": "image", "path": relative})
                else:
                    parts.append(part)
            stored.append({"role": message["role"], "content": parts})
        self._handle.write(json.dumps({"messages": stored}, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> Path:
        self._handle.close()
        self._temporary.replace(self.path)
        return self.path

    def __enter__(self) -> ConversationWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self._handle.close()
            self._temporary.unlink(missing_ok=True)
