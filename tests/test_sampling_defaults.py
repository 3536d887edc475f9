"""A model's own image sampling defaults (generation_config.json): saved with it, used by chat,
the app and evaluate unless the user sets a value, refused when malformed, and written by the sweep."""

from __future__ import annotations

import json

import pytest

from benchmarks import sampling_sweep
from chat.session import ChatSession
from generation import GenerationConfig
from tests.tiny_vlm import perturbed, tiny_model
from vlm import sampling_defaults
from vlm.tokenizer import CheckpointError
from vlm.unified_model import UnifiedVLM


@pytest.fixture
def saved(tiny_parts, tmp_path):
    model = perturbed(tiny_model(tiny_parts))
    model.sampling_defaults = {"cfg_scale": 5.0, "image_top_p": 0.8}
    model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_the_defaults_travel_with_the_model_and_what_the_user_sets_wins(saved, tiny_parts, tmp_path):
    assert json.loads((saved / "generation_config.json").read_text()) == {"cfg_scale": 5.0, "image_top_p": 0.8}
    model = UnifiedVLM.from_pretrained(saved)
    assert model.sampling_defaults == {"cfg_scale": 5.0, "image_top_p": 0.8}
    config = GenerationConfig.for_model(model)
    assert (config.cfg_scale, config.image_top_p, config.image_top_k) == (5.0, 0.8, GenerationConfig.image_top_k)
    assert GenerationConfig.for_model(model, cfg_scale=2.0, seed=3).cfg_scale == 2.0
    assert ChatSession(model).config.cfg_scale == 5.0
    # A model whose residual head does not help can ship with it off; a user's setting still wins.
    model.sampling_defaults = {"residual_steps": 0}
    assert ChatSession(model).config.residual_steps == 0
    assert GenerationConfig.for_model(model, residual_steps=8).residual_steps == 8
    # So can one that draws best keeping the likeliest of several drawings.
    model.sampling_defaults = {"image_candidates": 3}
    assert ChatSession(model).config.image_candidates == 3
    assert GenerationConfig.for_model(model, image_candidates=1).image_candidates == 1
    # A model without the file draws with GenerationConfig's defaults, and saves no file.
    plain = perturbed(tiny_model(tiny_parts))
    plain.save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain" / "generation_config.json").exists()
    assert GenerationConfig.for_model(UnifiedVLM.from_pretrained(tmp_path / "plain")) == GenerationConfig()


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ('["cfg_scale"]', "expected a mapping"),
    ('{"cfg_scale": 5, "top_p": 0.8}', r"unknown keys \['top_p'\]"),
    ('{"image_top_p": "high"}', "image_top_p must be a number"),
    ('{"cfg_scale": [1, 2]}', "cfg_scale must be one number"),
    ('{"residual_steps": 1.5}', "residual_steps must be a whole number"),
    ('{"residual_steps": -1}', "residual_steps must be a whole number"),
    ('{"residual_steps": true}', "residual_steps must be a whole number"),
    ('{"image_candidates": 0}', "image_candidates must be a whole number >= 1"),
    ('{"image_candidates": 2.5}', "image_candidates must be a whole number >= 1"),
])
def test_a_malformed_file_is_refused_naming_it(saved, content, message):
    (saved / "generation_config.json").write_text(content)
    with pytest.raises(CheckpointError, match=message) as error:
        UnifiedVLM.from_pretrained(saved)
    assert "generation_config.json" in str(error.value)


def test_a_value_generation_cannot_use_names_the_file(saved):
    (saved / "generation_config.json").write_text('{"image_top_p": 1.5}')
    model = UnifiedVLM.from_pretrained(saved)
    with pytest.raises(ValueError, match="generation_config.json.*image_top_p"):
        GenerationConfig.for_model(model)


def test_sweep_settings_parse_and_bad_ones_say_what_is_wrong():
    assert sampling_sweep.parse_setting("cfg=5,top_p=0.8") == {"cfg_scale": 5.0, "image_top_p": 0.8}
    assert sampling_sweep.parse_setting("top_k=10") == {"image_top_k": 10}
    assert sampling_sweep.parse_setting("cfg=2,residual=0") == {"cfg_scale": 2.0, "residual_steps": 0}
    assert sampling_sweep.parse_setting("cfg=2,candidates=4") == {"cfg_scale": 2.0, "image_candidates": 4}
    # One value per scale, coarsest first.
    assert sampling_sweep.parse_setting("cfg=5,temperature=1/1/0.5") == {"cfg_scale": 5.0,
                                                                        "image_temperature": (1.0, 1.0, 0.5)}
    assert sampling_sweep.parse_setting("top_k=0/0/10") == {"image_top_k": (0, 0, 10)}
    for text, message in (("cfg", "not one of"), ("topp=0.8", "not one of"), ("top_k=ten", "takes a number"),
                          ("top_p=1.5", "image_top_p"), ("residual=1.5", "takes a number"),
                          ("residual=-1", "residual_steps"), ("cfg=3/5", "one number, not one per scale"),
                          ("temperature=1//0.5", "takes a number"), ("top_p=1/0.8/0", "image_top_p"),
                          ("top_k=0/2.5", "takes a number"), ("candidates=0", "image_candidates"),
                          ("candidates=2.5", "takes a number"), ("candidates=2/3", "one number, not one per scale")):
        with pytest.raises(ValueError, match=message):
            sampling_sweep.parse_setting(text)
    with pytest.raises(SystemExit):
        sampling_sweep.parse_args(["--model", "m", "--setting", "cfg=-1"])


def test_a_per_scale_setting_must_have_one_value_per_scale_of_the_model(saved):
    scales = len(UnifiedVLM.from_pretrained(saved).image_tokenizer.config.scales)
    short = "/".join(["0.5"] * (scales - 1))
    with pytest.raises(SystemExit, match=f"temperature has a value per scale, but .* has {scales} scales"):
        sampling_sweep.main(["--model", str(saved), "--setting", "cfg=3", "--setting", f"temperature={short}"])


@pytest.mark.slow
def test_the_sweep_prints_a_row_per_setting_and_saves_the_best(saved, tmp_path, capsys):
    (saved / "generation_config.json").unlink()
    out = tmp_path / "sweep.json"
    assert sampling_sweep.main(["--model", str(saved), "--prompts", "1", "--residual-steps", "1", "--batch-size", "6",
                                "--setting", "cfg=1", "--setting", "cfg=4,top_k=3", "--json", str(out), "--save"]) == 0
    # A setting without residual= draws with --residual-steps, and that is what is saved for it.
    printed = capsys.readouterr().out
    assert "| cfg=1 |" in printed and "| cfg=4,top_k=3 |" in printed
    result = json.loads(out.read_text())
    assert [row["setting"] for row in result["rows"]] == ["cfg=1", "cfg=4,top_k=3"]
    best = next(row for row in result["rows"] if row["setting"] == result["best"])
    assert best["scores"]["overall"] == max(row["scores"]["overall"] for row in result["rows"])
    written = sampling_defaults.read(saved)
    assert set(written) == set(sampling_defaults.KEYS)
    assert written["cfg_scale"] == best["values"]["cfg_scale"] and written["residual_steps"] == 1
    assert UnifiedVLM.from_pretrained(saved).sampling_defaults == written
