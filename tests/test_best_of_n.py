"""benchmarks.best_of_n: a drawing's own scores are its codes' real log-likelihoods, drawing 0
is the evaluation's drawing, and the table picks and averages as it says."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from PIL import Image

from benchmarks import best_of_n
from benchmarks.evaluation.common import EvalSettings, first_image, image_config, replies
from generation import GenerationConfig
from tests.tiny_vlm import force_one_image, perturbed, tiny_model
from vlm.processor import IGNORE_INDEX
from vlm.teacher_forcing import blind_drawings, dropped_drawings

PROMPT = "Draw a red circle."


@pytest.fixture
def drawer(tiny_parts):
    """A tiny model that draws one image at the start of every generation run."""
    model = force_one_image(perturbed(tiny_model(tiny_parts)))
    start = model.start_decoding

    def start_decoding(*args, **kwargs):
        model.reset_script()
        return start(*args, **kwargs)

    model.start_decoding = start_decoding
    return model


def code_log_likelihood(logits, codes) -> float:
    flat = torch.cat([scale_codes.flatten() for scale_codes in codes])
    return torch.log_softmax(logits.float(), -1).gather(-1, flat[:, None]).sum().item()


def teacher_forced(model, prompt, image, tokens):
    """The drawing's code logits read back by full forwards: with the request, and blind."""
    conversation = [{"role": "user", "content": prompt}, {"role": "assistant", "content": [
        {"type": "image", "image": image}]}]
    batch = model.processor(conversation)
    count = sum(side * side for side in model.image_tokenizer.config.scales)
    start = batch.images[0].start
    with torch.no_grad():
        conditional = model(batch, tokens).image_logits[:count]
        blind = dropped_drawings(model, batch, None, 1.0)
        hidden = model.run_decoder(model.embed(batch, tokens, blind),
                                   blind_drawings(model, batch, batch.attention_mask(), blind), batch.position_ids)
        unconditional = model.image_head(hidden[0, start:start + count])
    return conditional, unconditional


def test_each_row_s_scores_are_its_codes_log_likelihoods_with_and_without_the_request(drawer):
    prompts = [PROMPT, "Draw two blue stars."]
    config = GenerationConfig(max_images=1, max_new_tokens=2, residual_steps=0, cfg_scale=3.0, seed=4)
    scored = best_of_n.scored_drawings(drawer, prompts, config)
    evaluation = replies(drawer, [[{"role": "user", "content": prompt}] for prompt in prompts], config, 2, "same")
    scales = drawer.image_tokenizer.config.scales
    ramps = torch.cat([torch.full((side * side,), (config.cfg_scale - 1) * index / (len(scales) - 1))
                       for index, side in enumerate(scales)])[:, None]
    for prompt, (image, scores), reply in zip(prompts, scored, evaluation):
        assert image.tobytes() == first_image(reply).tobytes()  # the scoring hooks change nothing drawn
        tokens = reply.image_tokens[0]
        conditional, unconditional = teacher_forced(drawer, prompt, image, tokens)
        expected = code_log_likelihood(conditional, tokens.codes)
        assert scores["conditional"] == pytest.approx(expected, abs=1e-2)
        assert scores["pmi"] == pytest.approx(expected - code_log_likelihood(unconditional, tokens.codes), abs=2e-2)
        guided = (1 + ramps) * conditional.float() - ramps * unconditional.float()
        assert scores["guided"] == pytest.approx(code_log_likelihood(guided, tokens.codes), abs=2e-2)
    assert scored[0][1]["conditional"] != scored[1][1]["conditional"]


@pytest.mark.parametrize("words, caption", [("Here it is: a small red circle on the left.",
                                             "A small red circle on the left."),
                                            ("Sure! Here is how.\nStep 1: draw a green stem.\n", "Draw a green stem."),
                                            ("a blue heart", "A blue heart."), ("Here you go:", None), ("  ", None)])
def test_the_caption_read_back_is_what_the_reply_said_it_would_draw(words, caption):
    assert best_of_n.caption_of(words) == caption


