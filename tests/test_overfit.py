"""The memorise-N-drawings benchmark's pieces, and the recipe changes it judged, on tiny models."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from PIL import Image

from benchmarks.overfit import drawing_conversations, reproduced, scale_accuracy, teacher_forced_accuracy
from tests.tiny_vlm import drawing_chat, perturbed, tiny_model
from training.train import (
    IMAGE_LAYER_PREFIXES,
    RESIDUAL_HEAD_PREFIX,
    TrainConfig,
    parameter_groups,
    resolve_precision,
)
from vlm.teacher_forcing import teacher_forced_code_logits
from vlm.unified_model import UnifiedVLM, UnifiedVLMConfig


def test_drawing_conversations_are_distinct_seeded_single_shapes():
    cases = drawing_conversations(20, seed=0)
    assert len({tuple((s.kind, s.colour, s.size, s.x, s.y) for s in scene) for scene, _ in cases}) == 20
    assert all(len(scene) == 1 for scene, _ in cases)
    scene, messages = cases[0]
    assert messages[0]["content"].startswith(f"Draw a {scene[0].phrase}")
    assert isinstance(messages[1]["content"][1]["image"], Image.Image)
    assert drawing_conversations(3, seed=0)[0][1][0] == messages[0]
    with pytest.raises(ValueError, match="distinct single shapes"):
        drawing_conversations(400, seed=0)


def test_scale_accuracy_on_known_predictions():
    scales = (1, 2, 3)
    codes = torch.arange(14)
    predicted = codes.clone()
    predicted[0] = 99  # scale 1 wrong
    predicted[1:3] = 99  # half of scale 2 wrong
    assert scale_accuracy(predicted, codes, scales) == [(0, 1), (2, 4), (9, 9)]
    with pytest.raises(ValueError, match="expected 14 codes"):
        scale_accuracy(predicted[:5], codes[:5], scales)


def test_the_judge_accepts_true_renders_and_refuses_others():
    cases = drawing_conversations(12, seed=1)
    for scene, messages in cases:
        assert reproduced(scene, messages[1]["content"][1]["image"])
    scene = cases[0][0]
    assert not reproduced(scene, Image.new("RGB", (64, 64), "white"))
    assert not reproduced(scene, cases[1][1][1]["content"][1]["image"])
    assert not reproduced(scene, None)


def test_teacher_forced_accuracy_matches_the_argmax_of_the_forward(tiny_parts):
    model = perturbed(tiny_model(tiny_parts))
    model.eval()
    accuracy = teacher_forced_accuracy(model, [drawing_chat(), drawing_chat()])
    assert len(accuracy) == len(model.image_tokenizer.config.scales)
    batch = model.processor([drawing_chat()])
    (logits, codes), = teacher_forced_code_logits(model, batch)
    full = model(batch).image_logits[:codes.numel()]
    torch.testing.assert_close(logits, full.float())
    expected = [correct / total for correct, total in
                scale_accuracy(logits.argmax(-1), codes, model.image_tokenizer.config.scales)]
    assert accuracy == pytest.approx(expected)


def test_training_losses_need_no_full_logits(tiny_parts):
    model = perturbed(tiny_model(tiny_parts))
    model.eval()
    batch = model.processor([drawing_chat(), [{"role": "user", "content": "Hi"},
                                              {"role": "assistant", "content": "Hello there."}]])
    full = model(batch, generator=torch.Generator().manual_seed(0)).losses
    lean = model(batch, generator=torch.Generator().manual_seed(0), all_logits=False)
    assert lean.text_logits.numel() == 0
    for name in ("text", "image", "residual", "total"):
        torch.testing.assert_close(lean.losses[name], full[name])


def test_image_inputs_come_at_the_text_embeddings_scale(tiny_parts):
    model = tiny_model(tiny_parts, image_input_norm=True)
    text = model.language_model.get_input_embeddings().weight[:model.base_vocab_size]
    text_rms = float(text.detach().square().mean(dim=-1).sqrt().mean())
    latent = torch.randn(1, 8, 2, 2) * 5
    inputs = model.image_block_embeddings(1, latent)
    assert float(inputs.square().mean(dim=-1).sqrt().mean()) == pytest.approx(text_rms, rel=1e-3)
    legacy = tiny_model(tiny_parts, image_input_norm=False)
    assert legacy.image_embedder.input_gain is None


def test_precision_auto_and_learning_rate_groups(tiny_parts):
    assert resolve_precision("no") == "no" and resolve_precision("bf16") == "bf16"
    capability = torch.backends.cpu.get_cpu_capability()
    if not torch.cuda.is_available():
        assert resolve_precision("auto") == ("bf16" if capability in ("AVX512", "AMX") else "no")
    model = tiny_model(tiny_parts)
    groups = parameter_groups(model, TrainConfig(learning_rate=1e-3, image_layers_learning_rate=5e-3,
                                                 residual_head_learning_rate=2e-3))
    assert [group["lr"] for group in groups] == [1e-3, 5e-3, 2e-3]
    image_ids = {id(p) for name, p in model.named_parameters() if name.startswith(IMAGE_LAYER_PREFIXES)}
    assert {id(p) for p in groups[1]["params"]} == image_ids
    residual_ids = {id(p) for name, p in model.named_parameters() if name.startswith(RESIDUAL_HEAD_PREFIX)}
    assert residual_ids and {id(p) for p in groups[2]["params"]} == residual_ids
    defaults = parameter_groups(model, TrainConfig(learning_rate=1e-3))
    assert [group["lr"] for group in defaults] == [1e-3, 1e-3, 1e-3]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for group in groups for p in group["params"]} == trainable


@pytest.mark.parametrize("per", ["token", "scale", "side"])
def test_per_scale_image_losses_and_their_weighting(tiny_parts, per):
    model = perturbed(tiny_model(tiny_parts, image_loss_per=per))
    model.eval()
    output = model(model.processor([drawing_chat(), drawing_chat()]), all_logits=False)
    scales = model.image_tokenizer.config.scales
    per_scale = torch.stack([output.metrics[f"image_scale_{index + 1}"] for index in range(len(scales))])
    sizes = torch.tensor([size * size for size in scales], dtype=torch.float32)
    sides = torch.tensor(scales, dtype=torch.float32)
    expected = {"scale": per_scale.mean(), "token": (per_scale * sizes).sum() / sizes.sum(),
                "side": (per_scale * sides).sum() / sides.sum()}[per]
    torch.testing.assert_close(output.losses["image"].detach(), expected)
    with pytest.raises(ValueError, match="image_loss_per"):
        tiny_model(tiny_parts, image_loss_per="pixel")


def test_learnability_data_and_heldout_losses(tiny_parts):
    from benchmarks.fresh_training import image_losses
    from benchmarks.learnability import drawing_set

    first, again = drawing_set(5, "a"), drawing_set(5, "a")
    assert [c[0]["content"] for c in first] == [c[0]["content"] for c in again]
    assert [c[0]["content"] for c in first] != [c[0]["content"] for c in drawing_set(5, "b")]
    model = perturbed(tiny_model(tiny_parts))
    losses = image_losses(model, [drawing_chat(), drawing_chat(), drawing_chat()], batch_size=2)
    scales = model.image_tokenizer.config.scales
    assert set(losses) == {"image", *(f"image_scale_{k + 1}" for k in range(len(scales)))}
    assert all(value > 0 for value in losses.values())


def test_fresh_runs_keep_or_remove_their_work_folder(tmp_path):
    from benchmarks.fresh_training import run_in_work_dir

    seen = []
    assert run_in_work_dir(None, "x-", lambda work: {"work": str(seen.append(work) or work)})["work"]
    assert not seen[0].exists()
    assert run_in_work_dir(tmp_path / "kept", "x-", lambda work: {"ok": work.is_dir()}) == {"ok": True}
    (tmp_path / "kept" / "run").mkdir()
    with pytest.raises(SystemExit, match="exists"):
        run_in_work_dir(tmp_path / "kept", "x-", lambda work: {})


@pytest.mark.slow
def test_a_fresh_run_drives_the_trainer_command_line(tiny_parts, tmp_path):
    from benchmarks.fresh_training import FreshRun, read_log
    from worlds.conversation_writer import ConversationWriter

    backbone_dir, tokenizer_dir = tiny_parts
    with ConversationWriter(tmp_path, "drawings") as writer:
        for _, messages in drawing_conversations(4, seed=0):
            writer.add(messages)
    fresh = FreshRun(2, batch_size=2, warmup_steps=1, tokenizer=str(tokenizer_dir),
                     extra=["--backbone", str(backbone_dir), "--lora-rank", "4", "--mixed-precision", "no"])
    command = fresh.command(writer.path, tmp_path / "run")
    assert command[1:3] == ["-m", "training.train"] and str(tmp_path / "run") in command
    assert fresh.train(writer.path, tmp_path / "run") > 0
    assert [row["step"] for row in read_log(tmp_path / "run" / "log.csv")] == [1.0, 2.0]
    assert (tmp_path / "run" / "model" / "vlm_config.json").is_file()
    # A failing child is reported with its exit code (how the trainer fails on bad data is tested in
    # test_bad_inputs and test_train; a second child process here would cost seconds for the same code path).
    import subprocess

    from benchmarks import fresh_training

    failed = subprocess.CompletedProcess(fresh.command(writer.path, tmp_path / "run-2"), returncode=2)
    with mock.patch.object(fresh_training.subprocess, "run", return_value=failed), \
            pytest.raises(SystemExit, match="failed with exit code 2"):
        fresh.train(writer.path, tmp_path / "run-2")


def test_fresh_run_paths_relative_to_the_caller_are_made_absolute(tmp_path):
    from benchmarks.fresh_training import REPOSITORY, absolute_paths

    (tmp_path / "tok").mkdir()
    arguments = ["--image-tokenizer", "tok", "--init=tok", "--steps", "3", "--init", "new"]
    assert absolute_paths(arguments, tmp_path) == ["--image-tokenizer", str(tmp_path / "tok"),
                                                   f"--init={tmp_path / 'tok'}", "--steps", "3", "--init", "new"]
    assert absolute_paths(arguments, REPOSITORY) == arguments  # the trainer runs there: nothing to change


def test_reproduction_ceilings_count_what_the_detector_passes(tiny_parts):
    from benchmarks.overfit import reproduction_ceilings
    from vlm.residual_head import ResidualHeadConfig

    backbone_dir, _ = tiny_parts
    config = UnifiedVLMConfig(backbone=str(backbone_dir), lora_rank=4,
                              residual_head=ResidualHeadConfig(width=32, depth=1))
    model = perturbed(UnifiedVLM.from_backbone(config))  # the shipped tokenizer: its round trip is real
    cases = drawing_conversations(4, seed=0)
    counts = reproduction_ceilings(model, cases, residual_steps=2, seed=0)
    assert set(counts) == {"tokenizer_true_residual", "tokenizer_no_residual", "true_codes_model_residual"}
    tokenizer = model.image_tokenizer
    round_trip = tokenizer.decode_to_images(tokenizer.encode([messages[1]["content"][1]["image"]
                                                              for _, messages in cases]))
    assert counts["tokenizer_true_residual"] == sum(reproduced(scene, image)
                                                    for (scene, _), image in zip(cases, round_trip))
    assert all(0 <= count <= 4 for count in counts.values())
