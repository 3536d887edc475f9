"""One-step residual head by DMD (issue 8): the trainer's losses, determinism, save/load (tiny model)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from generation import GenerationConfig, generate
from tests.tiny_vlm import drawing_chat, perturbed, tiny_model
from training.distill_residual import DistillConfig, distil, distribution_matching_loss, main
from vlm.teacher_forcing import teacher_forced_residuals
from vlm.unified_model import UnifiedVLM


def _conditions(model: UnifiedVLM, copies: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    batch = model.processor([drawing_chat() for _ in range(copies)])
    conditions, residuals, indices = teacher_forced_residuals(model, batch)
    assert conditions.shape[:2] == residuals.shape[:2] and len(indices) == copies
    return conditions.flatten(0, 1), residuals.flatten(0, 1)


def test_the_distribution_matching_gradient_vanishes_when_fake_equals_real(tiny_parts):
    model = perturbed(tiny_model(tiny_parts))
    head = model.residual_head
    conditions, _ = _conditions(model)
    sample = torch.randn(len(conditions), head.config.latent_channels, requires_grad=True)
    generator = torch.Generator().manual_seed(0)
    same = distribution_matching_loss(head, head.denoiser, head.denoiser, sample, conditions, DistillConfig(),
                                      generator)
    same.backward()
    assert float(same) == 0 and float(sample.grad.abs().max()) == 0
    other = copy.deepcopy(head.denoiser)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    assert float(distribution_matching_loss(head, head.denoiser, other, sample, conditions, DistillConfig(),
                                            generator)) > 0


def test_the_trainer_lowers_the_regression_loss_and_logs_every_loss(tiny_parts, tmp_path):
    model = perturbed(tiny_model(tiny_parts))
    conditions, residuals = _conditions(model)
    config = DistillConfig(steps=60, batch_size=64, regression_pairs=256, log_every=20, learning_rate=1e-3,
                           fake_learning_rate=1e-3, teacher_steps=4)
    student, rows = distil(model.residual_head, conditions, residuals, config, tmp_path / "log.csv")
    assert [row["step"] for row in rows] == [20, 40, 60]
    for row in rows:
        assert all(torch.isfinite(torch.tensor(row[name])) for name in ("dm", "regression", "fake"))
    assert rows[-1]["regression"] < rows[0]["regression"]
    assert (tmp_path / "log.csv").read_text().startswith("step,dm,regression,fake")
    assert not any(parameter.requires_grad for parameter in student.parameters())


def test_one_step_sampling_is_deterministic_and_the_choice_survives_save_and_load(tiny_parts, tmp_path):
    model = perturbed(tiny_model(tiny_parts))
    head = model.residual_head
    conditions, _ = _conditions(model, 1)
    assert head.one_step is None
    student = copy.deepcopy(head.denoiser)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    head.add_one_step(student)

    def sample(distilled: bool = True) -> torch.Tensor:
        return head.sample(conditions, 1, torch.Generator().manual_seed(3), distilled=distilled)

    assert torch.equal(sample(), sample())
    assert not torch.allclose(sample(), sample(distilled=False))  # the distilled generator, not one DDIM step
    model.save_pretrained(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "vlm_config.json").read_text())["residual_head"]["one_step"] is True
    loaded = UnifiedVLM.from_pretrained(tmp_path / "model")
    assert loaded.residual_head.one_step is not None
    again = loaded.residual_head.sample(conditions, 1, torch.Generator().manual_seed(3))
    assert torch.allclose(again, sample(), atol=1e-5)
    config = GenerationConfig(force_image=True, max_images=1, max_new_tokens=2, residual_steps=1, seed=5)
    first, second = (generate(loaded, [{"role": "user", "content": "Draw."}], config)[0] for _ in range(2))
    assert torch.equal(first.image_tokens[0].residual, second.image_tokens[0].residual)


def test_the_command_writes_a_loadable_model_and_never_overwrites_the_input(tiny_parts, tmp_path):
    model_dir, data = tmp_path / "model", tmp_path / "data.jsonl"
    perturbed(tiny_model(tiny_parts)).save_pretrained(model_dir)
    chat = drawing_chat()
    image_path = tmp_path / "circle.png"
    chat[1]["content"][1]["image"].save(image_path)
    record = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Draw a red circle."}]},
                           {"role": "assistant", "content": [{"type": "text", "text": "Here:"},
                                                             {"type": "image", "path": "circle.png"}]}]}
    data.write_text("\n".join(json.dumps(record) for _ in range(4)) + "\n")
    out = tmp_path / "one_step"
    main(["--model", str(model_dir), "--data", str(data), "--output", str(out), "--images", "4", "--steps", "3",
          "--batch-size", "16", "--regression-pairs", "32", "--log-every", "1"])
    assert UnifiedVLM.from_pretrained(out).residual_head.one_step is not None
    assert (out / "distill_log.csv").is_file() and not (tmp_path / "one_step.tmp").exists()
    with pytest.raises(SystemExit, match="input model"):
        main(["--model", str(model_dir), "--data", str(data), "--output", str(model_dir)])
    with pytest.raises(SystemExit, match="not empty"):
        main(["--model", str(model_dir), "--data", str(data), "--output", str(out)])


def test_blind_conditions_are_what_the_unconditional_branch_sees(tiny_parts):
    """The residual head benchmark guides the head as drawings do: its unconditional conditions
    come from the same pass with every drawn image blind to its prompt (training's condition
    dropout at probability 1, which draws no random numbers)."""
    from vlm.teacher_forcing import blind_drawings, dropped_drawings

    model = perturbed(tiny_model(tiny_parts))
    batch = model.processor([drawing_chat(), drawing_chat()])
    seen, residuals, _ = teacher_forced_residuals(model, batch)
    state = torch.get_rng_state()
    blind, same_residuals, _ = teacher_forced_residuals(model, batch, blind=True)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(residuals, same_residuals) and not torch.allclose(seen, blind, atol=1e-4)
    model.config.condition_dropout = 1.0
    with torch.no_grad():
        tokens = model.image_tokenizer.encode_pixels(batch.pixels)
        embeddings = model.embed(batch, tokens)
        dropped = dropped_drawings(model, batch, None)
        mask = blind_drawings(model, batch, batch.attention_mask(embeddings.dtype), dropped)
        hidden = model.run_decoder(embeddings, mask, batch.position_ids)
    last = model.image_tokenizer.config.scales[-1] ** 2
    layout = batch.images[0]
    end = layout.start + sum(code.numel() for code in tokens[layout.image_index].codes)
    expected = model.residual_condition(hidden[layout.sequence_index, end - last:end],
                                        torch.cat([code.flatten() for code in tokens[0].codes])[-last:])
    torch.testing.assert_close(blind[0], expected.float(), rtol=0, atol=1e-5)