def test_read_back_is_the_caption_s_log_likelihood_given_the_drawing(tiny_parts):
    model = perturbed(tiny_model(tiny_parts))
    red, blue = Image.new("RGB", (64, 64), (220, 30, 30)), Image.new("RGB", (64, 64), (30, 30, 220))
    caption = "A large red circle in the middle."
    chat = [{"role": "user", "content": [{"type": "image", "image": red},
                                         {"type": "text", "text": best_of_n.READBACK_QUESTION}]},
            {"role": "assistant", "content": caption}]
    batch = model.processor(chat)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(batch).text_logits[0, :-1].float(), -1)
    labels = batch.text_labels[0, 1:]
    kept = labels != IGNORE_INDEX
    assert model.processor.tokenizer.decode(labels[kept]).startswith(caption)  # the caption's tokens are scored
    expected = log_probs[kept].gather(-1, labels[kept][:, None]).sum().item()
    assert best_of_n.read_back(model, red, caption) == pytest.approx(expected, rel=1e-5)
    assert best_of_n.read_back(model, blue, caption) != pytest.approx(expected, rel=1e-5)  # it reads the drawing


def test_a_drawing_is_read_back_against_the_words_its_reply_wrote_before_it(tiny_parts):
    opening = "Here it is: a red circle"
    model = force_one_image(perturbed(tiny_model(tiny_parts)), words_first=6, opening=opening)
    config = GenerationConfig(max_images=1, max_new_tokens=8, residual_steps=0, cfg_scale=3.0, seed=4)
    model.reset_script()
    [(image, scores)] = best_of_n.scored_drawings(model, [PROMPT], config)
    model.reset_script()
    [reply] = replies(model, [[{"role": "user", "content": PROMPT}]], config, 1, "same")
    words = reply.parts[0]["text"]
    assert words.startswith("Here it is:") and reply.parts[1]["type"] == "image"
    assert scores["readback"] == pytest.approx(best_of_n.read_back(model, image, best_of_n.caption_of(words)))
    drawer = force_one_image(perturbed(tiny_model(tiny_parts)))  # no words before the image: nothing to read back
    drawer.reset_script()
    [(_, scores)] = best_of_n.scored_drawings(drawer, [PROMPT], config)
    assert scores["readback"] is None and scores["conditional"] is not None


@pytest.mark.parametrize("settings, message", [({"cfg_scale": 1.0}, "cfg_scale other than 1"),
                                               ({"max_images": 2}, "one image per reply"),
                                               ({"image_candidates": 2}, "drawn once each")])
def test_scoring_what_it_cannot_score_is_refused_naming_the_setting(drawer, settings, message):
    config = GenerationConfig(**{"max_images": 1, "max_new_tokens": 2, "residual_steps": 0, "seed": 4, **settings})
    with pytest.raises(ValueError, match=message):
        best_of_n.scored_drawings(drawer, [PROMPT], config)


def test_drawing_zero_is_the_evaluation_s_own_and_drawing_one_differs(drawer, monkeypatch):
    settings = EvalSettings(geneval_prompts=1, batch_size=3)
    config = image_config(settings, residual_steps=0)
    checked = []
    check = best_of_n.geneval.check
    monkeypatch.setattr(best_of_n.geneval, "check", lambda category, scene, image: (
        checked.append(image), check(category, scene, image))[1])
    results = best_of_n.run(drawer, settings, config, 2)
    monkeypatch.undo()
    assert [result["category"] for result in results] == list(best_of_n.geneval.CATEGORIES)
    assert all(len(result["draws"]) == 2 and all(draw["drew"] for draw in result["draws"]) for result in results)
    assert [result["prompt"] for result in results] == [
        best_of_n.geneval.prompt_for(scene) for _, scene in best_of_n.geneval.prompts(settings)]
    drawn = {k: [image for first in (0, 6) for image in checked[first + 3 * k:first + 3 * k + 3]] for k in (0, 1)}
    evaluation = []
    best_of_n.geneval.run(drawer, settings, settings.cfg_scale, 0,
                          on_image=lambda category, index, image: evaluation.append(image))
    assert [image.tobytes() for image in drawn[0]] == [image.tobytes() for image in evaluation]
    assert [image.tobytes() for image in drawn[1]] != [image.tobytes() for image in evaluation]
    with pytest.raises(ValueError, match="fixed seed"):
        best_of_n.run(drawer, settings, replace(config, seed=None), 2)


