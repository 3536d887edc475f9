"""The shapes world and its detector: the detector must read the generator's own renders."""

from __future__ import annotations

import random

from worlds.shapes import COLOURS, POSITIONS, SHAPES, SIZES, Shape, describe, position_name, random_scene, render
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
