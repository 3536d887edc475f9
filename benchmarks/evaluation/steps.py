"""Step-by-step consistency: does each step's image hold the parts named so far?

The model's reply is split into (step sentence, image) pairs. Each sentence is looked up
among the sentences the procedure can produce (its colours vary; positions are taken without
jitter), which gives the parts that step adds. A step is consistent when its image shows every
part named up to it: at least half of each part's visible pixels (in a clean render of those
parts) lie near the part's colour. A step whose sentence matches no procedure sentence, or
that has no image, counts as inconsistent; so do steps the procedure has and the reply lacks.
"""

from __future__ import annotations

import random
import re

import numpy as np
from PIL import Image

from benchmarks.evaluation.common import EvalSettings, image_config, replies
from vlm.unified_model import UnifiedVLM
from worlds.step_drawings import PALETTE, PROCEDURES, REQUESTS, Part, render_parts

STEP_LINE = re.compile(r"Step\s+(\d+)\s*:\s*(.+)", re.IGNORECASE)
COLOUR_DISTANCE = 80.0
PART_SHARE = 0.5


class _Centred(random.Random):
    """A Random whose `uniform` returns the midpoint: procedures without positional jitter."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def sentence_table(subject: str, variants: int = 200) -> tuple[dict[str, list[Part]], int]:
    """Every sentence the procedure for `subject` can say -> the parts it adds; and its fewest steps."""
    table: dict[str, list[Part]] = {}
    fewest = 99
    for seed in range(variants):
        steps = PROCEDURES[subject](_Centred(seed))
        fewest = min(fewest, len(steps))
        for sentence, parts in steps:
            table.setdefault(sentence.strip().lower(), parts)
    return table, fewest


def part_visible(image: Image.Image, parts_so_far: list[Part], part: Part) -> bool:
    size = image.width
    alone = np.asarray(render_parts([part], size)).astype(np.float32)
    together = np.asarray(render_parts(parts_so_far, size)).astype(np.float32)
    colour = np.array(PALETTE[part.colour], dtype=np.float32)
    # The part's pixels that stay visible once later parts are drawn over it.
    mask = (np.linalg.norm(alone - colour, axis=-1) < 30) & (np.linalg.norm(together - colour, axis=-1) < 30)
    if mask.sum() < 4:
        return True  # covered by later parts: nothing to check
    pixels = np.asarray(image.convert("RGB")).astype(np.float32)
    near = np.linalg.norm(pixels - colour, axis=-1) < COLOUR_DISTANCE
    return bool(near[mask].mean() >= PART_SHARE)


def score_reply(parts_of_reply: list[dict], table: dict[str, list[Part]], expected_steps: int) -> tuple[int, int]:
    """(consistent steps, steps counted) for one reply."""
    pairs, text = [], ""
    for part in parts_of_reply:
        if part["type"] == "text":
            text += part["text"]
        else:
            lines = [match.group(2).strip() for match in STEP_LINE.finditer(text)]
            pairs.append((lines[-1] if lines else "", part["image"]))
            text = ""
    consistent, named = 0, []
    for sentence, image in pairs:
        added = table.get(sentence.lower())
        if added is None:
            continue
        named = named + added
        consistent += all(part_visible(image, named, part) for part in named)
    return consistent, max(len(pairs), expected_steps)


def steps_consistency(model: UnifiedVLM, settings: EvalSettings) -> tuple[float, list[dict]]:
    rng = random.Random(f"steps-{settings.seed}")
    cases = [(subject, rng.choice(REQUESTS).format(subject=subject))
             for subject in PROCEDURES for _ in range(settings.steps_requests)]
    conversations = [[{"role": "user", "content": request}] for _, request in cases]
    config = image_config(settings, max_images=6, max_new_tokens=200)
    answers = replies(model, conversations, config, settings.batch_size, "steps")
    records, total_consistent, total_steps = [], 0, 0
    for (subject, request), reply in zip(cases, answers):
        table, fewest = sentence_table(subject)
        consistent, counted = score_reply(reply.parts, table, fewest)
        total_consistent += consistent
        total_steps += counted
        records.append({"request": request, "images": len(reply.images), "consistent": consistent,
                        "steps": counted, "reply": reply.text.strip()})
    return total_consistent / max(total_steps, 1), records
