"""The shipped default model (loads SmolLM2-135M and the trained image layers; a few seconds):
it loads by default, answers in text, and draws an image when asked."""

from __future__ import annotations

import pytest

from generation import GenerationConfig, generate
from vlm.unified_model import UnifiedVLM


@pytest.mark.slow
def test_the_default_model_loads_chats_and_draws(default_backbone_dir):
    model = UnifiedVLM.from_pretrained()
    assert model.image_tokenizer.config.image_size == 64
    text = generate(model, [{"role": "user", "content": "What colour is the sky?"}],
                    GenerationConfig(seed=0, max_new_tokens=16, max_images=0))[0]
    assert text.text.strip()
    drawn = generate(model, [{"role": "user", "content": "Draw a red circle."}],
                     GenerationConfig(seed=0, force_image=True, max_new_tokens=8))[0]
    assert drawn.images and drawn.images[0].size == (64, 64)
