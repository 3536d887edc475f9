"""OpenMoji conversations: draw an emoji from its name, and name an emoji from its image."""

from __future__ import annotations

import random
from collections.abc import Iterator

from worlds.openmoji import DRAW_REQUESTS, emoji_images, fill

DRAW_REPLIES = ("Here is {a} {name}:", "Sure! {A} {name}:", "Here you go:", "{A} {name}:")
NAME_QUESTIONS = ("What is this?", "What does this emoji show?", "What is in this picture?", "Name this emoji.")
NAME_REPLIES = ("It is {a} {name}.", "This is {a} {name}.", "{A} {name}.")


def emoji_conversations(rng: random.Random, count: int, split: str = "train", image_size: int = 64,
                        draw_share: float = 0.6) -> Iterator[list[dict]]:
    """`count` conversations, `draw_share` of them text-to-image and the rest image-to-text."""
    emoji = emoji_images(split, image_size)
    for _ in range(count):
        name, image = rng.choice(emoji)
        if rng.random() < draw_share:
            yield [{"role": "user", "content": fill(rng.choice(DRAW_REQUESTS), name)},
                   {"role": "assistant", "content": [{"type": "text", "text": fill(rng.choice(DRAW_REPLIES), name)},
                                                     {"type": "image", "image": image}]}]
        else:
            yield [{"role": "user", "content": [{"type": "image", "image": image},
                                                {"type": "text", "text": rng.choice(NAME_QUESTIONS)}]},
                   {"role": "assistant", "content": fill(rng.choice(NAME_REPLIES), name)}]
