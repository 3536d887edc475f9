"""Length-grouped forwards (training.batching) and the trainer's use of them."""

from __future__ import annotations

import csv

import pytest

from training.batching import length_groups
from training.build_data import main as build_main
from training.train import main as train_main


def test_groups_sort_by_length_and_respect_the_token_budget():
    lengths = [700, 130, 1000, 240, 130, 310, 200, 260]
    groups = length_groups(lengths, 2048)
    assert sorted(index for group in groups for index in group) == list(range(len(lengths)))
    for group in groups:
        assert max(lengths[index] for index in group) * len(group) <= 2048
    flat = [lengths[index] for group in groups for index in group]
    assert flat == sorted(lengths)
    assert len(groups) == 2  # the six short ones together, then the two long ones


def test_a_conversation_over_the_budget_goes_alone_and_no_budget_keeps_one_forward():
    assert length_groups([50, 5000, 60], 1000) == [[0, 2], [1]]
    assert length_groups([50, 5000, 60], None) == [[0, 1, 2]]
    assert length_groups([], 100) == []
    with pytest.raises(ValueError, match="at least 1"):
        length_groups([10], 0)


@pytest.mark.slow
def test_a_run_split_by_length_pads_less_and_still_learns(tiny_parts, tmp_path):
    data = tmp_path / "data"
    build_main(["shapes", "--out", str(data), "--count", "6", "--seed", "1"])
    build_main(["steps", "--out", str(data), "--count", "2", "--seed", "1"])
    (data / "mix.yaml").write_text("sources:\n  - {path: shapes.jsonl}\n  - {path: steps.jsonl}\n")
    backbone_dir, _ = tiny_parts

    def run(name, budget):
        out = tmp_path / name
        train_main(["--data", str(data / "mix.yaml"), "--output-dir", str(out), "--backbone", str(backbone_dir),
                    "--lora-rank", "4", "--batch-size", "4", "--gradient-accumulation", "1", "--log-every", "1",
                    "--steps", "4", "--finetune", "full", "--learning-rate", "1e-2", "--warmup-steps", "1",
                    "--checkpoint-every", "4", "--no-sample-every-checkpoint", "--max-batch-tokens", budget])
        with (out / "log.csv").open() as handle:
            return list(csv.DictReader(handle))

    whole, grouped = run("whole", "0"), run("grouped", "400")
    assert [row["tokens"] for row in whole] == [row["tokens"] for row in grouped]  # the same conversations
    assert sum(float(row["padding"]) for row in grouped) < sum(float(row["padding"]) for row in whole)
    assert float(grouped[-1]["image"]) < float(grouped[0]["image"])
