"""Attention kernel selection on a tiny random Llama (CPU: SDPA; the GPU path is the same code)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vlm.attention import SDPA, candidate_implementations, select_attention


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


def test_a_kernel_that_fails_or_disagrees_falls_back_to_sdpa():
    model = tiny_llama()
    assert select_attention(model, ["no_such_kernel", SDPA]) == SDPA
    assert select_attention(model, ["eager", SDPA], tolerance=1e-4) == "eager"  # eager honours the block mask
    assert model.config._attn_implementation == "eager"
    assert select_attention(model, ["eager"], tolerance=-1.0) == SDPA  # nothing passes: SDPA
