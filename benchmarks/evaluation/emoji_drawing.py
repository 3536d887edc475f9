"""Emoji text-to-image: does the drawn image show the asked emoji, by an independent classifier?

Prompts name emoji from the held-out OpenMoji split (emoji the VLM never saw, in the
training data's phrasing); the classifier knows every OpenMoji emoji. `emoji_top1` is the
share of images whose top class is the asked emoji; `emoji_top5` the share where it is among
the top five. A reply without an image counts as wrong. The same score on the seen
(training-split) emoji is reported beside it, since a small model is expected to manage
those first. The classifier's own score on the true renders of the same emoji is reported
as the ceiling (many OpenMoji emoji are near-identical variants).
"""

from __future__ import annotations

import random

from PIL import Image

from benchmarks.evaluation.common import EvalSettings, first_image, image_config, replies
from benchmarks.evaluation.emoji_classifier import EmojiClassifier
from vlm.unified_model import UnifiedVLM
from worlds.openmoji import DRAW_REQUESTS, OpenMojiDataset, fill


def emoji_drawing(model: UnifiedVLM, settings: EvalSettings, classifier: EmojiClassifier,
                  split: str = "heldout") -> tuple[dict[str, float], list]:
    rng = random.Random(f"emoji-{split}-{settings.seed}")
    dataset = OpenMojiDataset(split=split, image_size=64)
    renders = {entry.name: Image.fromarray(dataset.images_NHWC[index]) for index, entry in enumerate(dataset.entries)}
    names = sorted(set(renders) & set(classifier.names))
    chosen = rng.sample(names, min(settings.emoji_prompts, len(names)))
    conversations = [[{"role": "user", "content": fill(rng.choice(DRAW_REQUESTS), name)}] for name in chosen]
    answers = replies(model, conversations, image_config(settings), settings.batch_size, f"emoji ({split})")
    images = [first_image(reply) for reply in answers]
    drawn = [index for index, image in enumerate(images) if image is not None]
    ranked = dict(zip(drawn, classifier.top_k([images[index] for index in drawn], 5))) if drawn else {}
    top1 = sum(ranked.get(index, [None])[0] == name for index, name in enumerate(chosen))
    top5 = sum(name in ranked.get(index, []) for index, name in enumerate(chosen))
    samples = [(name, images[index]) for index, name in enumerate(chosen)]
    # The judge's ceiling: the same classifier on the true renders of the asked emoji.
    reference = classifier.top_k([renders[name] for name in chosen], 5)
    result = {"top1": top1 / len(chosen), "top5": top5 / len(chosen), "drew_image": len(drawn) / len(chosen),
              "classifier_top1_on_renders": sum(ranked[0] == name for ranked, name in zip(reference, chosen))
              / len(chosen),
              "classifier_top5_on_renders": sum(name in ranked for ranked, name in zip(reference, chosen))
              / len(chosen)}
    return result, samples
