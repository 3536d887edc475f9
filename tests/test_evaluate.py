"""The evaluation suite: its scorers on known answers, and one quick end-to-end run (tiny model)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import evaluate
from benchmarks.evaluation import geneval
from benchmarks.evaluation.emoji_classifier import EmojiClassifier, EmojiNet, augment
from benchmarks.evaluation.steps import score_reply, sentence_table
from benchmarks.evaluation.understanding import (
    CANDIDATES,
    accuracy_by_kind,
    accuracy_by_shapes,
    answer_kind,
    is_correct,
    names_another_shape,
)
from tests.tiny_vlm import perturbed, tiny_model
from worlds.shapes import Shape, random_scene, render
from worlds.step_drawings import PROCEDURES, step_images


def test_geneval_checks_pass_on_true_renders_and_fail_on_wrong_ones():
    settings = evaluate.EvalSettings(geneval_prompts=6)
    for category, scene in geneval.prompts(settings):
        assert geneval.check(category, scene, render(scene)), (category, scene)
        assert not geneval.check(category, scene, None)
    blank = Image.new("RGB", (64, 64), "white")
    assert not any(geneval.check(category, scene, blank) for category, scene in geneval.prompts(settings))
    assert geneval.prompt_for(random_scene(random.Random(0))).startswith("Draw a ")


def test_other_words_prompts_use_no_training_phrasing_and_check_kind_and_colour():
    import training.builders.chats as chats
    from worlds.shapes import COLOURS, DRAW_REQUESTS

    cases = geneval.other_words_prompts(evaluate.EvalSettings(geneval_prompts=12))
    assert [wording for wording, _, _ in cases] == \
        ["trained"] * 12 + ["direct"] * 12 + ["mid_chat"] * 12 + ["after_drawing"] * 12
    assert [shape for _, shape, _ in cases[:12]] == [shape for _, shape, _ in cases[12:24]] \
        == [shape for _, shape, _ in cases[36:]]
    for wording, shape, conversation in cases:
        subject = f"{'an' if shape.colour == 'orange' else 'a'} {shape.colour} {shape.kind}"
        trained = {template.format(subject) for template in DRAW_REQUESTS}
        assert subject in conversation[-1]["content"]
        assert (conversation[-1]["content"] in trained) == (wording in ("trained", "after_drawing"))
        assert len(conversation) == (3 if wording in ("mid_chat", "after_drawing") else 1)
        if wording == "after_drawing":  # the earlier drawing is another kind in another colour
            earlier = conversation[1]["content"][1]["image"]
            assert not geneval.check("colours", [shape], earlier)
            assert conversation[0]["content"] not in trained
        assert not {str(message["content"]) for message in conversation} & {opener for opener, _ in chats.OPENERS}
        assert geneval.shape_as_asked(shape, render([shape]))
        other_colour = next(colour for colour in COLOURS if colour != shape.colour)
        assert not geneval.shape_as_asked(shape, render([replace(shape, colour=other_colour)]))
        assert not geneval.shape_as_asked(shape, None)
    assert geneval.other_words_prompts(evaluate.EvalSettings(geneval_prompts=12)) == cases  # seeded


def test_one_case_moves_no_headline_score_by_more_than_005():
    """Enough cases that a single lucky or unlucky prompt cannot pass or fail a bar on its own."""
    settings = evaluate.EvalSettings()
    per_category = [category for category, _ in geneval.prompts(settings)]
    assert all(1 / per_category.count(category) <= 0.05 for category in geneval.CATEGORIES)
    assert 1 / settings.vqa_questions <= 0.05 and 1 / settings.edit_singles <= 0.05
    assert 1 / (len(PROCEDURES) * settings.steps_requests) <= 0.05  # a reply, however many steps it has
    assert 1 / settings.emoji_prompts <= 0.05


def test_more_vqa_questions_start_with_the_fewer_ones():
    """The evaluation's 240 VQA questions begin with the 60 that scored models before them."""
    from benchmarks.evaluation.understanding import vqa_cases
    short, long = vqa_cases(0, 60), vqa_cases(0, 240)
    assert len(long) == 240 and evaluate.EvalSettings().vqa_questions == 240
    assert [case[1:] for case in long[:60]] == [case[1:] for case in short]
    assert all(np.array_equal(np.asarray(a[0]), np.asarray(b[0])) for a, b in zip(long[:60], short))
    assert vqa_cases(1, 60) != short


def test_vqa_answers_are_right_only_with_the_one_expected_word():
    assert is_correct("It is red.", "It is red.")
    assert not is_correct("It is red.", "It is red or blue.")
    assert is_correct("There are two.", "I count two shapes.")
    assert not is_correct("It is on the left.", "It is at the top.")


def test_restated_answers_the_readings_train_on_are_scored_as_the_answers_they_restate():
    from worlds.shapes import questions

    for seed in range(40):
        scene = random_scene(random.Random(seed))
        plain, restated = questions(scene, random.Random(seed)), questions(scene, random.Random(seed), restate=True)
        assert [question for question, _ in plain] == [question for question, _ in restated]
        for (_, expected), (_, answer) in zip(plain, restated):
            assert is_correct(expected, answer), (expected, answer)
            assert answer == expected or not answer.startswith("It is")


