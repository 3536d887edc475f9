"""Step-by-step drawings: procedures whose every step is a sentence and the drawing so far.

Every procedure is seeded (colours and small offsets vary) and returns its steps as
(sentence, parts added); a part is a named, single-coloured primitive, so an evaluator can
check that each step's image holds the parts named so far. `REQUESTS` are the ways a user
asks for one, shared by the training conversations and the evaluation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

from worlds.shapes import COLOURS

PALETTE = {**COLOURS, "brown": (130, 80, 40), "black": (20, 20, 20), "pink": (240, 110, 170),
           "light blue": (140, 200, 240), "grey": (150, 160, 175)}
RENDER_SCALE = 4


@dataclass(frozen=True)
class Part:
    name: str  # e.g. "roof"
    kind: str  # "rect", "ellipse" or "triangle"
    colour: str  # a PALETTE name
    box: tuple[float, float, float, float]  # left, top, right, bottom as shares of the canvas


def render_parts(parts: list[Part], size: int = 64) -> Image.Image:
    side = size * RENDER_SCALE
    canvas = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(canvas)
    for part in parts:
        left, top, right, bottom = (value * side for value in part.box)
        fill = PALETTE[part.colour]
        if part.kind == "rect":
            draw.rectangle((left, top, right, bottom), fill=fill)
        elif part.kind == "ellipse":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif part.kind == "triangle":
            draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
        else:
            raise ValueError(f"unknown part kind {part.kind!r}")
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def _jitter(rng: random.Random, amount: float = 0.03) -> float:
    return rng.uniform(-amount, amount)


Step = tuple[str, list[Part]]


def house(rng: random.Random) -> list[Step]:
    walls, roof = rng.choice(["orange", "yellow", "blue"]), rng.choice(["red", "purple", "brown"])
    dx, dy = _jitter(rng), _jitter(rng)
    return [
        (f"Draw a big {walls} square for the walls.", [Part("walls", "rect", walls, (.2 + dx, .45 + dy, .8 + dx, .9))]),
        (f"Put a {roof} triangle on top for the roof.", [Part("roof", "triangle", roof, (.12 + dx, .12 + dy, .88 + dx,
                                                                                        .45 + dy))]),
        ("Add a brown door at the bottom.", [Part("door", "rect", "brown", (.43 + dx, .65 + dy, .57 + dx, .9))]),
        ("Add a light blue window.", [Part("window", "rect", "light blue", (.26 + dx, .52 + dy, .38 + dx, .62 + dy))]),
    ]


def snowman(rng: random.Random) -> list[Step]:
    hat = rng.choice(["black", "red", "blue"])
    dx = _jitter(rng)
    return [
        ("Draw a big grey circle at the bottom.",
         [Part("bottom ball", "ellipse", "grey", (.25 + dx, .6, .75 + dx, .95))]),
        ("Put a smaller circle on top of it.",
         [Part("middle ball", "ellipse", "grey", (.32 + dx, .36, .68 + dx, .64))]),
        ("Add a small circle for the head.", [Part("head", "ellipse", "grey", (.38 + dx, .17, .62 + dx, .39))]),
        ("Give it an orange carrot nose.", [Part("nose", "triangle", "orange", (.47 + dx, .25, .53 + dx, .31))]),
        (f"Finish with a {hat} hat.", [Part("hat", "rect", hat, (.4 + dx, .05, .6 + dx, .18))]),
    ]


def face(rng: random.Random) -> list[Step]:
    head, mouth = rng.choice(["yellow", "orange", "pink"]), rng.choice(["red", "purple"])
    dy = _jitter(rng)
    return [
        (f"Draw a big {head} circle for the head.", [Part("head", "ellipse", head, (.12, .1 + dy, .88, .86 + dy))]),
        ("Add two black eyes.", [Part("left eye", "ellipse", "black", (.3, .3 + dy, .4, .42 + dy)),
                                 Part("right eye", "ellipse", "black", (.6, .3 + dy, .7, .42 + dy))]),
        (f"Draw a {mouth} smile below them.", [Part("mouth", "ellipse", mouth, (.32, .58 + dy, .68, .7 + dy))]),
    ]


def tree(rng: random.Random) -> list[Step]:
    fruit = rng.choice(["red", "orange", "yellow"])
    dx = _jitter(rng)
    return [
        ("Draw a brown trunk.", [Part("trunk", "rect", "brown", (.43 + dx, .55, .57 + dx, .95))]),
        ("Add a big green circle for the leaves.",
         [Part("leaves", "ellipse", "green", (.18 + dx, .08, .82 + dx, .66))]),
        (f"Hang some {fruit} fruit on it.", [Part("fruit", "ellipse", fruit, (.32 + dx, .3, .42 + dx, .4)),
                                             Part("fruit", "ellipse", fruit, (.56 + dx, .22, .66 + dx, .32))]),
    ]


def flower(rng: random.Random) -> list[Step]:
    petals = rng.choice(["pink", "red", "purple", "blue"])
    dx = _jitter(rng)
    return [
        ("Draw a green stem.", [Part("stem", "rect", "green", (.47 + dx, .45, .53 + dx, .95))]),
        (f"Add four {petals} petals at the top.", [
            Part("petal", "ellipse", petals, (.3 + dx, .1, .5 + dx, .3)), Part("petal", "ellipse", petals,
                                                                              (.5 + dx, .1, .7 + dx, .3)),
            Part("petal", "ellipse", petals, (.3 + dx, .3, .5 + dx, .5)), Part("petal", "ellipse", petals,
                                                                              (.5 + dx, .3, .7 + dx, .5))]),
        ("Put a yellow centre in the middle.", [Part("centre", "ellipse", "yellow", (.42 + dx, .22, .58 + dx, .38))]),
    ]


def blocks(rng: random.Random) -> list[Step]:
    colours = rng.sample(["red", "green", "blue", "yellow", "purple", "orange"], rng.choice((3, 4)))
    dx = _jitter(rng)
    steps = []
    for level, colour in enumerate(colours):
        bottom = .95 - level * .22
        sentence = f"Put a {colour} block on the ground." if level == 0 else f"Stack a {colour} block on top."
        steps.append((sentence, [Part(f"{colour} block", "rect", colour, (.35 + dx, bottom - .2, .65 + dx, bottom))]))
    return steps


PROCEDURES: dict[str, Callable[[random.Random], list[Step]]] = {
    "a house": house, "a snowman": snowman, "a face": face, "a tree": tree, "a flower": flower,
    "a tower of blocks": blocks,
}
REQUESTS = ("How do I draw {subject}? Show me step by step.", "Teach me to draw {subject}, one step at a time.",
            "Step by step, how would I draw {subject}?", "Show me how to draw {subject} in steps.")


def step_images(steps: list[Step], image_size: int = 64) -> list[Image.Image]:
    """The drawing after each step."""
    parts: list[Part] = []
    images = []
    for _, added in steps:
        parts = parts + added
        images.append(render_parts(parts, image_size))
    return images
