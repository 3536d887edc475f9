"""Holding image scales at given codes (generation's code_hook) and the scale-forcing benchmark."""

from __future__ import annotations

import pytest
import torch

from benchmarks import scale_forcing
from generation import GenerationConfig, ImageFinished, stream_generate
from tests.tiny_vlm import force_one_image, perturbed, tiny_model

CHAT = [{"role": "user", "content": "Draw a red circle."}]


@pytest.fixture
def drawer(tiny_parts):
    return force_one_image(perturbed(tiny_model(tiny_parts)))


def given_codes(model, rows: int, seed: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = model.image_tokenizer.config.codebook_size
    return [torch.randint(0, size, (rows, side, side), generator=generator)
            for side in model.image_tokenizer.config.scales]


def test_held_scales_are_drawn_and_returned_as_given_and_later_ones_sampled(drawer):
    codes = given_codes(drawer, 1)
    calls = []

    def hold(rows, scale_index, sampled):
        calls.append((list(rows), scale_index, tuple(sampled.shape)))
        return codes[scale_index][rows] if scale_index < 2 else sampled

    config = GenerationConfig(max_images=1, max_new_tokens=4, residual_steps=0, seed=1)
    image = next(e for e in stream_generate(drawer, CHAT, config, code_hook=hold) if isinstance(e, ImageFinished))
    scales = drawer.image_tokenizer.config.scales
    assert calls == [([0], index, (1, side, side)) for index, side in enumerate(scales)]
    assert all(torch.equal(image.tokens.codes[index], codes[index]) for index in range(2))
    drawer.reset_script()
    free = next(e for e in stream_generate(drawer, CHAT, config) if isinstance(e, ImageFinished))
    # Same seed: the free drawing's first scales are its own samples, not the held codes.
    assert not all(torch.equal(free.tokens.codes[index], codes[index]) for index in range(2))


def test_every_scale_held_without_residual_draws_exactly_the_given_codes(drawer):
    codes = given_codes(drawer, 1)
    config = GenerationConfig(max_images=1, max_new_tokens=4, residual_steps=0, seed=1)
    event = next(e for e in stream_generate(drawer, CHAT, config, code_hook=lambda rows, k, sampled: codes[k][rows])
                 if isinstance(e, ImageFinished))
    expected = drawer.image_tokenizer.decode_to_images(event.tokens, use_residual=False)[0]
    assert [torch.equal(a, b) for a, b in zip(event.tokens.codes, codes)] == [True] * len(codes)
    assert event.image.tobytes() == expected.tobytes()


@pytest.mark.parametrize("bad, message", [
    (lambda rows, k, sampled: sampled.flatten(1), "code_hook returned .* codes for scale 0; the loop sampled"),
    (lambda rows, k, sampled: sampled.float(), "code_hook returned .*float32 codes"),
    (lambda rows, k, sampled: sampled + 100_000, "code_hook returned codes outside 0..")])
def test_a_hook_returning_unusable_codes_is_refused_naming_it(drawer, bad, message):
    config = GenerationConfig(max_images=1, max_new_tokens=4, residual_steps=0, seed=1)
    with pytest.raises(ValueError, match=message):
        list(stream_generate(drawer, CHAT, config, code_hook=bad))


def test_holding_every_true_scale_draws_what_the_true_codes_decode_to(drawer):
    cases = scale_forcing.scenes(4, seed=0)
    assert cases == scale_forcing.scenes(4, seed=0) != scale_forcing.scenes(4, seed=1)
    assert all(len(scene) == 1 for scene in cases)
    codes = scale_forcing.true_codes(drawer, cases)
    every = len(drawer.image_tokenizer.config.scales)
    config = GenerationConfig(max_images=1, max_new_tokens=4, residual_steps=0, seed=0)
    # force_one_image draws at the first step of a generation run: one batch, so one script.
    drawn = scale_forcing.drawn(drawer, cases, codes, every, config, batch_size=4)
    alone = scale_forcing.decoded_alone(drawer, codes, every)
    assert [image.tobytes() for image in drawn] == [image.tobytes() for image in alone]
    drawer.reset_script()
    free = scale_forcing.drawn(drawer, cases, codes, 0, config, batch_size=4)
    assert [image.tobytes() for image in free] != [image.tobytes() for image in alone]
    assert scale_forcing.decoded_alone(drawer, codes, 0) == [None] * 4
    assert scale_forcing.scores(cases, [None] * 4) == (0.0, 1.0)


def test_the_cli_checks_its_flags_and_the_model_s_scales(tiny_parts, tmp_path, capsys):
    model = perturbed(tiny_model(tiny_parts))
    model.save_pretrained(tmp_path / "model")
    for flags, message in ((["--keep", "0,x"], "--keep takes whole numbers"), (["--keep", "-1"], ">= 0"),
                           (["--prompts", "0"], "--prompts must be >= 1")):
        with pytest.raises(SystemExit):
            scale_forcing.parse_args(flags)
        assert message in capsys.readouterr().err
    scales = len(model.image_tokenizer.config.scales)
    with pytest.raises(SystemExit, match=f"has {scales} scales"):
        scale_forcing.main(["--model", str(tmp_path / "model"), "--keep", str(scales + 1)])


@pytest.mark.slow
def test_the_cli_prints_a_row_per_k_and_writes_json(tiny_parts, tmp_path, capsys):
    import json

    model = perturbed(tiny_model(tiny_parts))
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "forcing.json"
    assert scale_forcing.main(["--model", str(tmp_path / "model"), "--keep", "0,2", "--prompts", "2",
                               "--residual-steps", "0", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 0 | none |" in printed and "| 2 |" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [row["keep"] for row in rows] == [0, 2]
    assert all(0.0 <= row["model"] <= 1.0 and 0.0 <= row["codes_alone"] <= 1.0 for row in rows)