def test_vqa_accuracy_is_split_by_the_kind_of_answer_beside_a_guess():
    records = [{"kind": answer_kind(expected)[0], "correct": correct} for expected, correct in
               [("It is red.", True), ("It is blue.", False), ("It is a circle.", True), ("There are two.", False)]]
    by_kind = accuracy_by_kind(records)
    assert set(by_kind) == {"colour", "shape", "count"}  # no position question was asked
    assert by_kind["colour"] == {"accuracy": 0.5, "questions": 2, "chance": 1 / len(CANDIDATES["colour"])}
    assert by_kind["shape"]["accuracy"] == 1.0 and by_kind["count"]["accuracy"] == 0.0


def test_vqa_is_split_by_the_shapes_in_the_picture_and_names_answers_given_for_another_shape():
    scene = [Shape("circle", "red", "small", 0.27, 0.5), Shape("square", "blue", "large", 0.73, 0.5)]
    assert names_another_shape("It is red.", "It is blue.", scene)  # the square's colour, asked of the circle
    assert not names_another_shape("It is red.", "It is green.", scene)  # a colour not in the picture
    assert not names_another_shape("It is red.", "It is red.", scene) and not names_another_shape(
        "It is red.", "It is red or blue.", scene)
    assert names_another_shape("It is on the left.", "It is on the right.", scene)
    assert names_another_shape("It is a circle.", "It is a square.", scene)
    assert not names_another_shape("There are two.", "There are three.", scene)
    records = [{"shapes": 1, "correct": True, "another_shape_s": False},
               {"shapes": 2, "correct": False, "another_shape_s": True},
               {"shapes": 2, "correct": True, "another_shape_s": False}]
    assert accuracy_by_shapes(records) == {"1": {"accuracy": 1.0, "questions": 1, "another_shape_s": 0.0},
                                           "2": {"accuracy": 0.5, "questions": 2, "another_shape_s": 0.5}}


def test_the_true_step_drawings_are_consistent_and_blank_ones_are_not():
    for subject, procedure in PROCEDURES.items():
        steps = procedure(random.Random(1))
        table, fewest = sentence_table(subject)
        parts = []
        for number, ((sentence, _), image) in enumerate(zip(steps, step_images(steps)), start=1):
            parts += [{"type": "text", "text": f"Step {number}: {sentence}\n"}, {"type": "image", "image": image}]
        assert score_reply(parts, table, fewest) == (len(steps), len(steps)), subject
        blank = [part if part["type"] == "text" else {"type": "image", "image": Image.new("RGB", (64, 64), "white")}
                 for part in parts]
        assert score_reply(blank, table, fewest)[0] == 0
        assert score_reply(parts[:2], table, fewest) == (1, fewest)  # steps left out count against it


def test_the_emoji_classifier_ranks_names_and_augments_within_range():
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(4, 3, 32, 32) * 2 - 1
    augmented = augment(pixels, generator)
    assert augmented.shape == pixels.shape and augmented.min() >= -1 and augmented.max() <= 1
    classifier = EmojiClassifier(EmojiNet(7, 4), [f"emoji {index}" for index in range(7)], 32)
    ranked = classifier.top_k([Image.new("RGB", (64, 64), "red"), Image.new("RGB", (20, 20), "blue")], 5)
    assert [len(names) for names in ranked] == [5, 5] and all(len(set(names)) == 5 for names in ranked)


def test_the_emoji_classifier_trains_even_when_its_caller_is_inside_no_grad(tmp_path, monkeypatch):
    """benchmarks.residual_head asks for it inside no_grad; on a machine without the cached
    classifier that used to crash ("element 0 of tensors does not require grad")."""
    from types import SimpleNamespace

    from benchmarks.evaluation import emoji_classifier

    names = [f"emoji {index}" for index in range(3)]
    rng = np.random.default_rng(0)
    fake = SimpleNamespace(entries=[SimpleNamespace(name=names[index % 3]) for index in range(6)],
                           images_NHWC=rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8))
    monkeypatch.setattr(emoji_classifier, "OpenMojiDataset", lambda **_: fake)
    monkeypatch.setenv("HYBRID_VLM_CACHE", str(tmp_path))
    config = emoji_classifier.ClassifierConfig(width=4, steps=3, batch_size=4)
    torch.manual_seed(config.seed)
    untrained = EmojiNet(3, config.width).state_dict()
    with torch.no_grad():
        trained = EmojiClassifier.load_or_train(config)
        cached = EmojiClassifier.load_or_train(config)
    assert trained.names == cached.names == names
    assert any(not torch.equal(untrained[key], value) for key, value in trained.net.state_dict().items())
    assert all(torch.equal(trained.net.state_dict()[key], value) for key, value in cached.net.state_dict().items())


