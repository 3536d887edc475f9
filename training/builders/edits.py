"""Edit conversations: change an uploaded or an earlier drawn image, one request at a time.

Shapes world: recolour, add, remove, move or resize one shape, on an upload or on the
model's own drawing, in chains of up to three edits. OpenMoji: bigger, smaller, to one side,
two of them. Every target image is exact (rendered from the edited scene or transformed).

A shapes-world reply says what the new picture shows before drawing it ("Done: a large green
star at the top."): the drawing is then conditioned on a description, which the model draws
from far better than it copies from a source image (an edit of one shape kept the requested
colour but lost the shape's kind or place; docs/default_model, "Replies that say what they draw").
The first edit of an uploaded picture also says what the upload shows, in the words of a caption,
before the new description ("A large purple heart on the right. Done: a large blue heart on the
right."): the edit in words then changes a description in the context, where the model otherwise
had to read the picture and change it in one go (the shipped model named the edited scene in 9 of
48 single edits, while it reads one-shape pictures right in nearly every question).

Edits in words (`edit_word_conversations`): a scene told in words, an edit, and the edited scene
told back, text only. Most wrong edits were wrong in words before they were drawn (the shipped model
named the edited scene in 9 of 48 single edits; on one-shape uploads 14 of 23 replies changed what was
not asked or left out what was), and an image conversation spends ~300 positions on pictures for the
one sentence that carries the change; a word edit spends ~60 on that sentence alone.
Trained with a text KL term (`--text-kl-weight`), their mix source needs `text_kl: false`: the KL
replaces the cross-entropy of text-only chats, and leg f16 learnt none of them (docs/default_model).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from worlds.english import article
from worlds.openmoji import emoji_images
from worlds.scene_edits import (
    EMOJI_EDITS,
    WORD_EDIT_QUESTIONS,
    WORD_SCENE_OPENERS,
    edit_chain,
    edit_in_words,
    emoji_edit,
)
from worlds.shapes import describe, described_reply, drawing_prompt, random_scene, render

EDIT_REPLIES = ("Here it is:", "Done:", "Sure:", "Here you go:")
UPLOAD_OPENERS = ("", "Here is my picture. ", "Look at this. ")


def _reply(rng: random.Random, image, scene: list | None = None, source: list | None = None) -> dict:
    """The reply's lead, then (for a shapes scene) what the picture shows, then the picture; with a
    `source` scene, first what that (uploaded) picture shows."""
    text = rng.choice(EDIT_REPLIES) if scene is None else described_reply(scene, rng)
    if source is not None:
        text = f"{describe(source)} {text}"
    return {"role": "assistant", "content": [{"type": "text", "text": text}, {"type": "image", "image": image}]}


def shapes_edit_conversation(rng: random.Random, image_size: int = 64) -> list[dict]:
    """A scene (uploaded, or drawn on request) and 1-3 edits, each on the result of the last."""
    scene = random_scene(rng)
    chain = edit_chain(scene, rng, rng.choice((1, 1, 2, 3)))
    first = chain[0]
    uploaded = rng.random() < 0.5
    if uploaded:
        messages = [{"role": "user", "content": [
            {"type": "image", "image": render(scene, image_size)},
            {"type": "text", "text": rng.choice(UPLOAD_OPENERS) + first.request}]}]
    else:
        messages = [{"role": "user", "content": drawing_prompt(scene, rng)},
                    _reply(rng, render(scene, image_size), scene),
                    {"role": "user", "content": first.request}]
    messages.append(_reply(rng, render(list(first.after), image_size), list(first.after),
                           source=scene if uploaded else None))
    for edit in chain[1:]:
        after = list(edit.after)
        messages += [{"role": "user", "content": edit.request}, _reply(rng, render(after, image_size), after)]
    return messages


def edit_word_conversation(rng: random.Random) -> list[dict]:
    """A scene in words, then 1-3 edits, each answered with the edited scene in words (no image)."""
    scene = random_scene(rng)
    chain = edit_chain(scene, rng, rng.choice((1, 1, 2, 3)))
    opener = rng.choice(WORD_SCENE_OPENERS)
    messages = [{"role": "user", "content": edit_in_words(chain[0], opener, rng.choice(WORD_EDIT_QUESTIONS))}]
    for index, edit in enumerate(chain):
        if index:
            messages.append({"role": "user", "content": f"{edit.request} What now?"})
        messages.append({"role": "assistant", "content": describe(list(edit.after))})
    return messages


def edit_word_conversations(rng: random.Random, count: int) -> Iterator[list[dict]]:
    for _ in range(count):
        yield edit_word_conversation(rng)


def emoji_edit_conversation(rng: random.Random, emoji: list, image_size: int = 64) -> list[dict]:
    name, image = rng.choice(emoji)
    kind = rng.choice(list(EMOJI_EDITS))
    request = rng.choice(EMOJI_EDITS[kind])
    if rng.random() < 0.5:
        messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": request}]}]
    else:
        messages = [{"role": "user", "content": f"Draw {article(name)} {name}."},
                    _reply(rng, image), {"role": "user", "content": request}]
    messages.append(_reply(rng, emoji_edit(image, kind)))
    return messages


def edit_conversations(rng: random.Random, count: int, image_size: int = 64, split: str = "train",
                       emoji_share: float = 0.25) -> Iterator[list[dict]]:
    emoji = emoji_images(split, image_size) if emoji_share > 0 else []
    for _ in range(count):
        if emoji and rng.random() < emoji_share:
            yield emoji_edit_conversation(rng, emoji, image_size)
        else:
            yield shapes_edit_conversation(rng, image_size)
