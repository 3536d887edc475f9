"""Shared fixtures: tiny random configs so every test runs in well under a second.

Torch, transformers and the model code are imported inside the fixtures and hooks, not at the
top: under pytest-xdist the controlling process loads this file too, before it starts any
worker, and it runs no test (those imports were seconds of start-up with nothing else running).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from filelock import FileLock

if TYPE_CHECKING:
    from vlm.tokenizer import HybridTokenizer, TokenizerConfig


def pytest_configure(config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # a worker of `pytest -n N`: share the cores out
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def pytest_collection_modifyitems(config, items) -> None:
    """Under `pytest -n N --dist worksteal` each worker is first handed a contiguous share of this
    list and an idle worker then steals from the end of another's queue. The tests marked `slow`
    go to the front of their share (otherwise in file order, so the ones sharing the converted
    backbone stay on one worker): the run then ends on quick tests that balance out, instead of
    one worker finishing a 15-second test alone. Without workers the order is the files' order."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2:
        return
    ordered, start = [], 0
    for worker in range(workers):  # xdist's first split: the next len(rest) // (workers left)
        size = (len(items) - start) // (workers - worker)
        share = items[start:start + size]
        ordered += [item for item in share if item.get_closest_marker("slow")]
        ordered += [item for item in share if not item.get_closest_marker("slow")]
        start += size
    items[:] = ordered


def shared_folder(tmp_path_factory) -> Path:
    """A folder every test process of this session sees: under pytest-xdist the workers' base
    temporary folders' parent, else the base temporary folder."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def tiny_tokenizer_config(**overrides) -> TokenizerConfig:
    from vlm.tokenizer import TokenizerConfig

    values = dict(
        image_size=32,
        latent_channels=8,
        encoder_channels=(8, 16, 16),
        res_blocks_per_level=(0, 1, 1),
        codebook_size=64,
        scales=(1, 2, 3, 5, 8),
        num_phi_convs=2,
    )
    values.update(overrides)
    return TokenizerConfig(**values)


@pytest.fixture
def tiny_tokenizer() -> HybridTokenizer:
    import torch

    from vlm.tokenizer import HybridTokenizer

    torch.manual_seed(0)
    return HybridTokenizer(tiny_tokenizer_config()).eval()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Rendered data goes to a per-session temporary cache, never the user's home."""
    monkeypatch.setenv("HYBRID_VLM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each trainer run is a fresh process in real use; in one test process accelerate's state is
    a singleton, and a run in bf16 (what 'auto' picks on an AVX512/AMX CPU) would make the next
    run's fp32 Accelerator fail. Reset it after every test, as accelerate's own test cases do."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="session")
def default_backbone_dir(tmp_path_factory):
    """The real default backbone, converted once per test session (about a minute) into a temporary cache."""
    from vlm.backbone import DEFAULT_BACKBONE, convert_default_backbone

    shared = shared_folder(tmp_path_factory)
    with FileLock(shared / "backbone.lock"):  # one conversion, whichever worker asks first
        converted = convert_default_backbone(shared / "cache" / "backbones" / DEFAULT_BACKBONE)
    local = tmp_path_factory.getbasetemp() / "cache" / "backbones" / DEFAULT_BACKBONE  # this process's cache
    if local != converted and not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        local.symlink_to(converted, target_is_directory=True)
    return local


@pytest.fixture(scope="session")
def default_text_tokenizer_dir(tmp_path_factory):
    """The default backbone's text tokenizer files alone (seconds, not the backbone's conversion):
    tiny models borrow the real tokenizer and chat template."""
    from vlm.backbone import text_tokenizer_from_gguf

    shared = shared_folder(tmp_path_factory)
    with FileLock(shared / "text_tokenizer.lock"):
        return text_tokenizer_from_gguf(shared / "cache" / "text_tokenizer")


@pytest.fixture(scope="session")
def default_text_tokenizer(default_text_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_text_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_parts_once(tmp_path_factory, default_text_tokenizer_dir):
    """The tiny backbone and image tokenizer folders, written once per session (tests only read them)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlm.tokenizer import HybridTokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_parts")
    backbone_dir = root / "backbone"
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(backbone_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(default_text_tokenizer_dir / name, backbone_dir / name)
    tokenizer_dir = root / "image_tokenizer"
    HybridTokenizer(tiny_tokenizer_config()).save_pretrained(tokenizer_dir)
    return backbone_dir, tokenizer_dir


@pytest.fixture
def tiny_parts(tiny_parts_once):
    """(tiny backbone folder, tiny image tokenizer folder), with the global seed reset as before each test."""
    import torch

    torch.manual_seed(0)
    return tiny_parts_once