def test_a_count_of_vqa_questions_below_one_is_refused_before_loading(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--model", str(tmp_path / "no model here"), "--vqa-questions", "0", "--out", str(tmp_path)])
    assert "--vqa-questions: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "RESULTS.md").exists()
    with pytest.raises(SystemExit):
        evaluate.main(["--model", str(tmp_path / "no model here"), "--geneval-draws", "0", "--out", str(tmp_path)])
    assert "--geneval-draws: must be at least 1, got 0" in capsys.readouterr().err


def test_image_sampling_flags_reach_every_drawing_and_bad_values_fail_before_loading(tmp_path):
    from benchmarks.evaluation.common import EvalSettings, image_config

    settings = EvalSettings(image_temperature=0.5, image_top_k=(1, 2, 3, 4, 5, 6), image_top_p=0.9)
    config = image_config(settings, max_images=6)
    assert (config.image_temperature, config.image_top_k, config.image_top_p) == (0.5, (1, 2, 3, 4, 5, 6), 0.9)
    with pytest.raises(ValueError, match="image_top_p"):  # a missing model folder would fail later, differently
        evaluate.main(["--model", str(tmp_path / "no model here"), "--image-top-p", "1.5", "--out", str(tmp_path)])
    assert not (tmp_path / "RESULTS.md").exists()
    config = image_config(EvalSettings(image_candidates=4))
    assert config.image_candidates == 4
    line = evaluate._sampling_line({"cfg_scale": 2.0, "image_temperature": 1.0, "image_top_k": 0,
                                    "image_top_p": 1.0, "residual_steps": 8, "image_candidates": 4})
    assert line.endswith("8 residual steps, the likeliest of 4 drawings kept per image.")
    with pytest.raises(SystemExit):
        evaluate.main(["--model", str(tmp_path / "no model here"), "--image-candidates", "0", "--out", str(tmp_path)])


@pytest.mark.slow
def test_one_command_writes_the_table_the_report_the_plots_and_the_json(tiny_parts, tmp_path, capsys):
    """A quick run on a tiny random model (everything but the emoji task, which renders all of OpenMoji)."""
    model_dir = tmp_path / "model"
    model = perturbed(tiny_model(tiny_parts))
    # the model's own, used as no flag says otherwise
    model.sampling_defaults = {"cfg_scale": 2.0, "image_top_p": 0.9, "residual_steps": 1}
    model.save_pretrained(model_dir)
    out, report_json = tmp_path / "docs", tmp_path / "results.json"
    evaluate.main(["--model", str(model_dir), "--quick", "--out", str(out), "--json", str(report_json),
                   "--tasks", "geneval", "vqa", "steps", "edits", "text", "--vqa-questions", "3"])
    results = json.loads(report_json.read_text())
    for key in ("geneval_overall", "geneval_discrete_overall", "geneval_other_words", "vqa_accuracy",
                "steps_consistency", "edit_accuracy", "edit_said_right", "edit_words_said_right",
                "edit_chain_accuracy", "text_ppl_base", "text_ppl_model"):
        assert key in results, key
    assert set(results["geneval"]["cfg_sweep"]) == {"1", "3"}
    hybrid = results["geneval"]["hybrid"]  # quick draws each prompt twice; the headline is the mean
    assert hybrid["draws"] == 2 and len(hybrid["overall_per_draw"]) == 2
    assert results["geneval_overall"] == pytest.approx(sum(hybrid["overall_per_draw"]) / 2)
    assert results["geneval_first_draw_overall"] == hybrid["first_draw"]["overall"] == hybrid["overall_per_draw"][0]
    assert 0 <= results["geneval_overall"] <= 1
    assert (out / "results" / "geneval.png").stat().st_size > 1000
    text = (out / "RESULTS.md").read_text()
    assert "| measure | value |" in text and "results/geneval.png" in text
    assert "| hybrid, mean of 2 drawings |" in text and "| hybrid, drawing 0 alone" in text
    assert set(results["geneval"]["other_words"]) == \
        {"trained", "direct", "mid_chat", "after_drawing", "overall", "drew_image"}
    assert "asked for in other words" in text
    asked = sum(values["questions"] for values in results["vqa_by_kind"].values())
    assert sum(values["questions"] for values in results["vqa_by_shapes"].values()) == asked
    assert asked == results["settings"]["vqa_questions"] == 3
    assert "--vqa-questions 3" in text
    assert "## Shapes VQA by kind of answer" in text and "## Shapes VQA by number of shapes" in text
    split = results["edit_by_shapes"]  # single edits split by the upload's shapes, adding up to the whole
    edits = sum(values["edits"] for values in split.values())
    assert edits == results["settings"]["edit_singles"] and set(split) <= {"1", "2", "3"}
    for key, whole in (("accuracy", "edit_accuracy"), ("said_right", "edit_said_right"),
                       ("said_in_words", "edit_words_said_right")):
        assert sum(values[key] * values["edits"] for values in split.values()) == pytest.approx(results[whole] * edits)
    assert "## Edits by number of shapes in the upload" in text and "## Edits by kind" in text
    assert (results["settings"]["cfg_scale"], results["settings"]["image_top_p"]) == (2.0, 0.9)
    assert results["settings"]["residual_steps"] == 1
    assert "Images drawn with CFG 2, code temperature 1.0, top-k 0, top-p 0.9" in text
    assert "geneval_overall" in capsys.readouterr().out
