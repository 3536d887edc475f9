"""OpenMoji conversations: draw an emoji from its name, and name an emoji from its image."""

from __future__ import annotations

import random
from collections.abc import Iterator

from PIL import Image

from training.image_data import OpenMojiDataset

DRAW_REQUESTS = ("Draw {a} {name}.", "Show me {a} {name}.", "Can you draw {a} {name}?", "Please draw {a} {name}.",
                 "I'd like a picture of {a} {name}.", "Make an image of {a} {name}.", "{Name}, please.")
DRAW_REPLIES = ("Here is {a} {name}:", "Sure! {A} {name}:", "Here you go:", "{A} {name}:")
NAME_QUESTIONS = ("What is this?", "What does this emoji show?", "What is in this picture?", "Name this emoji.")
NAME_REPLIES = ("It is {a} {name}.", "This is {a} {name}.", "{A} {name}.")


def article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"


def fill(template: str, name: str) -> str:
    a = article(name)
    return template.format(a=a, A=a.capitalize(), name=name, Name=name[:1].upper() + name[1:])


def emoji_images(split: str, image_size: int) -> list[tuple[str, Image.Image]]:
    dataset = OpenMojiDataset(split=split, image_size=image_size)
    return [(entry.name, Image.fromarray(dataset.images_NHWC[index])) for index, entry in enumerate(dataset.entries)]


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
