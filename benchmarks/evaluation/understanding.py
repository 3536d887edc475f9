"""Understanding: questions about shapes-world images, and naming emoji from their images.

Answers are greedy and scored by their key word: a VQA answer is right when it contains the
expected colour, shape, number or place and no other candidate of the same kind; an emoji
name is right when the reply contains the emoji's full name.
"""

from __future__ import annotations

import random
import re

from benchmarks.evaluation.common import EvalSettings, replies, text_config
from vlm.unified_model import UnifiedVLM
from worlds.openmoji import emoji_images
from worlds.shapes import (
    COLOURS,
    NUMBER_WORDS,
    POSITIONS,
    SHAPES,
    Shape,
    position_name,
    questions,
    random_scene,
    render,
)

CANDIDATES = {"colour": list(COLOURS), "shape": list(SHAPES), "count": list(NUMBER_WORDS[1:]),
              "position": list(POSITIONS)}


def answer_kind(answer: str) -> tuple[str, str]:
    """(kind, key word) of an expected answer such as "It is red." or "There are two."."""
    text = answer.lower()
    for kind, words in CANDIDATES.items():
        for word in words:
            if re.search(rf"\b{re.escape(word)}\b", text):
                return kind, word
    raise ValueError(f"no key word in {answer!r}")


def said(kind: str, reply: str) -> list[str]:
    """The candidate words of this kind that a reply says."""
    text = reply.lower()
    return [word for word in CANDIDATES[kind] if re.search(rf"\b{re.escape(word)}\b", text)]


def is_correct(expected: str, reply: str) -> bool:
    kind, key = answer_kind(expected)
    return said(kind, reply) == [key]


def vqa_cases(seed: int, count: int) -> list[tuple]:
    """(image, question, expected answer, scene) from one seeded stream: a longer run starts with
    the shorter run's questions, so scores made with fewer questions stay comparable."""
    rng = random.Random(f"vqa-{seed}")
    cases = []
    for _ in range(count):
        scene = random_scene(rng)
        question, answer = rng.choice(questions(scene, rng))
        cases.append((render(scene), question, answer, scene))
    return cases


def names_another_shape(expected: str, reply: str, scene: list[Shape]) -> bool:
    """Whether a wrong answer names the asked property of another shape in the picture (its
    colour, kind or place): the shapes were seen, but not which property goes with which."""
    kind, key = answer_kind(expected)
    if kind == "count":
        return False
    present = {"colour": {shape.colour for shape in scene}, "shape": {shape.kind for shape in scene},
               "position": {position_name(shape) for shape in scene}}[kind] - {key}
    words = said(kind, reply)
    return bool(words) and key not in words and all(word in present for word in words)


def vqa_accuracy(model: UnifiedVLM, settings: EvalSettings) -> tuple[float, list[dict]]:
    cases = vqa_cases(settings.seed, settings.vqa_questions)
    conversations = [[{"role": "user", "content": [{"type": "image", "image": image},
                                                   {"type": "text", "text": question}]}]
                     for image, question, _, _ in cases]
    answers = replies(model, conversations, text_config(settings), settings.batch_size, "vqa")
    records = [{"question": question, "expected": expected, "kind": answer_kind(expected)[0],
                "reply": reply.text.strip(), "correct": is_correct(expected, reply.text), "shapes": len(scene),
                "another_shape_s": names_another_shape(expected, reply.text, scene)}
               for (_, question, expected, scene), reply in zip(cases, answers)]
    return sum(record["correct"] for record in records) / len(records), records


def accuracy_by_kind(records: list[dict]) -> dict[str, dict[str, float | int]]:
    """VQA accuracy per kind of answer (colour, shape, count, position) beside a guess's: one
    overall number hides which property a model reads from an image and which it guesses."""
    by_kind: dict[str, dict[str, float | int]] = {}
    for kind, words in CANDIDATES.items():
        chosen = [record for record in records if record["kind"] == kind]
        if chosen:
            by_kind[kind] = {"accuracy": sum(record["correct"] for record in chosen) / len(chosen),
                             "questions": len(chosen), "chance": 1 / len(words)}
    return by_kind


def accuracy_by_shapes(records: list[dict]) -> dict[str, dict[str, float | int]]:
    """VQA accuracy per number of shapes in the picture, with the share of answers that named
    another shape's colour, kind or place: a model that reads one shape well but cannot tell
    which property belongs to which shape scores near a guess among the shapes present there."""
    by_shapes: dict[str, dict[str, float | int]] = {}
    for count in sorted({record["shapes"] for record in records}):
        chosen = [record for record in records if record["shapes"] == count]
        by_shapes[str(count)] = {"accuracy": sum(record["correct"] for record in chosen) / len(chosen),
                                 "questions": len(chosen),
                                 "another_shape_s": sum(record["another_shape_s"] for record in chosen) / len(chosen)}
    return by_shapes


def emoji_naming_accuracy(model: UnifiedVLM, settings: EvalSettings) -> tuple[float, list[dict]]:
    """On training-split emoji: names can only be known for emoji seen in training."""
    rng = random.Random(f"naming-{settings.seed}")
    chosen = rng.sample(emoji_images("train", 64), settings.naming_images)
    conversations = [[{"role": "user", "content": [{"type": "image", "image": image},
                                                   {"type": "text", "text": "What is this?"}]}]
                     for _, image in chosen]
    answers = replies(model, conversations, text_config(settings), settings.batch_size, "emoji naming")
    records = [{"name": name, "reply": reply.text.strip(), "correct": name.lower() in reply.text.lower()}
               for (name, _), reply in zip(chosen, answers)]
    return sum(record["correct"] for record in records) / len(records), records
