"""Image edits with an exact answer: shapes-world scene edits and OpenMoji layout edits.

A shapes-world edit changes one shape of a scene (recolour, add, remove, move, resize) and
says so in words; the edited scene is the ground truth, so the same code makes training
conversations and the evaluation's expected results (the detector checks that the change
happened and nothing else changed). Emoji edits are the transformations that are well
defined on any rendered emoji: bigger, smaller, moved to one side, two of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from PIL import Image

from worlds.shapes import COLOURS, POSITIONS, SIZES, Shape, describe, overlap, position_name, random_shape

EDIT_KINDS = ("recolour", "add", "remove", "move", "resize")
# An edit told in words: the scene, the request, and a question that asks for the result in words.
WORD_SCENE_OPENERS = ("My picture shows", "I have a picture of", "Picture this:", "Imagine a picture of")
WORD_EDIT_QUESTIONS = ("What would it show then?", "Tell me in words what it would show.",
                       "Describe the result in words.", "No need to draw it: what would it show?")


@dataclass(frozen=True)
class SceneEdit:
    kind: str  # one of EDIT_KINDS
    request: str  # what the user asks, e.g. "Make the circle blue."
    before: tuple[Shape, ...]
    after: tuple[Shape, ...]


def reference(shape: Shape, scene: list[Shape] | tuple[Shape, ...]) -> str:
    """The shortest unambiguous way to name `shape` in `scene`: "the circle", "the red circle",
    or "the red circle on the left"."""
    others = [other for other in scene if other != shape]
    if all(other.kind != shape.kind for other in others):
        return f"the {shape.kind}"
    if all((other.kind, other.colour) != (shape.kind, shape.colour) for other in others):
        return f"the {shape.colour} {shape.kind}"
    return f"the {shape.colour} {shape.kind} {position_name(shape)}"


def edit_in_words(edit: SceneEdit, opener: str = WORD_SCENE_OPENERS[0], question: str = WORD_EDIT_QUESTIONS[0]) -> str:
    """A request that tells the scene before `edit` in words and asks for the edited scene in words:
    the edit without the picture, so training can teach the change alone and the evaluation can tell
    an edit misread from one misdrawn."""
    told = describe(list(edit.before))
    return f"{opener} {told[0].lower()}{told[1:]} {edit.request} {question}"


def _fits(shape: Shape, others: list[Shape]) -> bool:
    return all(not overlap(shape, other) for other in others)


def _free_positions(scene: list[Shape], size: str, ignore: Shape | None = None) -> list[str]:
    """Places where a shape of `size` fits without touching the rest of the scene."""
    others = [shape for shape in scene if shape != ignore]
    free = []
    for name, (x, y) in POSITIONS.items():
        if name == "in the middle" and others:
            continue  # scenes with several shapes never use the middle (as random_scene)
        if _fits(Shape("circle", "red", size, x, y), others):
            free.append(name)
    return free


def _options(scene: list[Shape]) -> list[str]:
    options = ["recolour", "move", "resize"]
    if len(scene) < 3 and _free_positions(scene, "small"):
        options.append("add")
    if len(scene) > 1:
        options.append("remove")
    return options


def random_edit(scene: list[Shape] | tuple[Shape, ...], rng: random.Random, kind: str | None = None
                ) -> SceneEdit | None:
    """One edit of `scene` (of `kind`, or of any kind that applies); None if no edit of that kind fits."""
    if kind is not None and kind not in EDIT_KINDS:
        raise ValueError(f"unknown edit {kind!r}; known: {', '.join(EDIT_KINDS)}")
    scene = list(scene)
    kinds = [kind] if kind else rng.sample(_options(scene), len(_options(scene)))
    for chosen in kinds:
        for target in rng.sample(scene, len(scene)):
            edit = _edit(scene, chosen, target, rng)
            if edit is not None:
                return edit
    return None


def _edit(scene: list[Shape], kind: str, target: Shape, rng: random.Random) -> SceneEdit | None:
    name = reference(target, scene)
    after = list(scene)
    if kind == "recolour":
        colour = rng.choice([colour for colour in COLOURS if colour != target.colour])
        after[scene.index(target)] = replace(target, colour=colour)
        request = rng.choice(("Make {t} {c}.", "Now make {t} {c}.", "Change the colour of {t} to {c}.",
                              "Colour {t} {c} instead.")).format(t=name, c=colour)
    elif kind == "add":
        if len(scene) >= 3:
            return None
        free = _free_positions(scene, "small") + _free_positions(scene, "large")
        if not free:
            return None
        place = rng.choice(free)
        sizes = [size for size in SIZES if place in _free_positions(scene, size)]
        new = random_shape(rng, place, size=rng.choice(sizes))
        after.append(new)
        request = rng.choice(("Add a {p} {w}.", "Now add a {p} {w}.", "Put a {p} {w} too.")).format(
            p=new.phrase, w=place)
    elif kind == "remove":
        if len(scene) < 2:
            return None
        after.remove(target)
        request = rng.choice(("Remove {t}.", "Take away {t}.", "Now remove {t}.")).format(t=name)
    elif kind == "move":
        free = [place for place in _free_positions(scene, target.size, ignore=target)
                if place != position_name(target) and not (place == "in the middle" and len(scene) > 1)]
        if not free:
            return None
        place = rng.choice(free)
        x, y = POSITIONS[place]
        after[scene.index(target)] = replace(target, x=x, y=y)
        request = rng.choice(("Move {t} {w}.", "Now move {t} {w}.", "Put {t} {w} instead.")).format(t=name, w=place)
    elif kind == "resize":
        size = "large" if target.size == "small" else "small"
        resized = replace(target, size=size)
        if not _fits(resized, [shape for shape in scene if shape != target]):
            return None
        after[scene.index(target)] = resized
        request = rng.choice(("Make {t} {w}.", "Now make {t} {w}.")).format(
            t=name, w="bigger" if size == "large" else "smaller")
    else:
        return None
    return SceneEdit(kind, request, tuple(scene), tuple(after))


def edit_chain(scene: list[Shape], rng: random.Random, length: int) -> list[SceneEdit]:
    """`length` edits, each applied to the result of the one before."""
    chain, current = [], tuple(scene)
    while len(chain) < length:
        edit = random_edit(current, rng)
        if edit is not None:
            chain.append(edit)
            current = edit.after
    return chain


# ----- OpenMoji -----

EMOJI_EDITS = {
    "smaller": ("Make it smaller.", "Now make it smaller.", "Can you make it smaller?"),
    "bigger": ("Make it bigger.", "Now make it bigger.", "Zoom in on it."),
    "left": ("Put it on the left.", "Move it to the left."),
    "right": ("Put it on the right.", "Move it to the right."),
    "two": ("Show two of them.", "Now draw two of them.", "Make it two."),
}


def emoji_edit(image: Image.Image, kind: str) -> Image.Image:
    """The emoji image transformed by `kind` (a key of EMOJI_EDITS), on a white canvas."""
    side = image.width
    image = image.convert("RGB")
    canvas = Image.new("RGB", (side, side), "white")
    small = image.resize((side // 2, side // 2), Image.Resampling.LANCZOS)
    if kind == "smaller":
        canvas.paste(small, (side // 4, side // 4))
    elif kind == "bigger":
        margin = side // 6
        canvas = image.crop((margin, margin, side - margin, side - margin)).resize((side, side),
                                                                                  Image.Resampling.LANCZOS)
    elif kind == "left":
        canvas.paste(small, (0, side // 4))
    elif kind == "right":
        canvas.paste(small, (side - side // 2, side // 4))
    elif kind == "two":
        canvas.paste(small, (0, side // 4))
        canvas.paste(small, (side - side // 2, side // 4))
    else:
        raise ValueError(f"unknown emoji edit {kind!r}; known: {', '.join(EMOJI_EDITS)}")
    return canvas

