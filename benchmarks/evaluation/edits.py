"""Edit accuracy: held-out edit requests on shapes-world images, checked by the detector.

An edit is right when the detector reads, in the model's new image, exactly the edited scene:
the requested change happened and nothing else changed. Single edits start from an uploaded
render; chains of three start from an upload too, and each later request edits the model's
own previous image (which goes back into the context as its final block, as in the chat).
A chain is right only when all three of its images are.

`edit_said_right`: the share of single edits whose reply names exactly the edited scene in words
(`worlds.shapes.names_exactly`), for a model that says what it draws before drawing it: it tells
a request misread (wrong words) from a drawing that missed its own words. `edit_by_shapes` splits
both by the number of shapes in the upload: on the default model of 2026-12-07 every edit it got
right started from a one-shape picture, and no reply named the edited scene of a two- or
three-shape one (their shapes come back scrambled, as in reading them: `vqa_by_shapes`).

`edit_words_said_right`: the same single edits with no picture, the scene told in words and the
edited scene asked for in words (`worlds.scene_edits.edit_in_words`), answered greedily in text. Beside
`edit_said_right` it says whether a wrong edit is a change misunderstood or an upload misread.
"""

from __future__ import annotations

import random

from benchmarks.evaluation.common import EvalSettings, first_image, image_config, replies, text_config
from vlm.unified_model import UnifiedVLM
from worlds.scene_edits import edit_chain, edit_in_words, random_edit
from worlds.shapes import names_exactly, random_scene, render
from worlds.shapes_detector import read_scene, scene_key

# Text tokens an edit's reply may spend before its picture. The first edit of an upload is trained to
# caption the upload before the edited scene (training/builders/edits.py): up to ~52 tokens for three
# shapes, past the 32 of other drawn replies, which cut it off before the picture could come.
EDIT_REPLY_TOKENS = 80


def _upload_turn(image, request: str) -> dict:
    return {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": request}]}


def edit_accuracy(model: UnifiedVLM, settings: EvalSettings) -> dict[str, float | dict]:
    rng = random.Random(f"edits-{settings.seed}")
    config = image_config(settings, max_new_tokens=EDIT_REPLY_TOKENS)
    singles = []
    while len(singles) < settings.edit_singles:
        edit = random_edit(random_scene(rng), rng)
        if edit is not None:
            singles.append(edit)
    conversations = [[_upload_turn(render(list(edit.before)), edit.request)] for edit in singles]
    answers = replies(model, conversations, config, settings.batch_size, "edits")
    single_ok = [first_image(reply) is not None and read_scene(first_image(reply)) == scene_key(edit.after)
                 for edit, reply in zip(singles, answers)]
    said_right = [names_exactly(reply.text, scene_key(edit.after)) for edit, reply in zip(singles, answers)]
    told = [[{"role": "user", "content": edit_in_words(edit)}] for edit in singles]
    answers = replies(model, told, text_config(settings, max_new_tokens=48), settings.batch_size, "edits in words")
    said_in_words = [names_exactly(reply.text, scene_key(edit.after)) for edit, reply in zip(singles, answers)]
    by_kind: dict[str, list[bool]] = {}
    for edit, ok in zip(singles, single_ok):
        by_kind.setdefault(edit.kind, []).append(ok)

    chains = [edit_chain(random_scene(rng), rng, 3) for _ in range(settings.edit_chains)]
    histories = [[_upload_turn(render(list(chain[0].before)), chain[0].request)] for chain in chains]
    chain_ok = [True] * len(chains)
    step_ok: list[bool] = []
    for step in range(3):
        answers = replies(model, histories, config, settings.batch_size, f"edit chains, step {step + 1}")
        for index, (chain, reply) in enumerate(zip(chains, answers)):
            image = first_image(reply)
            ok = image is not None and read_scene(image) == scene_key(chain[step].after)
            step_ok.append(ok)
            chain_ok[index] &= ok
            histories[index] = histories[index] + [reply.as_dict()]
            if step < 2:
                histories[index].append({"role": "user", "content": chain[step + 1].request})
    result = {"edit_accuracy": sum(single_ok) / len(single_ok), "edit_said_right": sum(said_right) / len(said_right),
              "edit_words_said_right": sum(said_in_words) / len(said_in_words),
              "edit_chain_accuracy": sum(chain_ok) / len(chain_ok),
              "edit_chain_step_accuracy": sum(step_ok) / len(step_ok)}
    result |= {f"edit_{kind}": sum(values) / len(values) for kind, values in sorted(by_kind.items())}
    result["edit_by_shapes"] = by_shapes(singles, single_ok, said_right, said_in_words)
    return result


def by_shapes(singles: list, drawn_right: list[bool], said_right: list[bool],
              said_in_words: list[bool]) -> dict[str, dict[str, float | int]]:
    """Single edits split by the number of shapes in the upload: how many, drawn right, said right
    (with the upload, and told in words)."""
    split: dict[str, dict[str, float | int]] = {}
    for count in sorted({len(edit.before) for edit in singles}):
        chosen = [index for index, edit in enumerate(singles) if len(edit.before) == count]
        split[str(count)] = {"edits": len(chosen),
                             "accuracy": sum(drawn_right[index] for index in chosen) / len(chosen),
                             "said_right": sum(said_right[index] for index in chosen) / len(chosen),
                             "said_in_words": sum(said_in_words[index] for index in chosen) / len(chosen)}
    return split
