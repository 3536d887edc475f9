"""A procedural shapes world: scenes of coloured shapes, rendered, described and asked about.

Everything is exact and seeded, so the same code makes training data, evaluation prompts
and the ground truth a colour-segmentation detector is checked against. Colours are far
apart in RGB and shapes are drawn flat on white, so a scene can be read back from pixels.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from worlds.english import article

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 120, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "heart", "diamond")
SIZES = {"small": 0.22, "large": 0.38}  # share of the canvas side
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
POSITIONS = {"on the left": (0.27, 0.5), "on the right": (0.73, 0.5), "at the top": (0.5, 0.27),
             "at the bottom": (0.5, 0.73), "in the middle": (0.5, 0.5)}
RENDER_SCALE = 4  # draw at 4x and downsample: smooth edges at 64px
# How a user asks for a drawing of a scene (`drawing_prompt`), and how the assistant hands it over.
# The evaluation keeps other wordings out of this list (benchmarks/evaluation/geneval.py,
# OTHER_WORDINGS) to measure how far these carry.
DRAW_REQUESTS = ("Draw {}.", "Please draw {}.", "Can you draw {}?", "Show me {}.", "Make a picture of {}.",
                 "Could you draw {}?", "I want {}.", "Sketch {}.", "Give me {}.", "Can you make {}?",
                 "I need a drawing of {}.", "Draw {}, please.")
DRAW_REPLIES = ("Here it is:", "Sure:", "Here you go:", "Done:")


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    x: float  # centre, share of the canvas width
    y: float

    @property
    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.kind}"


def _polygon(kind: str, cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    if kind == "square":
        r = radius * 0.85
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == "triangle":
        return [(cx + radius * math.cos(math.radians(a)), cy - radius * math.sin(math.radians(a)))
                for a in (90, 210, 330)]
    if kind == "diamond":
        return [(cx, cy - radius), (cx + radius * 0.7, cy), (cx, cy + radius), (cx - radius * 0.7, cy)]
    if kind == "star":
        points = []
        for index in range(10):
            angle = math.radians(90 + index * 36)
            r = radius if index % 2 == 0 else radius * 0.45
            points.append((cx + r * math.cos(angle), cy - r * math.sin(angle)))
        return points
    if kind == "heart":
        points = []
        for index in range(40):
            t = 2 * math.pi * index / 40
            hx = 16 * math.sin(t) ** 3
            hy = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((cx + hx * radius / 17, cy - hy * radius / 17 - radius * 0.05))
        return points
    raise ValueError(f"unknown shape {kind!r}; known: {', '.join(SHAPES)}")


def draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, side: int) -> None:
    """Draw one shape onto a canvas `side` pixels wide."""
    cx, cy = shape.x * side, shape.y * side
    radius = SIZES[shape.size] * side / 2
    fill = COLOURS[shape.colour]
    if shape.kind == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    else:
        draw.polygon(_polygon(shape.kind, cx, cy, radius), fill=fill)


def render(shapes: list[Shape], size: int = 64) -> Image.Image:
    canvas = Image.new("RGB", (size * RENDER_SCALE, size * RENDER_SCALE), "white")
    draw = ImageDraw.Draw(canvas)
    for shape in shapes:
        draw_shape(draw, shape, size * RENDER_SCALE)
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def random_shape(rng: random.Random, position: str | None = None, **fixed) -> Shape:
    name = position or rng.choice(list(POSITIONS))
    x, y = POSITIONS[name]
    return Shape(fixed.get("kind") or rng.choice(SHAPES), fixed.get("colour") or rng.choice(list(COLOURS)),
                 fixed.get("size") or rng.choice(list(SIZES)), x, y)


def position_name(shape: Shape) -> str:
    return min(POSITIONS, key=lambda name: (POSITIONS[name][0] - shape.x) ** 2 + (POSITIONS[name][1] - shape.y) ** 2)


def random_scene(rng: random.Random, count: int | None = None) -> list[Shape]:
    """1-3 shapes at distinct positions whose boxes keep apart (several shapes never use the middle)."""
    count = count or rng.choice((1, 1, 2, 2, 3))
    while True:
        if count == 1:
            names = [rng.choice(list(POSITIONS))]
        else:
            names = rng.sample([name for name in POSITIONS if name != "in the middle"], count)
        scene = [random_shape(rng, name) for name in names]
        if not any(overlap(first, second) for index, first in enumerate(scene) for second in scene[index + 1:]):
            return scene


def overlap(first: Shape, second: Shape) -> bool:
    reach = (SIZES[first.size] + SIZES[second.size]) / 2  # sum of the two half-sides
    return abs(first.x - second.x) < reach and abs(first.y - second.y) < reach


def describe(shapes: list[Shape]) -> str:
    """One sentence that names every shape and where it is."""
    parts = [f"a {shape.phrase} {position_name(shape)}" for shape in shapes]
    if len(parts) == 1:
        return f"{parts[0][0].upper()}{parts[0][1:]}."
    return f"{', '.join(parts[:-1]).capitalize()} and {parts[-1]}."


def described_reply(shapes: list[Shape], rng: random.Random) -> str:
    """What the assistant says before drawing `shapes`: a lead and what the picture will show
    ("Done: a large green star at the top."), so the drawing is conditioned on its own description."""
    sentence = describe(shapes)
    return f"{rng.choice(DRAW_REPLIES)} {sentence[0].lower()}{sentence[1:]}"


def names_exactly(text: str, key: list[tuple[str, str, str, str]]) -> bool:
    """Whether `text`'s last sentence names exactly the shapes of `key` (`shapes_detector.scene_key`'s
    form), each with its size, colour, kind and place, and no other (one comma or "and" between two
    shapes): what a reply that says what it draws should say, checked against its picture or the
    asked-for scene. Only the last sentence, since the picture follows it (an edit of an upload
    first says what the upload shows)."""
    text = text.strip().rsplit(". ", 1)[-1]
    return (bool(key) and text.count(",") + text.count(" and ") == len(key) - 1
            and all(f"{size} {colour} {kind} {place}" in text for kind, colour, size, place in key))


def questions(shapes: list[Shape], rng: random.Random, restate: bool = False) -> list[tuple[str, str]]:
    """Question/answer pairs a viewer of the image can answer exactly.

    With `restate`, an answer names what was asked about before the answer ("The square is red."
    rather than "It is red."). Read alone for 600 steps, the model came to caption two-shape
    pictures with each colour beside its own kind (95% of shapes) while it still answered "What
    colour is the square?" at chance among the shapes present: it binds where the two words sit
    side by side, so a restated answer puts the asked-about word next to the answer."""
    pairs = [("How many shapes are there?", f"There {'is' if len(shapes) == 1 else 'are'} "
                                             f"{NUMBER_WORDS[len(shapes)]}.")]
    kinds = [shape.kind for shape in shapes]
    colours = [shape.colour for shape in shapes]
    for shape in shapes:
        if kinds.count(shape.kind) == 1:
            subject = f"The {shape.kind} is" if restate else "It is"
            pairs.append((f"What colour is the {shape.kind}?", f"{subject} {shape.colour}."))
            pairs.append((f"Where is the {shape.kind}?", f"{subject} {position_name(shape)}."))
        if colours.count(shape.colour) == 1:
            subject = f"The {shape.colour} one is" if restate else "It is"
            pairs.append((f"What shape is the {shape.colour} one?", f"{subject} a {shape.kind}."))
    rng.shuffle(pairs)
    return pairs


def place_questions(shapes: list[Shape], rng: random.Random, restate: bool = False) -> list[tuple[str, str]]:
    """Questions that name a place and ask what is there ("What shape is on the left?"): reading
    one place of the picture. The default model of 2026-12-07 answered "What shape is the red
    one?" about two-shape pictures in 0.50 of questions, what a guess among the shapes present
    scores, while it read a lone shape's kind every time: it knows which kinds a picture holds
    but not where each is. `questions` never asks by place; these do, one per shape. With
    `restate`, the answer names the place first, as `questions` does."""
    pairs = []
    for shape in shapes:
        place = position_name(shape)
        subject = f"The shape {place} is" if restate else "It is"
        thing = f"{article(shape.phrase)} {shape.phrase}"
        pairs.append(rng.choice([(f"What is {place}?", f"{place.capitalize()} is {thing}." if restate
                                  else f"{thing.capitalize()}."),
                                 (f"What shape is {place}?", f"{subject} {article(shape.kind)} {shape.kind}."),
                                 (f"What colour is the shape {place}?", f"{subject} {shape.colour}.")]))
    rng.shuffle(pairs)
    return pairs


def drawing_prompt(shapes: list[Shape], rng: random.Random) -> str:
    """A request to draw this scene, in one of several phrasings.

    A single shape's size and place are each named half the time, as people ask ("Draw a red
    circle."): the render then shows one size and place of the many the request allows. A
    model that only ever saw all four named drew one shape of the asked kind and colour for 4,
    3 and 1 of 24 such requests in the training templates, in other words and mid-chat; trained
    on these, 9, 9 and 4 (docs/default_model, "Asked in other words")."""
    if len(shapes) == 1:
        shape = shapes[0]
        named = shape.phrase if rng.random() < 0.5 else f"{shape.colour} {shape.kind}"
        subject = f"{article(named)} {named}"
        if rng.random() < 0.5:
            subject += f" {position_name(shape)}"
    else:
        subject = describe(shapes).rstrip(".")
        subject = subject[0].lower() + subject[1:]
    return rng.choice(DRAW_REQUESTS).format(subject)
