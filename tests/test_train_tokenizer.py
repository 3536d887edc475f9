"""The tokenizer training recipe end to end on a tiny config and a tiny image folder."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from tests.conftest import tiny_tokenizer_config
from training.state_io import StateError
from training.tokenizer_data import ResumableBatchSampler
from training.train_tokenizer import TokenizerTrainConfig, main, parse_args
from vlm.tokenizer import HybridTokenizer


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    colours = ["red", "green", "blue", "orange", "purple", "black", "yellow", "cyan"]
    for index, colour in enumerate(colours):
        image = Image.new("RGB", (32, 32), "white")
        ImageDraw.Draw(image).ellipse((4 + index, 4, 24 + index, 28 - index), fill=colour)
        image.save(folder / f"{index}.png")
    return folder


@pytest.fixture
def tiny_config_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(tiny_tokenizer_config().to_json())
    return path


def run_training(folder, config, output, steps, *extra):
    main([
        "--data", str(folder), "--config", str(config), "--output-dir", str(output), "--steps", str(steps),
        "--batch-size", "4", "--warmup-steps", "2", "--learning-rate", "3e-3", "--log-every", "1",
        "--checkpoint-every", "3", "--dead-code-restart-every", "4", "--mixed-precision", "no", *extra,
    ])


def read_log(output):
    with (output / "log.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_tiny_run_lowers_the_reconstruction_loss(image_folder, tiny_config_file, tmp_path):
    output = tmp_path / "run"
    run_training(image_folder, tiny_config_file, output, 60)
    rows = read_log(output)
    assert [int(row["step"]) for row in rows] == list(range(1, 61))
    first = sum(float(row["mse"]) for row in rows[:5]) / 5
    last = sum(float(row["mse"]) for row in rows[-5:]) / 5
    assert last < 0.5 * first
    assert 0 < float(rows[-1]["codebook_usage"]) <= 1 and float(rows[-1]["perplexity"]) > 1
    model = HybridTokenizer.from_pretrained(output / "tokenizer")
    assert model.config == tiny_tokenizer_config()


@pytest.mark.parametrize("interrupt_at_save", [2, 6])
def test_resuming_gives_the_same_weights_as_an_uninterrupted_run(image_folder, tiny_config_file, tmp_path,
                                                                  monkeypatch, interrupt_at_save):
    # A checkpoint saves three models (weights, their average, the usable tokenizer/): save 2 is
    # inside step 3's checkpoint write (nothing to resume: starts again), save 6 just after step 6's.
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_training(image_folder, tiny_config_file, straight, 9)

    original_save = HybridTokenizer.save_pretrained
    saves = []

    def save_then_interrupt(self, directory):
        original_save(self, directory)
        saves.append(directory)
        if len(saves) == interrupt_at_save:
            raise KeyboardInterrupt

    monkeypatch.setattr(HybridTokenizer, "save_pretrained", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_training(image_folder, tiny_config_file, resumed, 9)
    monkeypatch.setattr(HybridTokenizer, "save_pretrained", original_save)
    # The same command again resumes; rows logged after the last checkpoint are dropped first.
    run_training(image_folder, tiny_config_file, resumed, 9)
    assert [row["step"] for row in read_log(resumed)] == [str(step) for step in range(1, 10)]
    assert [row["mse"] for row in read_log(resumed)] == [row["mse"] for row in read_log(straight)]
    a = HybridTokenizer.from_pretrained(straight / "tokenizer").state_dict()
    b = HybridTokenizer.from_pretrained(resumed / "tokenizer").state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not list((resumed / "checkpoint").glob("*.pkl")) and not list((resumed / "checkpoint").glob("*.bin"))


class _Payload:
    """Unpickling this would create a marker file: the proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_an_old_accelerate_pickle_checkpoint_is_refused_without_running_it(image_folder, tiny_config_file,
                                                                           tmp_path):
    out = tmp_path / "run"
    checkpoint = out / "checkpoint"
    checkpoint.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"step": _Payload(marker)}, checkpoint / "custom_checkpoint_0.pkl")
    with pytest.raises(StateError, match="pickle"):
        run_training(image_folder, tiny_config_file, out, 3)
    assert not marker.exists()


