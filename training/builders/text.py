"""Text-only chats whose replies the stock backbone writes itself, so fine-tuning keeps its language."""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch

from vlm.backbone import load_backbone

TOPICS = ["the ocean", "volcanoes", "the moon", "honey bees", "trains", "chess", "rainbows", "penguins", "bread",
          "the piano", "deserts", "coffee", "owls", "bicycles", "the human heart", "snow", "tea", "dinosaurs",
          "football", "the internet", "forests", "cats", "dogs", "clouds", "Mars", "recycling", "music", "gardens"]
TEMPLATES = ["Tell me a fun fact about {}.", "Explain {} to a child in two sentences.", "Write a short poem about {}.",
             "What is interesting about {}?", "Give me one tip related to {}.", "Describe {} in one sentence."]


def text_conversations(rng: random.Random, count: int, backbone: str | None = None,
                       max_new_tokens: int = 96) -> Iterator[list[dict]]:
    model, tokenizer = load_backbone(backbone)
    model.eval()
    for _ in range(count):
        prompt = rng.choice(TEMPLATES).format(rng.choice(TOPICS))
        chat = [{"role": "user", "content": prompt}]
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]
        torch.manual_seed(rng.randrange(2**31))
        with torch.no_grad():
            output = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.7,
                                    top_p=0.9, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id)
        new_ids = output[0, ids.shape[1]:]
        if tokenizer.eos_token_id not in new_ids.tolist():
            continue  # cut off mid-reply: training on it would teach stopping mid-sentence
        reply = tokenizer.decode(new_ids, skip_special_tokens=True).strip()
        if reply:
            yield chat + [{"role": "assistant", "content": reply}]