def test_the_evaluation_s_drawings_are_best_of_n_s_and_its_score_is_their_mean(drawer, monkeypatch):
    settings = EvalSettings(geneval_prompts=1, batch_size=3)
    seen: list[bytes] = []

    def check(category, scene, image):  # passes on the image's bytes, so the drawings decide the score
        seen.append(image.tobytes())
        return sum(image.tobytes()) % 3 == 0

    monkeypatch.setattr(best_of_n.geneval, "check", check)
    scores = best_of_n.geneval.run(drawer, settings, settings.cfg_scale, 0, draws=2)
    evaluation, seen[:] = list(seen), []
    results = best_of_n.run(drawer, settings, image_config(settings, residual_steps=0), 2)
    # best_of_n draws batch by batch (rows 0-2 twice, then rows 3-5 twice), the evaluation drawing by drawing
    assert seen[0:3] + seen[6:9] + seen[3:6] + seen[9:12] == evaluation
    passes = {result["category"]: [draw["passed"] for draw in result["draws"]] for result in results}
    assert any(len(set(values)) > 1 for values in passes.values())  # the two drawings disagree somewhere
    for category, values in passes.items():
        assert scores[category] == sum(values) / 2
        assert scores["first_draw"][category] == values[0]
    assert scores["overall_per_draw"] == [sum(values[k] for values in passes.values()) / len(passes) for k in (0, 1)]
    assert scores["overall"] == sum(scores["overall_per_draw"]) / 2 and scores["draws"] == 2
    seen[:] = []
    assert best_of_n.geneval.run(drawer, settings, settings.cfg_scale, 0) == scores["first_draw"]
    with pytest.raises(ValueError, match="draws must be >= 1"):
        best_of_n.geneval.run(drawer, settings, settings.cfg_scale, 0, draws=0)


def test_the_table_averages_picks_by_each_score_and_counts_any_pass():
    def draw(passed, conditional, pmi, drew=True, readback=-1.0):
        return {"passed": passed, "drew": drew, "conditional": conditional if drew else None,
                "guided": 0.0 if drew else None, "pmi": pmi if drew else None, "readback": readback if drew else None}

    results = [
        {"category": "single_object", "draws": [draw(False, -1.0, 5.0), draw(True, -2.0, 1.0)]},
        {"category": "single_object", "draws": [draw(False, 0.0, 0.0, drew=False), draw(False, -9.0, -9.0)]},
        {"category": "colours", "draws": [draw(True, -3.0, 0.0), draw(True, -1.0, 2.0)]},
    ]
    table = best_of_n.summarise(results)
    assert table["single_object"] == {"first": 0.0, "mean": 0.25, "best_conditional": 0.0, "best_guided": 0.0,
                                      "best_pmi": 0.0, "best_readback": 0.0, "oracle": 0.5}
    assert table["colours"]["mean"] == table["colours"]["oracle"] == table["colours"]["best_pmi"] == 1.0
    assert table["overall"]["mean"] == pytest.approx((0.25 + 1.0) / 2)  # categories weigh alike, as GenEval's
    assert best_of_n.picked([draw(True, 0.0, 0.0, drew=False), draw(False, -5.0, -5.0)], "pmi") is False
    # a drawing whose reply said nothing to read back never wins over one read back, however low
    assert best_of_n.picked([draw(True, 0.0, 0.0, readback=None), draw(False, 0.0, 0.0, readback=-50.0)],
                            "readback") is False


def test_the_cli_checks_its_flags(capsys):
    for flags, message in ((["--candidates", "1"], "--candidates must be >= 2"),
                           (["--prompts", "0"], "--prompts must be >= 1"),
                           (["--batch-size", "0"], "--batch-size must be >= 1"),
                           (["--cfg-scale", "1"], "not 1")):
        with pytest.raises(SystemExit):
            best_of_n.parse_args(flags)
        assert message in capsys.readouterr().err


def test_a_model_that_draws_unguided_by_default_is_refused(tiny_parts, tmp_path):
    model = perturbed(tiny_model(tiny_parts))
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "generation_config.json").write_text(json.dumps({"cfg_scale": 1.0}))
    with pytest.raises(SystemExit, match="give --cfg-scale"):
        best_of_n.main(["--model", str(tmp_path / "model")])


@pytest.mark.slow
def test_the_cli_prints_the_table_and_writes_every_drawing(tiny_parts, tmp_path, capsys):
    model = perturbed(tiny_model(tiny_parts))
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "best.json"
    assert best_of_n.main(["--model", str(tmp_path / "model"), "--candidates", "2", "--prompts", "1",
                           "--batch-size", "6", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| overall |" in printed and "best_pmi" in printed
    written = json.loads(out.read_text())
    assert len(written["results"]) == 6 and all(len(result["draws"]) == 2 for result in written["results"])
    assert all(0.0 <= value <= 1.0 for row in written["table"].values() for value in row.values())
    assert all(math.isfinite(draw["pmi"]) for result in written["results"] for draw in result["draws"] if draw["drew"])
