"""The residual predictability benchmark on a tiny random model: every predictor scored, the
bounds exact (zero leaves all the energy, the true residual none), bad sizes refused."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from benchmarks.residual_predictability import collect, main, predictability_table
from tests.tiny_vlm import perturbed, tiny_model


def _drawings(count: int, offset: int) -> list[list[dict]]:
    conversations = []
    for index in range(count):
        image = Image.new("RGB", (32, 32), "white")
        colour = ("red", "blue", "green")[index % 3]
        ImageDraw.Draw(image).ellipse((4 + index + offset, 6, 24 + offset, 26), fill=colour)
        conversations.append([{"role": "user", "content": "Draw a shape."},
                              {"role": "assistant", "content": [{"type": "text", "text": "Here:"},
                                                                {"type": "image", "image": image}]}])
    return conversations


def test_every_predictor_is_scored_and_the_bounds_are_exact(tiny_parts):
    model = perturbed(tiny_model(tiny_parts))
    train, valid = collect(model, _drawings(6, 0), batch=4), collect(model, _drawings(3, 2))
    assert train.conditions.shape[:2] == (6, train.residuals.shape[2] * train.residuals.shape[3])
    assert len(valid.pixels) == 3 and valid.discrete.shape == valid.residuals.shape
    context = (train.discrete.clone(), train.residuals.clone())
    rows = predictability_table(model, train, valid, context, steps=3)
    by_name = {row["predictor"]: row for row in rows}
    assert len(rows) == 8 and all(torch.isfinite(torch.tensor(row["psnr"])) for row in rows)
    assert by_name["none (discrete only)"]["energy_left"] == pytest.approx(1.0)
    assert by_name["true residual (ceiling)"]["energy_left"] == 0.0
    assert "discrete neighbourhood (fitted conv, +6 images)" in by_name


def test_bad_sizes_are_refused_before_any_model_loads(capsys):
    with pytest.raises(SystemExit):
        main(["--valid-images", "1"])
    assert "--valid-images must be >= 2" in capsys.readouterr().err

