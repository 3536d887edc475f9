"""Attention kernel selection on a tiny random Llama (CPU: SDPA; the GPU path is the same code)."""

from __future__ import annotations

import json

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vlm.attention import SDPA, candidate_implementations, select_attention
from vlm.unified_model import CONFIG_NAME


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval()


def test_cpu_uses_sdpa():
    assert candidate_implementations(torch.device("cpu")) == [SDPA]
    model = tiny_llama()
    assert select_attention(model) == SDPA
    assert model.config._attn_implementation == SDPA


def test_the_trainer_takes_an_attention_kernel_that_the_saved_model_does_not_keep(tiny_parts, tmp_path, monkeypatch):
    from training.build_data import main as build_main
    from training.train import main as train_main

    build_main(["shapes", "--out", str(tmp_path / "data"), "--count", "2", "--seed", "1"])
    backbone_dir, _ = tiny_parts
    used = []
    original = LlamaForCausalLM.set_attn_implementation
    monkeypatch.setattr(LlamaForCausalLM, "set_attn_implementation",
                        lambda self, name: (used.append(name), original(self, name))[1])
    out = tmp_path / "run"
    train_main(["--data", str(tmp_path / "data" / "shapes.jsonl"), "--output-dir", str(out), "--backbone",
                str(backbone_dir), "--steps", "1", "--batch-size", "2", "--no-sample-every-checkpoint",
                "--attention", "eager"])
    assert used[-1] == "eager"
    assert json.loads((out / "model" / CONFIG_NAME).read_text())["attention"] == "auto"  # inference picks its own


def test_a_kernel_that_fails_or_disagrees_falls_back_to_sdpa():
    model = tiny_llama()
    assert select_attention(model, ["no_such_kernel", SDPA]) == SDPA
    assert select_attention(model, ["eager", SDPA], tolerance=1e-4) == "eager"  # eager honours the block mask
    assert model.config._attn_implementation == "eager"
    assert select_attention(model, ["eager"], tolerance=-1.0) == SDPA  # nothing passes: SDPA
