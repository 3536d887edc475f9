"""Step-by-step conversations: a request for a drawing, answered by numbered steps, each with its image."""

from __future__ import annotations

import random
from collections.abc import Iterator

from worlds.step_drawings import PROCEDURES, REQUESTS, step_images


def steps_conversations(rng: random.Random, count: int, image_size: int = 64) -> Iterator[list[dict]]:
    for _ in range(count):
        subject = rng.choice(list(PROCEDURES))
        steps = PROCEDURES[subject](rng)
        content = [{"type": "text", "text": f"Sure! Here is how to draw {subject}.\n"}]
        for number, ((sentence, _), image) in enumerate(zip(steps, step_images(steps, image_size)), start=1):
            content += [{"type": "text", "text": f"Step {number}: {sentence}\n"}, {"type": "image", "image": image}]
        yield [{"role": "user", "content": rng.choice(REQUESTS).format(subject=subject)},
               {"role": "assistant", "content": content}]
