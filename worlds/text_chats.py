"""Text-only chats whose replies the stock backbone writes itself, so fine-tuning keeps its language.

The training mix takes them with its seeds; the evaluation writes its own with an evaluation
seed and compares the tuned model's perplexity on them with the stock backbone's.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch

from vlm.backbone import load_backbone

# Many topics and phrasings, so the tuned model sees the backbone's language broadly rather
# than a few memorised replies (48 chats over 28 topics let text perplexity double in training).
TOPICS = ["the ocean", "volcanoes", "the moon", "honey bees", "trains", "chess", "rainbows", "penguins", "bread",
          "the piano", "deserts", "coffee", "owls", "bicycles", "the human heart", "snow", "tea", "dinosaurs",
          "football", "the internet", "forests", "cats", "dogs", "clouds", "Mars", "recycling", "music", "gardens",
          "elephants", "the sun", "rivers", "mountains", "libraries", "airplanes", "photosynthesis", "gravity",
          "the seasons", "volunteering", "friendship", "sleep", "breakfast", "apples", "bananas", "tomatoes",
          "rain", "thunderstorms", "the alphabet", "maps", "clocks", "birthdays", "museums", "dolphins", "sharks",
          "butterflies", "ants", "spiders", "frogs", "horses", "cows", "camels", "kangaroos", "the Arctic",
          "the rainforest", "islands", "lighthouses", "castles", "bridges", "pyramids", "rockets", "satellites",
          "stars", "comets", "the solar system", "electricity", "magnets", "batteries", "computers", "robots",
          "painting", "photography", "dancing", "singing", "reading", "writing letters", "cooking pasta", "soup",
          "pizza", "chocolate", "ice cream", "cheese", "rice", "water", "exercise", "running", "swimming",
          "tennis", "basketball", "hiking", "camping", "fishing", "the post office", "money", "saving energy",
          "trees", "flowers", "mushrooms", "the wind", "earthquakes", "fossils", "maths", "fractions",
          "the number zero", "history", "languages", "kindness", "patience", "learning to ride a bike",
          "teeth", "the brain", "bones", "vitamins", "washing hands", "umbrellas", "shoes", "hats", "kites",
          "balloons", "boats", "submarines", "hot air balloons", "the weather", "autumn leaves", "winter",
          "summer holidays", "grandparents", "pets", "goldfish", "parrots", "bamboo", "pandas", "tigers"]
TEMPLATES = ["Tell me a fun fact about {}.", "Explain {} to a child in two sentences.", "Write a short poem about {}.",
             "What is interesting about {}?", "Give me one tip related to {}.", "Describe {} in one sentence.",
             "Why do people like {}?", "Can you tell me something about {}?", "What should I know about {}?",
             "Write a haiku about {}.", "Give me three words that describe {}.", "How would you explain {} simply?",
             "What is a common question about {}, and its answer?", "Say something nice about {}."]
# Everyday turns that are not about a topic.
SMALL_TALK = ["Hello!", "Hi, how are you?", "Who are you?", "What can you do?", "Thank you!", "Good morning!",
              "Can you help me?", "Tell me a joke.", "What is 2 + 3?", "What is 7 times 6?",
              "Give me a word that rhymes with cat.", "What day comes after Monday?", "Count from one to five.",
              "What colour is the sky?", "Name three fruits.", "How many legs does a spider have?",
              "Say hello in French.", "What is the opposite of hot?", "Goodbye!", "Can you recommend a book?"]


def _prompt(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return rng.choice(SMALL_TALK)
    return rng.choice(TEMPLATES).format(rng.choice(TOPICS))


def text_conversations(rng: random.Random, count: int, backbone: str | None = None,
                       max_new_tokens: int = 160, batch_size: int = 64) -> Iterator[list[dict]]:
    """Up to `count` chats (replies the backbone did not finish are skipped), generated in
    left-padded batches, which is several times faster than one prompt at a time on a CPU
    (2 cores: 3.0 s per chat at batch 16, 1.7 s at batch 64; bf16 autocast no faster)."""
    model, tokenizer = load_backbone(backbone)
    model.eval()
    tokenizer.padding_side = "left"
    prompts = [_prompt(rng) for _ in range(count)]
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
