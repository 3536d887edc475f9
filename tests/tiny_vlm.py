"""A tiny random UnifiedVLM (2-layer Llama, hidden 32) with the real SmolLM2 text tokenizer."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw

from vlm.residual_head import ResidualHeadConfig
from vlm.unified_model import UnifiedVLM, UnifiedVLMConfig


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


def perturbed(model: UnifiedVLM) -> UnifiedVLM:
    """Move the zero-initialised parts (LoRA B, new layers) so equalities are not trivially true."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval().fold_adapters()


def force_one_image(model: UnifiedVLM, words_first: int = 0, opening: str = "") -> UnifiedVLM:
    """Make a random model answer `words_first` tokens of text, then one image, then stop,
    so app tests can check how a drawn image reaches the user. The first tokens are those of
    `opening` (a random first token can be one the page shows nothing for)."""
    start = model.processor.image_start_id
    stop = model.processor.tokenizer.eos_token_id
    opening_ids = model.processor.tokenizer.encode(opening, add_special_tokens=False)[:words_first]
    original = type(model).text_logits.__get__(model)
    calls = {"count": 0}

    def scripted(hidden):
        logits = original(hidden).clone()
        step = calls["count"]
        calls["count"] += 1
        logits[..., start] = -1e4
        logits[..., stop] = -1e4
        if step < len(opening_ids):
            logits[..., opening_ids[step]] = 1e4
        elif step == words_first:
            logits[..., start] = 1e4
        elif step > words_first:
            logits[..., stop] = 1e4
        return logits

    def reset():
        calls["count"] = 0

    model.text_logits = scripted
    model.reset_script = reset
    return model


def short_replies(model: UnifiedVLM, words: int = 6) -> UnifiedVLM:
    """Make a random model end every reply after `words` text tokens (a random model rarely
    says end-of-turn, and 256-token replies make app tests slow)."""
    stop = model.processor.tokenizer.eos_token_id
    original_logits = type(model).text_logits.__get__(model)
    original_start = type(model).start_decoding.__get__(model)
    calls = {"count": 0}

    def start_decoding(*args, **kwargs):
        calls["count"] = 0
        return original_start(*args, **kwargs)

    def text_logits(hidden):
        logits = original_logits(hidden).clone()
        calls["count"] += 1
        if calls["count"] > words:
            logits[..., stop] = 1e4
        return logits

    model.start_decoding = start_decoding
    model.text_logits = text_logits
    return model