def test_freezing_the_encoder_trains_the_decoder_and_keeps_every_code(image_folder, tiny_config_file, tmp_path):
    start = tmp_path / "start"
    run_training(image_folder, tiny_config_file, start, 3)
    extra = tmp_path / "extra"
    extra.mkdir()
    Image.new("RGB", (40, 40), "magenta").save(extra / "plain.png")
    tuned = tmp_path / "tuned"
    main(["--data", str(image_folder), "--extra-data", str(extra), "--init", str(start / "tokenizer"),
          "--freeze-encoder", "--output-dir", str(tuned), "--steps", "4", "--batch-size", "4", "--warmup-steps",
          "1", "--learning-rate", "3e-3", "--log-every", "1", "--mixed-precision", "no",
          "--dead-code-restart-every", "2"])
    before = HybridTokenizer.from_pretrained(start / "tokenizer")
    after = HybridTokenizer.from_pretrained(tuned / "tokenizer")
    old, new = before.state_dict(), after.state_dict()
    kept = [name for name in old if not name.startswith("decoder.")]
    assert kept and all(torch.equal(old[name], new[name]) for name in kept)
    assert any(not torch.equal(old[name], new[name]) for name in old if name.startswith("decoder."))
    images = sorted(image_folder.glob("*.png")) + [extra / "plain.png"]
    a, b = before.encode(images), after.encode(images)
    assert all(torch.equal(x, y) for x, y in zip(a.codes, b.codes)) and torch.equal(a.residual, b.residual)
    assert after.fingerprint() == before.fingerprint()  # models trained on `before` load with `after`
    assert after.legacy_fingerprint() != before.legacy_fingerprint()


def test_a_frozen_encoder_may_get_a_deeper_decoder_but_keeps_every_code(image_folder, tiny_config_file, tmp_path):
    start = tmp_path / "start"
    run_training(image_folder, tiny_config_file, start, 3)
    before = HybridTokenizer.from_pretrained(start / "tokenizer")
    deeper = tmp_path / "deeper.json"
    blocks = [count + 1 for count in before.config.decoder_blocks]
    deeper.write_text(json.dumps({**json.loads(before.config.to_json()), "decoder_res_blocks_per_level": blocks}))
    run_training(image_folder, deeper, tmp_path / "tuned", 4, "--init", str(start / "tokenizer"), "--freeze-encoder")
    after = HybridTokenizer.from_pretrained(tmp_path / "tuned" / "tokenizer")
    assert list(after.config.decoder_blocks) == blocks
    assert sum(p.numel() for p in after.decoder.parameters()) > sum(p.numel() for p in before.decoder.parameters())
    images = sorted(image_folder.glob("*.png"))
    a, b = before.encode(images), after.encode(images)
    assert all(torch.equal(x, y) for x, y in zip(a.codes, b.codes)) and torch.equal(a.residual, b.residual)
    assert after.fingerprint() == before.fingerprint()


def test_a_frozen_encoder_refuses_a_config_that_changes_the_codes(image_folder, tiny_config_file, tmp_path):
    start = tmp_path / "start"
    run_training(image_folder, tiny_config_file, start, 3)
    config = json.loads(HybridTokenizer.from_pretrained(start / "tokenizer").config.to_json())
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps({**config, "lookup": "cosine" if config["lookup"] == "l2" else "l2"}))
    with pytest.raises(ValueError, match="may only deepen the decoder"):
        run_training(image_folder, changed, tmp_path / "tuned", 2, "--init", str(start / "tokenizer"),
                     "--freeze-encoder")
    assert not (tmp_path / "tuned" / "tokenizer").exists()


def test_freezing_needs_a_trained_tokenizer(image_folder, tiny_config_file, tmp_path):
    with pytest.raises(ValueError, match="give that tokenizer with --init"):
        run_training(image_folder, tiny_config_file, tmp_path / "run", 2, "--freeze-encoder")


def test_batches_depend_only_on_seed_and_step():
    full = ResumableBatchSampler(10, 3, seed=5, start_step=0)
    later = ResumableBatchSampler(10, 3, seed=5, start_step=4)
    first_six = [batch for batch, _ in zip(full, range(6))]
    assert [batch for batch, _ in zip(later, range(2))] == first_six[4:6]
    assert all(len(set(batch)) == 3 for batch in first_six)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableBatchSampler(2, 3, seed=0, start_step=0)


