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
                       max_new_tokens: int = 96, batch_size: int = 16) -> Iterator[list[dict]]:
    """Up to `count` chats (replies the backbone did not finish are skipped), generated in
    left-padded batches, which is several times faster than one prompt at a time on a CPU."""
    model, tokenizer = load_backbone(backbone)
    model.eval()
    tokenizer.padding_side = "left"
    prompts = [rng.choice(TEMPLATES).format(rng.choice(TOPICS)) for _ in range(count)]
    torch.manual_seed(rng.randrange(2**31))
    for first in range(0, count, batch_size):
        chats = [[{"role": "user", "content": prompt}] for prompt in prompts[first:first + batch_size]]
        texts = [tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) for chat in chats]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            output = model.generate(**inputs, do_sample=True, temperature=0.7, top_p=0.9,
                                    max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id)
        for chat, new_ids in zip(chats, output[:, inputs["input_ids"].shape[1]:].tolist()):
            if tokenizer.eos_token_id not in new_ids:
                continue  # cut off mid-reply: training on it would teach stopping mid-sentence
            reply = tokenizer.decode(new_ids[:new_ids.index(tokenizer.eos_token_id)], skip_special_tokens=True).strip()
            if reply:
                yield chat + [{"role": "assistant", "content": reply}]
