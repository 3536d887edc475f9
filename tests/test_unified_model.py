"""UnifiedVLM on a tiny random Llama with the real SmolLM2 text tokenizer and a tiny image tokenizer."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import LlamaConfig, LlamaForCausalLM

from tests.conftest import tiny_tokenizer_config
from vlm.residual_head import ResidualHeadConfig
from vlm.tokenizer import HybridTokenizer
from vlm.unified_model import UnifiedVLM, UnifiedVLMConfig


@pytest.fixture
def tiny_parts(tmp_path, default_backbone_dir):
    torch.manual_seed(0)
    backbone_dir = tmp_path / "backbone"
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(backbone_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(default_backbone_dir / name, backbone_dir / name)
    tokenizer_dir = tmp_path / "image_tokenizer"
    HybridTokenizer(tiny_tokenizer_config()).save_pretrained(tokenizer_dir)
    return backbone_dir, tokenizer_dir


def tiny_model(tiny_parts, **overrides) -> UnifiedVLM:
    backbone_dir, tokenizer_dir = tiny_parts
    values = dict(backbone=str(backbone_dir), lora_rank=4, condition_dropout=0.0,
                  residual_head=ResidualHeadConfig(latent_channels=8, condition_channels=32, width=32, depth=1))
    values.update(overrides)
    torch.manual_seed(0)
    return UnifiedVLM.from_backbone(UnifiedVLMConfig(**values), tokenizer_dir)


def drawing_chat():
    image = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(image).ellipse((6, 6, 26, 26), fill="red")
    return [{"role": "user", "content": "Draw a red circle."},
            {"role": "assistant", "content": [{"type": "text", "text": "Here it is:"},
                                              {"type": "image", "image": image}]}]


def test_forward_gives_all_three_losses(tiny_parts):
    model = tiny_model(tiny_parts)
    output = model(model.processor(drawing_chat()))
    assert set(output.losses) == {"text", "image", "residual", "total"}
    assert output.image_logits.shape[1] == 64


def test_gradients_reach_new_layers_head_and_adapters_and_nothing_frozen(tiny_parts):
    model = tiny_model(tiny_parts)
    model.train()
    model(model.processor(drawing_chat())).losses["total"].backward()
    named = dict(model.named_parameters())
    trainable = {name for name, parameter in named.items() if parameter.requires_grad}
    assert any("lora_" in name for name in trainable)
    assert any(name.startswith("image_embedder") for name in trainable)
    assert any(name.startswith("residual_head") for name in trainable)
    assert not any(name.startswith("image_tokenizer") for name in trainable)
    assert not any("base_layer" in name for name in trainable)  # stock backbone weights stay frozen
    received = {name for name in trainable if named[name].grad is not None and named[name].grad.abs().sum() > 0}
    assert any("lora_B" in name for name in received)  # lora_A's gradient is zero while lora_B is at zero
    assert {"image_embedder.start", "image_head.1.weight"} <= received
    assert any(name.startswith("residual_head") for name in received)


def test_save_then_load_gives_identical_outputs(tiny_parts, tmp_path):
    model = tiny_model(tiny_parts)
    with torch.no_grad():  # move the zero-initialised parts so the round trip is meaningful
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.01)
    model.eval()
    batch = model.processor(drawing_chat())
    generator = torch.Generator().manual_seed(0)
    before = model(batch, generator=generator)
    model.save_pretrained(tmp_path / "saved")
    loaded = UnifiedVLM.from_pretrained(tmp_path / "saved")
    after = loaded(batch, generator=torch.Generator().manual_seed(0))
    assert torch.equal(before.text_logits, after.text_logits)
    assert torch.equal(before.image_logits, after.image_logits)
    assert torch.equal(before.losses["residual"], after.losses["residual"])


def test_a_tiny_model_overfits_one_conversation_with_an_image(tiny_parts):
    model = tiny_model(tiny_parts, finetune="full")
    model.train()
    batch = model.processor(drawing_chat())
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(250):
        losses = model(batch, generator=generator).losses
        history.append({name: value.item() for name, value in losses.items()})
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
    for name in ("text", "image", "residual"):
        first = sum(step[name] for step in history[:5]) / 5
        last = sum(step[name] for step in history[-10:]) / 10  # the diffusion loss is noisy step to step
        assert last <= 0.1 * first, (name, first, last)
