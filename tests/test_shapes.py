"""The shapes world and its detector: the detector must read the generator's own renders."""

from __future__ import annotations

import random

from worlds.shapes import (
    COLOURS,
    DRAW_REQUESTS,
    POSITIONS,
    SHAPES,
    SIZES,
    Shape,
    describe,
    drawing_prompt,
    position_name,
    random_scene,
    render,
)
from worlds.shapes_detector import detect


def test_the_detector_reads_at_least_99_percent_of_random_scenes_exactly():
    correct = 0
    for seed in range(300):
        scene = random_scene(random.Random(seed))
        truth = sorted((shape.kind, shape.colour, shape.size, position_name(shape)) for shape in scene)
        found = sorted((d.kind, d.colour, d.size, d.position) for d in detect(render(scene)))
        correct += truth == found
    assert correct / 300 >= 0.99


def test_every_shape_colour_size_and_position_is_recognised():
    for kind in SHAPES:
        for size in SIZES:
            for colour in COLOURS:
                for name, (x, y) in POSITIONS.items():
                    found = detect(render([Shape(kind, colour, size, x, y)]))
                    assert [(d.kind, d.colour, d.size, d.position) for d in found] == [(kind, colour, size, name)]


def test_scenes_never_overlap_and_descriptions_name_every_shape():
    for seed in range(200):
        scene = random_scene(random.Random(seed))
        assert len(detect(render(scene))) == len(scene)
        sentence = describe(scene)
        assert all(shape.kind in sentence and shape.colour in sentence for shape in scene)


def test_an_empty_canvas_has_no_shapes():
    from PIL import Image

    assert detect(Image.new("RGB", (64, 64), "white")) == []


def test_one_shape_requests_name_colour_and_kind_and_sometimes_leave_size_and_place_open():
    """People ask for "a red circle": the data must hold such requests, not only fully named ones."""
    rng = random.Random(0)
    named_size = named_place = 0
    for _ in range(400):
        shape = random_scene(rng, 1)[0]
        prompt = drawing_prompt([shape], rng)
        assert f"{shape.colour} {shape.kind}" in prompt and " a orange" not in prompt
        assert any(prompt.startswith(template.split("{}")[0]) for template in DRAW_REQUESTS)
        named_size += shape.phrase in prompt
        named_place += position_name(shape) in prompt
    assert 150 < named_size < 250 and 150 < named_place < 250
    two = random_scene(rng, 2)
    assert describe(two).rstrip(".").lower() in drawing_prompt(two, rng).lower()  # scenes are named in full
