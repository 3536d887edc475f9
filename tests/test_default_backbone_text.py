"""On the real default backbone (loads SmolLM2-135M; about half a minute): adding the image
machinery, untrained and with adapters at zero, leaves text generation token-for-token the
same as the stock model's own `generate()`."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from generation import GenerationConfig, TextDelta, stream_generate
from vlm.unified_model import UnifiedVLM, UnifiedVLMConfig

PROMPTS = [  # a question, a creative request, arithmetic: each decodes 16 tokens in both models
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
]


@pytest.mark.slow
def test_greedy_text_matches_the_stock_backbone(default_backbone_dir):
    model = UnifiedVLM.from_backbone(UnifiedVLMConfig(backbone=str(default_backbone_dir))).eval().fold_adapters()
    stock = AutoModelForCausalLM.from_pretrained(default_backbone_dir, torch_dtype=torch.float32).eval()
    tokenizer = model.processor.tokenizer
    for prompt in PROMPTS:
        chat = [{"role": "user", "content": prompt}]
        prompt_ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True)["input_ids"]
        with torch.no_grad():
            expected = stock.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False,
                                      max_new_tokens=16, pad_token_id=tokenizer.eos_token_id)[0, prompt_ids.shape[1]:]
        expected = [token for token in expected.tolist() if token != tokenizer.eos_token_id]
        config = GenerationConfig(temperature=0.0, max_new_tokens=16, max_images=0)
        ours = [token for event in stream_generate(model, chat, config) if isinstance(event, TextDelta)
                for token in event.token_ids]
        assert ours == expected, prompt
