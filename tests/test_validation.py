"""Held-out losses per source during training (training.validation), on a tiny random backbone."""

from __future__ import annotations

import argparse
import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from training.build_data import build
from training.build_data import main as build_main
from training.data import DataError
from training.token_cache import TokenCache
from training.train import main as train_main
from training.validation import HeldOutLosses
from vlm.unified_model import UnifiedVLM


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory):
    """A two-source mix (shapes and step-by-step drawings), small."""
    out = tmp_path_factory.mktemp("mix")
    build_main(["shapes", "--out", str(out), "--count", "8", "--seed", "1"])
    build_main(["steps", "--out", str(out), "--count", "3", "--seed", "1"])
    (out / "mix.yaml").write_text("sources:\n  - {path: shapes.jsonl, weight: 2}\n  - {path: steps.jsonl}\n")
    return out / "mix.yaml"


def train(tiny_parts, data, out, *extra):
    backbone_dir, _ = tiny_parts
    train_main(["--data", str(data), "--output-dir", str(out), "--backbone", str(backbone_dir), "--lora-rank", "4",
                "--batch-size", "2", "--gradient-accumulation", "1", "--log-every", "1", "--finetune", "full",
                "--learning-rate", "1e-2", "--warmup-steps", "2", "--no-sample-every-checkpoint", *extra])


def rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_held_out_losses_are_logged_per_source_and_do_not_change_training(tiny_parts, mixed_data, tmp_path):
    train(tiny_parts, mixed_data, tmp_path / "plain", "--steps", "8", "--checkpoint-every", "8")
    train(tiny_parts, mixed_data, tmp_path / "validated", "--steps", "8", "--checkpoint-every", "4",
          "--validation-data", str(mixed_data), "--validation-conversations", "4", "--validation-every", "4")
    logged = rows(tmp_path / "validated" / "validation.csv")
    assert [(row["step"], row["source"]) for row in logged] == [
        (step, source) for step in ("0", "4", "8") for source in ("shapes", "steps")]
    for row in logged:
        assert float(row["image"]) > 0 and float(row["image_scale_1"]) >= 0
        # steps.jsonl holds 3 conversations: the row says so, not the 4 asked for.
        assert row["conversations"] == {"shapes": "4", "steps": "3"}[row["source"]]
    # Scored on conversations it trains on, the image loss of each source must fall.
    for source in ("shapes", "steps"):
        curve = [float(row["image"]) for row in logged if row["source"] == source]
        assert curve[-1] < curve[0], source
    assert (tmp_path / "validated" / "validation_curve.png").is_file()
    # Measuring uses none of the training's randomness: the weights are the same as without it.
    files = sorted(path.name for path in (tmp_path / "plain" / "model").glob("*.safetensors"))
    assert files
    for file in files:
        plain = load_file(str(tmp_path / "plain" / "model" / file))
        validated = load_file(str(tmp_path / "validated" / "model" / file))
        assert plain.keys() == validated.keys()
        for name in plain:
            torch.testing.assert_close(validated[name], plain[name], rtol=0, atol=0)


@pytest.mark.slow
def test_a_resumed_run_keeps_the_measurements_up_to_its_checkpoint(tiny_parts, mixed_data, tmp_path):
    common = ["--validation-data", str(mixed_data), "--validation-conversations", "2", "--checkpoint-every", "2",
              "--validation-every", "2"]
    train(tiny_parts, mixed_data, tmp_path / "run", "--steps", "4", *common)
    # A kill after step 4's measurement but before any later checkpoint: resuming from step 4 to 6.
    train(tiny_parts, mixed_data, tmp_path / "run", "--steps", "6", *common)
    steps = [row["step"] for row in rows(tmp_path / "run" / "validation.csv")]
    assert steps == ["0", "0", "2", "2", "4", "4", "6", "6"]


@pytest.mark.slow
def test_measuring_is_repeatable_and_restores_the_training_mode(tiny_parts, mixed_data, tmp_path):
    backbone_dir, _ = tiny_parts
    train(tiny_parts, mixed_data, tmp_path / "run", "--steps", "1", "--checkpoint-every", "1")
    model = UnifiedVLM.from_pretrained(tmp_path / "run" / "model", for_training=True)
    held_out = HeldOutLosses(mixed_data, per_source=3, batch_size=2)
    cache = TokenCache(model.image_tokenizer)
    first = held_out.measure(model, cache, seed=5)
    assert model.training
    assert held_out.measure(model, cache, seed=5) == first
    assert set(first) == {"shapes", "steps"} and {"image", "residual", "total"} <= set(first["shapes"])


def test_bad_validation_settings_are_refused(mixed_data, tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        HeldOutLosses(mixed_data, per_source=0, batch_size=2)
    missing = tmp_path / "nothing.yaml"
    missing.write_text("sources: []\n")
    with pytest.raises(DataError, match="nothing.yaml"):
        HeldOutLosses(missing, per_source=2, batch_size=2)


def test_the_validation_stream_draws_other_conversations_than_training(tmp_path):
    args = argparse.Namespace(image_size=64, split="train", backbone=None)
    train_path = build("shapes", tmp_path / "train", 20, 0, args)
    held_out_path = build("shapes", tmp_path / "held_out", 20, 0, args, "-validation")
    prompts = [json.loads(line)["messages"][0]["content"] for line in train_path.read_text().splitlines()]
    held_out_prompts = [json.loads(line)["messages"][0]["content"]
                        for line in held_out_path.read_text().splitlines()]
    assert prompts != held_out_prompts