def test_a_bad_config_file_is_reported(image_folder, tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"image_size": 32, "scales": [1, 2, 3]}))
    with pytest.raises(ValueError, match="last scale must equal the latent size 4"):
        run_training(image_folder, config, tmp_path / "run", 2)


FLAGS = {  # every flag the tokenizer trainer has had, with its default
    "--data": "openmoji", "--extra-data": "[]", "--renders": "0", "--photos": "0", "--kmeans-images": "2048",
    "--config": "None", "--init": "None", "--freeze-encoder": "False", "--image-size": "None", "--steps": "20000",
    "--batch-size": "32", "--learning-rate": "0.0003", "--warmup-steps": "500", "--min-learning-rate-ratio": "0.1",
    "--ema-decay": "0.999", "--weight-decay": "0.0", "--discrete-path-probability": "0.5", "--vq-weight": "1.0",
    "--dead-code-restart-every": "200", "--horizontal-flip": "True", "--mixed-precision": "no",
    "--heldout-percent": "10.0", "--eval-every": "1000", "--checkpoint-every": "1000", "--log-every": "50",
    "--num-workers": "0", "--seed": "0",
}


def test_help_explains_every_flag_with_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # the width a terminal-less `--help` gets
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    options = capsys.readouterr().out.split("options:", 1)[1]
    entries = {}  # flag -> its help text
    for entry in re.split(r"\n  (?=--)", options):
        entries[entry.split()[0].rstrip(",")] = " ".join(entry.split())
    for flag, default in FLAGS.items():
        assert f"(default: {default})" in entries[flag], flag
    assert "(required)" in entries["--output-dir"]
    assert "TokenizerConfig" in entries["--config"] and "--no-horizontal-flip" in entries["--horizontal-flip"]
    assert "YAML or JSON file whose keys are the flags" in entries["--run-config"]


def test_a_run_config_file_sets_the_flags_and_flags_override_it(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text("output_dir: runs/x\nconfig: tiny.json\nsteps: 5\nlearning_rate: 1e-3\n"
                   "extra_data: [a, b]\nhorizontal_flip: false\n")
    args = parse_args(["--run-config", str(run), "--steps", "7"])
    assert (args.output_dir, args.config) == (Path("runs/x"), Path("tiny.json"))
    assert (args.steps, args.learning_rate) == (7, 1e-3)
    assert args.extra_data == [Path("a"), Path("b")] and args.horizontal_flip is False
    again = parse_args(["--run-config", str(run), "--extra-data", "c", "--extra-data", "d", "--horizontal-flip"])
    assert again.extra_data == [Path("c"), Path("d")] and again.horizontal_flip is True
    # --config keeps its meaning, the tokenizer's architecture; without a file the defaults are the old ones
    plain = parse_args(["--output-dir", "o", "--config", "t.json", "--freeze-encoder"])
    assert plain == TokenizerTrainConfig(output_dir=Path("o"), config=Path("t.json"), freeze_encoder=True)
    run.write_text("output_dir: o\nbatchsize: 4\n")
    with pytest.raises(ValueError, match=r"unknown keys \['batchsize'\]; known keys are \[.*'batch_size'"):
        parse_args(["--run-config", str(run)])
    with pytest.raises(SystemExit):
        parse_args(["--steps", "3"])
    assert "--output-dir is required (on the command line or in --run-config)" in capsys.readouterr().err


def test_a_run_from_a_run_config_file(image_folder, tiny_config_file, tmp_path):
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"data": str(image_folder), "config": str(tiny_config_file),
                               "output_dir": str(tmp_path / "run"), "steps": 2, "batch_size": 4,
                               "log_every": 1, "mixed_precision": "no"}))
    main(["--run-config", str(run), "--steps", "3"])
    assert [int(row["step"]) for row in read_log(tmp_path / "run")] == [1, 2, 3]
    assert HybridTokenizer.from_pretrained(tmp_path / "run" / "tokenizer").config == tiny_tokenizer_config()
