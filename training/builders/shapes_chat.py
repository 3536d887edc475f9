"""Shapes-world conversations: draw a described scene, caption an image, answer questions about it.

Every drawing reply says what it draws before the picture (`worlds.shapes.described_reply`), so
a request that leaves size or place open is settled in words first, and the picture is drawn
from a full description of itself (docs/default_model, "Replies that say what they draw").
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from worlds.shapes import describe, described_reply, drawing_prompt, place_questions, questions, random_scene, render

CAPTION_QUESTIONS = ("Describe this picture.", "What do you see?", "What is in this image?")


def shapes_conversations(rng: random.Random, count: int, image_size: int = 64) -> Iterator[list[dict]]:
    """A third each: text-to-image, captions, and question answering (1-2 questions per image)."""
    for _ in range(count):
        scene = random_scene(rng)
        image = render(scene, image_size)
        task = rng.random()
        if task < 0.4:
            yield [{"role": "user", "content": drawing_prompt(scene, rng)},
                   {"role": "assistant", "content": [{"type": "text", "text": described_reply(scene, rng)},
                                                     {"type": "image", "image": image}]}]
        elif task < 0.65:
            yield _caption(scene, image, rng)
        else:
            yield _questions(scene, image, rng, (1, 2))


def _caption(scene: list, image, rng: random.Random) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": rng.choice(CAPTION_QUESTIONS)}]},
            {"role": "assistant", "content": describe(scene)}]


def _questions(scene: list, image, rng: random.Random, how_many: tuple[int, ...], by_place: bool = False,
               restate: bool = False) -> list[dict]:
    """Questions about `image` and their answers; with `by_place`, questions that ask what is at a
    place (`place_questions`) join the pool; with `restate`, answers name what was asked about."""
    pool = questions(scene, rng, restate)
    if by_place:
        pool += place_questions(scene, rng, restate)
        rng.shuffle(pool)
    pairs = pool[:rng.choice(how_many)]
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": pairs[0][0]}]},
                {"role": "assistant", "content": pairs[0][1]}]
    for question, answer in pairs[1:]:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages


def shape_readings(rng: random.Random, count: int, image_size: int = 64) -> Iterator[list[dict]]:
    """Pictures of two or three shapes to read: a caption half the time, else one to three questions.

    The shipped model reads a lone shape right in 0.98 of questions but two or three in 0.61 and
    0.56, and 38-42% of its answers there name the asked property of another shape in the picture
    (`vqa_by_shapes`, docs/default_model "Where reading fails"): it sees the shapes, not which
    property goes with which. A source of these alone lets a mix weigh them up. Questions may also
    ask what is at a place (`place_questions`), reading one part of the picture. Answers restate
    what was asked about ("The red one is a triangle."; `questions`' `restate`), so the asked-about
    word sits beside the answer as a caption's colour sits beside its kind: where reading alone
    taught the model to bind (docs/default_model, "Binding is learnable").
    """
    for _ in range(count):
        scene = random_scene(rng, rng.choice((2, 3)))
        image = render(scene, image_size)
        yield _caption(scene, image, rng) if rng.random() < 0.5 else \
            _questions(scene, image, rng, (1, 2, 3), by_place=True, restate=True)


def shape_drawings(rng: random.Random, count: int, shapes: int, image_size: int = 64) -> Iterator[list[dict]]:
    """Requests to draw a scene of exactly `shapes` shapes, in every phrasing.

    A one-shape render is fixed by its prompt (kind, colour, size, place: 360 images), and its
    outline lives in the finest scale's 64 codes, each place a different pattern on the latent
    grid. In the shapes mix they are 16% of conversations, and a model that had seen each ~5
    times drew the asked kind in 2 of 24 (docs/default_model, "Where the shape is lost").
    Two-shape scenes are a quarter of the shapes mix's drawings; a model that drew one shape
    right in 0.6-0.7 of prompts drew both of two in none of 24 (two objects, colour
    attribution, and so every edit and most step images), hence a source of them alone.
    """
    for _ in range(count):
        scene = random_scene(rng, shapes)
        yield [{"role": "user", "content": drawing_prompt(scene, rng)},
               {"role": "assistant", "content": [{"type": "text", "text": described_reply(scene, rng)},
                                                 {"type": "image", "image": render(scene, image_size)}]}]


NEXT_REQUEST_OPENINGS = ("", "", "", "Thanks! ", "Great. ", "Now something else. ", "Another one, please. ")


def follow_up_drawings(rng: random.Random, count: int, image_size: int = 64) -> Iterator[list[dict]]:
    """A drawing, then a new, unrelated drawing asked for in the next turn.

    Every other drawing in the mix that follows an image is an edit of it or the next step of
    it, so a model trained on them took the next request for an edit: after drawing an orange
    diamond, "Draw a blue circle." gave a blue diamond. Asked after an earlier drawing of another
    kind and colour, the shipped model drew the shape as asked for 2 of 24 requests, against 9
    of 24 for the same requests alone (`geneval_other_words`, "after_drawing"). Each scene has
    one shape, or two a quarter of the time, as the singles and pairs sources draw them.
    """
    for _ in range(count):
        first, second = (random_scene(rng, 2 if rng.random() < 0.25 else 1) for _ in range(2))
        request = rng.choice(NEXT_REQUEST_OPENINGS) + drawing_prompt(second, rng)
        yield [{"role": "user", "content": drawing_prompt(first, rng)},
               {"role": "assistant", "content": [{"type": "text", "text": described_reply(first, rng)},
                                                 {"type": "image", "image": render(first, image_size)}]},
               {"role": "user", "content": request},
               {"role": "assistant", "content": [{"type": "text", "text": described_reply(second, rng)},
                                                 {"type": "image", "image": render(second, image_size)}]}]
