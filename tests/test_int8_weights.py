"""Weight-only int8 linear layers (vlm/int8_weights.py) and the `--int8` flag that loads them."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
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


@pytest.mark.parametrize("input_grad", [True, False], ids=["input-and-weight", "weight-only"])
def test_with_autograd_on_a_layer_gives_gradients_like_the_float_one(input_grad):
    torch.manual_seed(0)
    linear = nn.Linear(16, 8).to(torch.bfloat16)
    quantized = Int8Linear(linear)
    x = torch.randn(2, 16, 16, dtype=torch.bfloat16, requires_grad=input_grad)  # larger than the int8 path
    quantized(x).float().sum().backward()
    got = linear.weight.grad.clone()
    linear.weight.grad = None
    linear(x).float().sum().backward()
    assert torch.equal(got, linear.weight.grad)


def test_packed_copies_serve_3d_inputs_and_survive_a_deep_copy():
    torch.manual_seed(0)
    block = nn.Module()
    block.gate_proj, block.up_proj, block.down_proj = nn.Linear(32, 48, bias=False), nn.Linear(32, 48, bias=False), \
        nn.Linear(48, 32)
    block.to(torch.bfloat16)
    expected = {name: getattr(block, name).weight.detach().clone() for name in ("gate_proj", "up_proj", "down_proj")}
    quantize_linears_int8(block)
    fused = block.int8_fused
    packs = packs_bf16(block.down_proj.weight)  # where oneDNN runs no bf16, the plain weights serve
    assert (fused.packed is not None) == packs and (block.down_proj.packed is not None) == packs
    # The members' own packed copies make way for the stacked one; alone, they keep the packed
    # limit, so that called one by one they give the fused call's bits.
    assert block.gate_proj.packed is None
    limit = PACKED_SMALL_INPUT_ROWS if packs else SMALL_INPUT_ROWS[torch.bfloat16]
    assert block.gate_proj.small_rows == limit and fused.small_numel == limit * 32
    x, hidden = torch.randn(2, 9, 32, dtype=torch.bfloat16), torch.randn(3, 5, 48, dtype=torch.bfloat16)
    with torch.no_grad():
        gate, up = fused(x) if packs else (block.gate_proj(x), block.up_proj(x))
        assert torch.equal(gate, F.linear(x, expected["gate_proj"]))
        assert torch.equal(up, F.linear(x, expected["up_proj"])) and torch.equal(up, block.up_proj(x))
        assert torch.equal(block.down_proj(hidden), F.linear(hidden, expected["down_proj"], block.down_proj.bias))
        copied = copy.deepcopy(block)  # an opaque packed tensor has no storage: the copy rebuilds it
        assert (copied.int8_fused.packed is not None) == packs and (copied.down_proj.packed is not None) == packs
        assert copied.int8_fused.members[0] is copied.gate_proj
        assert torch.equal(copied.int8_fused(x)[0] if packs else copied.gate_proj(x), gate)
        assert torch.equal(copied.down_proj(hidden), block.down_proj(hidden))


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
