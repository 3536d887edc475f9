"""The README's Python examples run as written, in order, on a tiny random backbone.

Only the backbone is swapped (every name resolves to the tiny Llama) and loaded models end
their replies early (a random model rarely says end-of-turn), so the examples stay fast;
the image tokenizer is the shipped one, and the files they open are made here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import vlm.unified_model
from tests.tiny_vlm import short_replies
from vlm import UnifiedVLM

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block, in order."""
    return [(text[:match.start()].count("\n") + 2, match.group(1))
            for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def test_the_readme_has_python_examples():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 3
    assert all(code.strip() for _, code in blocks)


@pytest.mark.slow
def test_the_readme_python_examples_run_as_written(tiny_parts, tmp_path, monkeypatch):
    backbone_dir, _ = tiny_parts
    load = vlm.unified_model.load_backbone

    def tiny_backbone(name=None, dtype=torch.float32):
        return load(backbone_dir, dtype)

    monkeypatch.setattr(vlm.unified_model, "load_backbone", tiny_backbone)
    load_pretrained = UnifiedVLM.from_pretrained.__func__

    def ending_early(cls, *args, **kwargs):  # a random model rarely says end-of-turn
        return short_replies(load_pretrained(cls, *args, **kwargs), words=12)

    monkeypatch.setattr(UnifiedVLM, "from_pretrained", classmethod(ending_early))
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), "orange").save("cat.png")
    Image.new("RGB", (80, 60), "brown").save("dog.jpg")
    Image.new("RGB", (64, 64), "red").save("apple.png")
    namespace: dict = {}
    for line, code in python_blocks(README.read_text()):
        exec(compile(code, f"README.md, block at line {line}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "my_tokenizer" / "config.json").is_file()
    assert (tmp_path / "my_model").is_dir()
    assert len(namespace["replies"]) == 4 and all(len(reply.images) == 1 for reply in namespace["replies"])
