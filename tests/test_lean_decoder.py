"""The lean decoder path (vlm/lean_decoder.py): the backbone's own hidden states, bit for bit."""

from __future__ import annotations

import pytest
import torch

import vlm.unified_model
from tests.tiny_vlm import drawing_chat, perturbed, tiny_model
from vlm.int8_weights import quantize_linears_int8
from vlm.lean_decoder import runs_lean


def _hidden_states(model) -> list[torch.Tensor]:
    """Every kind of chunk generation feeds: a prefill with an image (block mask), one token over
    hidden keys (mask, one query: packed GQA), one token seeing everything (no mask), and a scale
    block over a cache with a blind CFG row (mask, many queries)."""
    outputs = []
    with torch.no_grad():
        hidden, cache = model.start_decoding(model.processor(drawing_chat(), add_generation_prompt=True))
        outputs.append(hidden)
        text = model.text_embeddings(torch.tensor([[42]]))
        outputs.append(model.extend(cache, text, torch.zeros(1, 1, dtype=torch.long)))
        hidden, plain = model.start_decoding(model.processor([{"role": "user", "content": "Hi"}],
                                                             add_generation_prompt=True))
        outputs.append(model.extend(plain, text, torch.zeros(1, 1, dtype=torch.long)))
        rows = plain.add_blind_rows(torch.tensor([0]))
        block = torch.randn(1 + len(rows), 4, model.language_model.config.hidden_size,
                            generator=torch.Generator().manual_seed(0))
        outputs.append(model.extend(plain, block, torch.zeros(1 + len(rows), 4, dtype=torch.long)))
    return outputs


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_lean_path_gives_the_backbones_hidden_states_bit_for_bit(tiny_parts, monkeypatch, dtype, int8):
    model = perturbed(tiny_model(tiny_parts))
    model.language_model.to(dtype)
    assert model.decoder_dtype == dtype
    if int8:  # the lean path then runs q/k/v and gate/up as one call each, the backbone's as separate ones
        quantize_linears_int8(model.language_model)
        assert all(hasattr(layer.self_attn, "int8_fused") and hasattr(layer.mlp, "int8_fused")
                   for layer in model.language_model.get_decoder().layers)
    calls = []
    lean = vlm.unified_model.lean_decoder_forward
    monkeypatch.setattr(vlm.unified_model, "lean_decoder_forward", lambda *args: calls.append(1) or lean(*args))
    fast = _hidden_states(model)
    assert len(calls) == 5  # two prefills, three extends: every chunk took the lean path
    monkeypatch.setattr(vlm.unified_model, "runs_lean", lambda decoder: False)
    reference = _hidden_states(model)
    assert len(calls) == 5
    for got, expected in zip(fast, reference, strict=True):
        assert torch.equal(got, expected)


def test_training_and_gradients_take_the_backbones_own_forward(tiny_parts):
    model = perturbed(tiny_model(tiny_parts))
    decoder = model.language_model.get_decoder()
    with torch.no_grad():
        assert runs_lean(decoder)
        decoder.train()
        assert not runs_lean(decoder)
    decoder.eval()
    assert not runs_lean(decoder)  # gradients on: training's forward, not this path
    decoder.config._attn_implementation = "eager"
    with torch.no_grad():
        assert not runs_lean(decoder)
