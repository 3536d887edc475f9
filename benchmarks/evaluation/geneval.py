"""Text-to-image on the shapes world, GenEval-style: prompts by category, checked by the detector.

Prompts come from scenes drawn with an evaluation seed (training used other seeds) and use
the training data's phrasing ("Draw a small red circle on the left."), so the score is about
following the prompt, not about parsing new wording. Each category checks one property:

- single_object: one shape, of the asked kind, and nothing else;
- two_objects: exactly the two asked kinds;
- counting: exactly as many shapes as asked (1-3);
- colours: one shape of the asked colour;
- position: one shape at the asked place;
- colour_attribution: two shapes of different kinds and colours, each kind in its own colour.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import torch
from PIL import Image

from benchmarks.evaluation.common import EvalSettings, first_image, image_config, replies
from generation import GenerationConfig
from vlm.image_io import images_to_tensor, tensor_to_pil
from vlm.tokenizer import HybridTokenizer
from vlm.unified_model import UnifiedVLM
from worlds.english import article
from worlds.shapes import DRAW_REQUESTS, Shape, describe, position_name, random_scene, render
from worlds.shapes_detector import detect

CATEGORIES = ("single_object", "two_objects", "counting", "colours", "position", "colour_attribution")


def _scene(category: str, rng: random.Random) -> list[Shape]:
    if category in ("single_object", "colours", "position"):
        return random_scene(rng, 1)
    if category == "counting":
        return random_scene(rng, rng.choice((1, 2, 3)))
    while True:  # two shapes; attribution needs different kinds and colours to be checkable
        scene = random_scene(rng, 2)
        if category == "two_objects" or (scene[0].kind != scene[1].kind and scene[0].colour != scene[1].colour):
            return scene


def prompt_for(scene: list[Shape]) -> str:
    subject = describe(scene).rstrip(".")
    return f"Draw {subject[0].lower()}{subject[1:]}."


def check(category: str, scene: list[Shape], image: Image.Image | None) -> bool:
    if image is None:
        return False
    found = detect(image)
    if category == "single_object":
        return len(found) == 1 and found[0].kind == scene[0].kind
    if category == "two_objects":
        return sorted(d.kind for d in found) == sorted(s.kind for s in scene)
    if category == "counting":
        return len(found) == len(scene)
    if category == "colours":
        return len(found) == 1 and found[0].colour == scene[0].colour
    if category == "position":
        return len(found) == 1 and found[0].position == position_name(scene[0])
    if category == "colour_attribution":
        colour_of = {d.kind: d.colour for d in found}
        return len(found) == 2 and all(colour_of.get(s.kind) == s.colour for s in scene)
    raise ValueError(f"unknown category {category!r}")


def prompts(settings: EvalSettings) -> list[tuple[str, list[Shape]]]:
    """(category, scene) pairs, the same for every model and setting."""
    rng = random.Random(f"geneval-{settings.seed}")
    return [(category, _scene(category, rng)) for category in CATEGORIES for _ in range(settings.geneval_prompts)]


@torch.no_grad()
def ceiling(image_tokenizer: HybridTokenizer, settings: EvalSettings, use_residual: bool) -> dict[str, float]:
    """The same checks on the image tokenizer's reconstructions of the true renders: the best
    any decoder could score when it always picks the right codes (and, with the residual, the
    right residual)."""
    cases = prompts(settings)
    pixels = images_to_tensor([render(scene) for _, scene in cases], image_tokenizer.config.image_size)
    tokens = image_tokenizer.encode_pixels(pixels.to(image_tokenizer.device))
    images = tensor_to_pil(image_tokenizer.decode(tokens, use_residual=use_residual))
    correct: dict[str, list[bool]] = {category: [] for category in CATEGORIES}
    for (category, scene), image in zip(cases, images):
        correct[category].append(check(category, scene, image))
    result = {category: sum(values) / len(values) for category, values in correct.items()}
    result["overall"] = sum(result[category] for category in CATEGORIES) / len(CATEGORIES)
    result["drew_image"] = 1.0
    return result


# Drawing k of a prompt samples with the evaluation's seed + k * DRAW_SEED_STRIDE (plus the batch
# offset every batch gets), so drawing 0 is the one-draw evaluation's own and no two drawings share noise.
DRAW_SEED_STRIDE = 1_000_000


def drawing_config(config: GenerationConfig, draw: int) -> GenerationConfig:
    """`config` for drawing `draw` of every prompt (the batch offset is added per batch, as `replies` does)."""
    return replace(config, seed=None if config.seed is None else config.seed + draw * DRAW_SEED_STRIDE)


def run(model: UnifiedVLM, settings: EvalSettings, cfg_scale: float, residual_steps: int,
        on_image: Callable[[str, int, Image.Image | None], None] | None = None, draws: int = 1) -> dict:
    """Accuracy per category, "overall" (mean over categories) and "drew_image" (share of
    replies with an image at all), each the mean over `draws` drawings of every prompt: on one
    drawing of 144 prompts a model's overall is uncertain by about 0.04 (the default model of
    2026-12-06 scored 0.569 on drawing 0 and 0.512 over four), so two models compared on one
    drawing are often two seeds compared. With draws > 1 the result also holds
    "first_draw" (drawing 0's scores, the one-draw number) and "overall_per_draw". `on_image`
    sees drawing 0 only."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    cases = prompts(settings)
    if len(cases) >= DRAW_SEED_STRIDE:
        raise ValueError(f"{len(cases)} prompts would make drawings share seeds (at most {DRAW_SEED_STRIDE - 1})")
    conversations = [[{"role": "user", "content": prompt_for(scene)}] for _, scene in cases]
    config = image_config(settings, cfg_scale=cfg_scale, residual_steps=residual_steps)
    per_draw = []
    for draw in range(draws):
        answers = replies(model, conversations, drawing_config(config, draw), settings.batch_size,
                          f"geneval cfg {cfg_scale:g}" + (f", drawing {draw + 1} of {draws}" if draws > 1 else ""))
        correct: dict[str, list[bool]] = {category: [] for category in CATEGORIES}
        drew = 0
        for index, ((category, scene), reply) in enumerate(zip(cases, answers)):
            image = first_image(reply)
            drew += image is not None
            correct[category].append(check(category, scene, image))
            if on_image is not None and draw == 0:
                on_image(category, index, image)
        scores = {category: sum(values) / len(values) for category, values in correct.items()}
        scores["overall"] = sum(scores[category] for category in CATEGORIES) / len(CATEGORIES)
        scores["drew_image"] = drew / len(cases)
        per_draw.append(scores)
    result = {key: sum(scores[key] for scores in per_draw) / draws for key in per_draw[0]}
    if draws > 1:
        result["draws"] = draws
        result["first_draw"] = per_draw[0]
        result["overall_per_draw"] = [scores["overall"] for scores in per_draw]
    return result


# Requests for one shape in words no training conversation uses (training asks in
# worlds.shapes.DRAW_REQUESTS), alone or after a chat opener, as the first users asked;
# and, as the control, the same shapes asked for in the training phrasing. The headline prompts
# above keep the training phrasing on purpose; these measure how far that carries.
OTHER_WORDINGS = ("I'd like a picture of {}.", "Could you sketch {} for me?", "Can I see {}?",
                  "Paint {}, please.", "Draw me {}.", "Create an image of {}.")
CHAT_OPENERS = (("I'm making a birthday card for my sister.", "How lovely! What should go on it?"),
                ("Hey, can you help me with a sign for my door?", "Sure! What would you like on it?"),
                ("I'm teaching my son his colours.", "That's a nice thing to do together. How can I help?"),
                ("We're designing a logo for our club.", "Fun! Tell me what you have in mind."))
CHAT_REQUESTS = ("Can you draw {} for it?", "Could you make {} for that?", "Would you draw {} for me?")
# "after_drawing": the training phrasing again, but as the next request after the model drew
# another shape (of another kind and colour): a new drawing, not an edit of the earlier one.
WORDINGS = ("trained", "direct", "mid_chat", "after_drawing")


def other_words_prompts(settings: EvalSettings) -> list[tuple[str, Shape, list[dict]]]:
    """(wording, shape, conversation): the same for every model and setting, and the same
    shapes for each wording."""
    rng = random.Random(f"geneval-other-words-{settings.seed}")
    shapes = [random_scene(rng, 1)[0] for _ in range(settings.geneval_prompts)]
    cases = []
    for wording in WORDINGS:
        for shape in shapes:
            subject = f"{article(shape.colour)} {shape.colour} {shape.kind}"
            if wording == "mid_chat":
                opener, greeting = rng.choice(CHAT_OPENERS)
                conversation = [{"role": "user", "content": opener}, {"role": "assistant", "content": greeting},
                                {"role": "user", "content": rng.choice(CHAT_REQUESTS).format(subject)}]
            elif wording == "after_drawing":
                earlier = random_scene(rng, 1)[0]
                while earlier.kind == shape.kind or earlier.colour == shape.colour:
                    earlier = random_scene(rng, 1)[0]
                earlier_subject = f"{article(earlier.colour)} {earlier.colour} {earlier.kind}"
                drawn = [{"type": "text", "text": "Here it is:"}, {"type": "image", "image": render([earlier])}]
                conversation = [{"role": "user", "content": rng.choice(DRAW_REQUESTS).format(earlier_subject)},
                                {"role": "assistant", "content": drawn},
                                {"role": "user", "content": rng.choice(DRAW_REQUESTS).format(subject)}]
            else:
                templates = DRAW_REQUESTS if wording == "trained" else OTHER_WORDINGS
                conversation = [{"role": "user", "content": rng.choice(templates).format(subject)}]
            cases.append((wording, shape, conversation))
    return cases


def shape_as_asked(shape: Shape, image: Image.Image | None) -> bool:
    """Exactly one shape, of the asked kind and colour (size and place were not asked for)."""
    return check("single_object", [shape], image) and check("colours", [shape], image)


def other_words(model: UnifiedVLM, settings: EvalSettings, cfg_scale: float, residual_steps: int
                ) -> dict[str, float]:
    """Share of replies that draw exactly one shape of the asked kind and colour, per wording
    ("trained": the training phrasing, the control; "direct": other words; "mid_chat": other
    words after a chat opener; "after_drawing": the training phrasing after an earlier drawing
    of another shape), "overall" (the two in other words) and "drew_image"."""
    cases = other_words_prompts(settings)
    config = image_config(settings, cfg_scale=cfg_scale, residual_steps=residual_steps)
    answers = replies(model, [conversation for _, _, conversation in cases], config, settings.batch_size,
                      "geneval in other words")
    correct: dict[str, list[bool]] = {wording: [] for wording in WORDINGS}
    for (wording, shape, _), reply in zip(cases, answers):
        correct[wording].append(shape_as_asked(shape, first_image(reply)))
    result = {wording: sum(values) / len(values) for wording, values in correct.items()}
    result["overall"] = (result["direct"] + result["mid_chat"]) / 2
    result["drew_image"] = sum(first_image(reply) is not None for reply in answers) / len(answers)
    return result
