"""Weight-only int8 linear layers (vlm/int8_weights.py) and the `--int8` flag that loads them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chat.session import load_chat_model
from generation import GenerationConfig, TextDelta, generate, stream_generate
from tests.tiny_vlm import drawing_chat, force_one_image, perturbed, tiny_model
from vlm.int8_weights import PACKED_SMALL_INPUT_ROWS, SMALL_INPUT_ROWS, Int8Linear, packs_bf16, quantize_linears_int8


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("offset", [None, 0, 1, 128])  # 1 row, the last int8 size, one more, many
def test_small_inputs_use_int8_within_its_rounding_and_larger_ones_the_float_weight(dtype, offset):
    torch.manual_seed(0)
    linear = nn.Linear(96, 40).to(dtype)
    limit = PACKED_SMALL_INPUT_ROWS if packs_bf16(linear.weight) else SMALL_INPUT_ROWS[dtype]
    rows = 1 if offset is None else limit + offset
    x = (torch.randn(rows, 96) if rows > 1 else torch.randn(1, 1, 96)).to(dtype)
    quantized = Int8Linear(linear)
    expected, got = linear(x), quantized(x)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert quantized.weight is linear.weight and quantized.weight_int8.dtype == torch.int8
    assert quantized.weight_int8.abs().max() == 127 and quantized.small_rows == limit
    # bf16 weights get a oneDNN-packed copy where oneDNN runs bf16 (larger inputs: same bits).
    assert (quantized.packed is not None) == (dtype is torch.bfloat16 and packs_bf16(linear.weight))
    error = (got - expected).float().abs().max().item()
    if rows <= limit:
        # Per-row scales round each weight by at most half a step (max |w| / 254); the int8
        # kernel also takes bf16 activations, ~3 significant digits.
        assert 0 < error < 0.02 * expected.float().abs().max().item()
    else:
        assert error == 0


def test_a_packed_layer_still_takes_gradients_on_its_float_weight():
    linear = nn.Linear(16, 8).to(torch.bfloat16)
    quantized = Int8Linear(linear)
    x = torch.randn(32, 16, dtype=torch.bfloat16, requires_grad=True)
    quantized(x).float().sum().backward()
    assert x.grad is not None and linear.weight.grad is not None


def test_a_quantized_model_chats_and_draws_close_to_the_float_one(tiny_parts):
    model = perturbed(tiny_model(tiny_parts))
    quantized = perturbed(tiny_model(tiny_parts))
    replaced = quantize_linears_int8(quantized.language_model)
    layers = quantized.language_model.config.num_hidden_layers
    assert replaced == 7 * layers + 1  # q, k, v, o, gate, up, down per layer, and the text head
    assert not any(type(module) is nn.Linear for module in quantized.language_model.modules())
    chat = [{"role": "user", "content": "Hello"}]
    batch = model.processor(chat)
    with torch.no_grad():
        expected = model(batch).text_logits
        got = quantized(batch).text_logits
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9
    config = GenerationConfig(temperature=0.0, max_new_tokens=6, max_images=0)
    assert [event for event in stream_generate(quantized, chat, config) if isinstance(event, TextDelta)]
    [drawn] = generate(force_one_image(quantized), drawing_chat()[:1],
                       GenerationConfig(seed=0, residual_steps=2, max_images=1))
    images = [part["image"] for part in drawn.parts if part["type"] == "image"]
    assert len(images) == 1 and images[0].size == (32, 32)


def test_the_chat_loader_quantizes_on_request(tiny_parts, tmp_path):
    perturbed(tiny_model(tiny_parts)).save_pretrained(tmp_path / "model")
    plain = load_chat_model(tmp_path / "model")
    quantized = load_chat_model(tmp_path / "model", int8=True)
    assert any(isinstance(module, nn.Linear) and not isinstance(module, Int8Linear)
               for module in plain.language_model.modules())
    assert isinstance(quantized.language_model.get_output_embeddings(), Int8Linear)


def test_fused_projections_share_their_members_weights_and_give_their_outputs_exactly():
    torch.manual_seed(0)
    block = nn.Module()
    block.q_proj, block.k_proj, block.v_proj = nn.Linear(32, 32, bias=False), nn.Linear(32, 16, bias=False), \
        nn.Linear(32, 16, bias=False)
    assert quantize_linears_int8(block) == 3
    fused = block.int8_fused
    assert fused.sizes == [32, 16, 16]
    assert block.k_proj.weight_int8.data_ptr() == fused.weight_int8[32:].data_ptr()  # views, no extra memory
    x = torch.randn(1, 3, 32)
    assert fused.takes(x) and not fused.takes(torch.randn(40, 32))
    for got, layer in zip(fused(x), (block.q_proj, block.k_proj, block.v_proj), strict=True):
        assert torch.equal(got, layer(x))
