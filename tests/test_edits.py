"""Edit operations and edit conversations (issue 9): every edit changes exactly what it says."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from training.builders.edits import edit_conversations, edit_word_conversation, shapes_edit_conversation
from worlds.scene_edits import (
    EDIT_KINDS,
    EMOJI_EDITS,
    WORD_EDIT_QUESTIONS,
    edit_chain,
    edit_in_words,
    emoji_edit,
    random_edit,
)
from worlds.shapes import DRAW_REPLIES, describe, names_exactly, random_scene, render
from worlds.shapes_detector import read_scene, scene_key


def test_each_edit_kind_changes_one_shape_and_the_detector_sees_the_result():
    seen = set()
    for seed in range(150):
        rng = random.Random(seed)
        scene = random_scene(rng)
        edit = random_edit(scene, rng)
        assert edit is not None and edit.kind in EDIT_KINDS
        seen.add(edit.kind)
        before, after = scene_key(edit.before), scene_key(edit.after)
        assert before == scene_key(scene) and before != after
        changed = len(set(before) ^ set(after))
        assert changed == (1 if edit.kind in ("add", "remove") else 2)  # one shape in or out, or one swapped
        assert read_scene(render(list(edit.after))) == after
        assert edit.request.endswith(".") and len(edit.request) > 8
    assert seen == set(EDIT_KINDS)


def test_chains_apply_each_edit_to_the_result_of_the_last():
    rng = random.Random(3)
    chain = edit_chain(random_scene(rng), rng, 3)
    assert len(chain) == 3
    assert all(first.after == second.before for first, second in zip(chain, chain[1:]))


def test_edit_conversations_label_each_new_image_after_its_request():
    conversation = shapes_edit_conversation(random.Random(5))
    roles = [message["role"] for message in conversation]
    assert roles[-1] == "assistant" and "assistant" in roles[:-1] or conversation[0]["content"][0]["type"] == "image"
    for message in conversation:
        if message["role"] == "assistant":
            assert any(part["type"] == "image" for part in message["content"])
    built = list(edit_conversations(random.Random(0), 4, emoji_share=0.0))
    assert len(built) == 4


def test_shapes_edit_replies_say_what_their_picture_shows():
    """The text before each drawn image names exactly the shapes the image holds (read back by the
    detector), so the drawing is conditioned on a description of itself."""
    replies = 0
    for seed in range(20):
        for message in shapes_edit_conversation(random.Random(seed)):
            if message["role"] != "assistant":
                continue
            text, image = message["content"][0]["text"], message["content"][1]["image"]
            assert names_exactly(text, read_scene(image)), text
            replies += 1
    assert replies >= 20


def test_an_upload_edit_says_what_the_upload_shows_before_the_edited_scene():
    """The first reply after an uploaded picture opens with that picture's caption (its exact
    shapes), then the edited scene; an edit of the model's own drawing, already described in the
    context, does not repeat it."""
    uploads = own = 0
    for seed in range(30):
        conversation = shapes_edit_conversation(random.Random(seed))
        first_reply = next(message for message in conversation if message["role"] == "assistant")
        text = first_reply["content"][0]["text"]
        if isinstance(conversation[0]["content"], list):
            source = conversation[0]["content"][0]["image"]
            caption, edited = text.split(". ", 1)
            assert names_exactly(caption + ".", read_scene(source)), text
            assert not names_exactly(text, read_scene(source)) and edited.split(":")[0] + ":" in DRAW_REPLIES
            uploads += 1
        else:
            assert text.count(". ") == 0, text
            own += 1
    assert uploads >= 5 and own >= 5


def test_the_edit_evaluation_leaves_room_for_the_longest_trained_edit_reply(default_text_tokenizer_dir):
    """A caption-first reply on a three-shape upload runs past 32 tokens; cut there, it never draws."""
    from transformers import AutoTokenizer

    from benchmarks.evaluation.edits import EDIT_REPLY_TOKENS

    tokenizer = AutoTokenizer.from_pretrained(default_text_tokenizer_dir)
    longest = 0
    for seed in range(200):
        for message in shapes_edit_conversation(random.Random(seed), image_size=16):
            if message["role"] == "assistant":
                text = " ".join(part["text"] for part in message["content"] if part["type"] == "text")
                longest = max(longest, len(tokenizer(text)["input_ids"]))
    assert 32 < longest <= EDIT_REPLY_TOKENS - 8


def test_emoji_edits_keep_the_canvas_and_reject_unknown_kinds():
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    for kind in EMOJI_EDITS:
        edited = emoji_edit(image, kind)
        assert edited.size == (64, 64)
    assert emoji_edit(image, "smaller").getpixel((2, 2)) == (255, 255, 255)
    assert emoji_edit(image, "two").getpixel((32, 4)) == (255, 255, 255)
    with pytest.raises(ValueError, match="unknown emoji edit"):
        emoji_edit(image, "rotate")
    with pytest.raises(ValueError, match="unknown edit"):
        random_edit(random_scene(random.Random(0)), random.Random(0), kind="rotate")


def test_names_exactly_rejects_a_wrong_missing_or_extra_shape():
    key = [("heart", "green", "large", "at the top"), ("star", "red", "small", "on the left")]
    assert names_exactly("Done: a small red star on the left and a large green heart at the top.", key)
    assert not names_exactly("Done: a small red star on the left and a large blue heart at the top.", key)
    assert not names_exactly("Done: a small red star on the left.", key)
    assert not names_exactly("Done: a small red star on the left, a large green heart at the top and a small "
                             "blue circle in the middle.", key)
    assert not names_exactly("Here it is:", key) and not names_exactly("Here it is:", [])
    # only the last sentence, the one the picture follows, is judged
    assert names_exactly("A large blue heart at the top. Done: a small red star on the left and a large green "
                         "heart at the top.", key)
    assert not names_exactly("A small red star on the left and a large green heart at the top. Done: a small "
                             "red star on the left.", key)


def test_edits_in_words_tell_back_exactly_the_edited_scene_and_draw_nothing():
    """A word edit's replies are text alone, each naming exactly the scene after its request, and the
    first request's scene is told in the user's words (so nothing needs an image to answer)."""
    chained = 0
    for seed in range(40):
        conversation = edit_word_conversation(random.Random(seed))
        assert [message["role"] for message in conversation][:2] == ["user", "assistant"]
        assert all(isinstance(message["content"], str) for message in conversation)
        rng = random.Random(seed)
        scene = random_scene(rng)
        chain = edit_chain(scene, rng, rng.choice((1, 1, 2, 3)))
        assert describe(scene)[1:-1] in conversation[0]["content"] and chain[0].request in conversation[0]["content"]
        told = edit_in_words(chain[0])  # the evaluation's form: the first opener and question
        assert describe(scene)[1:-1] in told and chain[0].request in told and told.endswith(WORD_EDIT_QUESTIONS[0])
        answers = [message["content"] for message in conversation if message["role"] == "assistant"]
        assert len(answers) == len(chain)
        for answer, edit in zip(answers, chain):
            assert names_exactly(answer, scene_key(edit.after)), answer
        chained += len(chain) > 1
    assert chained >= 5
