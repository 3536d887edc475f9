"""Multi-turn chats that ask for an image mid-conversation and talk about it afterwards.

A shapes drawing says what it shows before the picture, as every shapes-world drawing reply does
(`worlds.shapes.described_reply`); an emoji drawing names the emoji.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from worlds.english import article
from worlds.openmoji import emoji_images
from worlds.shapes import described_reply, drawing_prompt, questions, random_scene, render

OPENERS = [
    ("Hi! I'm making a poster for school.", "That sounds like a fun project! How can I help?"),
    ("Hello, can you help me with some pictures?", "Of course! What would you like?"),
    ("I'm writing a story for my little brother.", "Lovely! I can draw pictures for it if you like."),
    ("Good morning!", "Good morning! What can I do for you today?"),
    ("I need an icon for my app.", "Happy to help. Tell me what it should show."),
]
THANKS = [("Thanks, that's great!", "You're welcome! Let me know if you need anything else."),
          ("Perfect, thank you.", "Glad you like it!")]


def chat_conversations(rng: random.Random, count: int, image_size: int = 64, split: str = "train"
                       ) -> Iterator[list[dict]]:
    emoji = emoji_images(split, image_size)
    for _ in range(count):
        opener, greeting = rng.choice(OPENERS)
        messages = [{"role": "user", "content": opener}, {"role": "assistant", "content": greeting}]
        if rng.random() < 0.5:
            name, image = rng.choice(emoji)
            messages += [
                {"role": "user", "content": f"Can you draw {article(name)} {name}?"},
                {"role": "assistant", "content": [{"type": "text", "text": f"Here is {article(name)} {name}:"},
                                                  {"type": "image", "image": image}]},
                {"role": "user", "content": rng.choice(("What did you draw?", "What is it again?"))},
                {"role": "assistant", "content": f"I drew {article(name)} {name}."},
            ]
        else:
            scene = random_scene(rng)
            messages += [
                {"role": "user", "content": drawing_prompt(scene, rng)},
                {"role": "assistant", "content": [{"type": "text", "text": described_reply(scene, rng)},
                                                  {"type": "image", "image": render(scene, image_size)}]},
            ]
            question, answer = rng.choice(questions(scene, rng))
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if rng.random() < 0.5:
            thanks, reply = rng.choice(THANKS)
            messages += [{"role": "user", "content": thanks}, {"role": "assistant", "content": reply}]
        yield messages
