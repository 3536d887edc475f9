"""Distil the residual diffusion head into a one-step generator (DMD, Yin et al. 2024).

    python -m training.distill_residual --data data/default/mix.yaml --output runs/distilled
    python -m training.distill_residual --model runs/mine/model --data my.jsonl --output runs/mine_one_step

The trained head is the frozen "real" score. A copy of it (the "fake" score) keeps learning,
online, the diffusion loss on the one-step generator's outputs. The generator (a third
copy: same conditioning, pure noise in, a residual out in one call) follows the
distribution-matching gradient, the difference of the fake and real x0-predictions at a
random noise level, plus DMD's regression loss towards the head's own 8-step samples from
the same noise (pairs made before training starts). Conditions come from real training
conversations run through the decoder with their true codes (`teacher_forced_residuals`),
so no decoder runs during the distillation itself: minutes on a CPU.

The output folder is the input model with the one-step generator added beside the head;
`residual_steps=1` then uses it (in `generate`, the chat, and the app).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from training.data import DataError
from training.mixed_data import MixedConversations
from vlm.files import swap_in
from vlm.residual_head import ResidualDiffusionHead
from vlm.teacher_forcing import teacher_forced_residuals
from vlm.unified_model import UnifiedVLM

logger = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    data: str = ""  # JSONL or YAML mix of conversations; those with assistant images give conditions
    output: str = ""  # folder for the model with the one-step head (must not exist, or use --overwrite)
    model: str | None = None  # the model whose head is distilled (default: the shipped default model)
    images: int = 512  # drawn images whose conditions are collected (x positions each)
    batch_conversations: int = 8  # conversations per decoder pass while collecting
    steps: int = 3000  # at 1,500 the shipped model's head landed 10.4% above 8 steps' energy score, at 3,000 7.6%
    batch_size: int = 1024  # condition vectors per generator step
    learning_rate: float = 1e-4
    fake_learning_rate: float = 1e-4
    fake_updates: int = 1  # fake-score steps per generator step
    regression_pairs: int = 16384  # (noise, 8-step teacher output) pairs made in advance
    regression_weight: float = 10.0  # at 0.25 the DM term dominated: residual energy 1.26x, -2.6 dB
    teacher_steps: int = 8
    min_timestep: int = 20  # DMD's noise levels for the distribution-matching gradient
    max_timestep: int = 980
    validation_share: float = 0.1  # images kept out of training to report the fit on
    log_every: int = 50
    seed: int = 0


HELP = {
    "data": "training conversations (JSONL, or a YAML mix); only those with assistant images are used",
    "output": "folder to write the model with the one-step head to",
    "model": "model folder whose residual head is distilled (default: the shipped default model)",
    "images": "drawn images whose decoder conditions are collected",
    "batch_conversations": "conversations per decoder pass while collecting conditions",
    "steps": "generator steps",
    "batch_size": "condition vectors per generator step",
    "learning_rate": "generator AdamW learning rate",
    "fake_learning_rate": "fake-score AdamW learning rate",
    "fake_updates": "fake-score updates per generator step",
    "regression_pairs": "(noise, teacher sample) pairs for the regression loss, made before training",
    "regression_weight": "weight of the regression loss against the distribution-matching loss",
    "teacher_steps": "DDIM steps of the teacher samples the regression loss matches",
    "min_timestep": "lowest noise level of the distribution-matching gradient",
    "max_timestep": "highest noise level of the distribution-matching gradient",
    "validation_share": "share of the collected images held out to report the fit on",
    "log_every": "steps between log rows",
    "seed": "seed for data order, noise and initialisation",
}


def parse_args(argv: list[str] | None = None) -> tuple[DistillConfig, bool]:
    parser = argparse.ArgumentParser(prog="python -m training.distill_residual", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    for field in fields(DistillConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = int if isinstance(field.default, int) else float if isinstance(field.default, float) else str
        parser.add_argument(flag, type=kind, default=field.default, required=field.name in ("data", "output"),
                            help=f"{HELP[field.name]} (default: {field.default})")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists (never the input model)")
    args = vars(parser.parse_args(argv))
    overwrite = args.pop("overwrite")
    config = DistillConfig(**args)
    if config.steps < 1 or config.images < 2 or config.batch_size < 1:
        parser.error("--steps, --batch-size must be >= 1 and --images >= 2")
    if not 0 <= config.min_timestep < config.max_timestep:
        parser.error("need 0 <= --min-timestep < --max-timestep")
    return config, overwrite


def collect_conditions(model: UnifiedVLM, data: str, images: int, batch_conversations: int, seed: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_images, positions, hidden) conditions and (n_images, positions, C) true residuals."""
    mix = MixedConversations(data, seed)
    drawing = [conversation for source in mix.sources for conversation in source
               if any(message["role"] == "assistant" and any(part["type"] == "image" for part in message["content"])
                      for message in conversation)]
    if not drawing:
        raise DataError(f"{data}: no conversation has an assistant image to distil on")
    random.Random(seed).shuffle(drawing)
    conditions, residuals, count = [], [], 0
    progress = tqdm(total=images, desc="collecting conditions")
    for first in range(0, len(drawing), batch_conversations):
        # As in training: a drawing that ends its conversation needs no final block (nothing reads it).
        batch = model.processor(drawing[first:first + batch_conversations], skip_unread_final_blocks=True)
        condition, residual, _ = teacher_forced_residuals(model, batch)
        conditions.append(condition.cpu())
        residuals.append(residual.cpu())
        count += len(condition)
        progress.update(len(condition))
        if count >= images:
            break
    progress.close()
    return torch.cat(conditions)[:images], torch.cat(residuals)[:images]


def distribution_matching_loss(head: ResidualDiffusionHead, real, fake, sample_NC: torch.Tensor,
                               condition_NC: torch.Tensor, config: DistillConfig, generator: torch.Generator
                               ) -> torch.Tensor:
    """DMD's generator loss: its gradient wrt the sample is (x0_fake - x0_real), normalised per sample."""
    count = sample_NC.shape[0]
    timesteps = torch.randint(config.min_timestep, config.max_timestep + 1, (count,), generator=generator)
    noise = torch.randn(sample_NC.shape, generator=generator)
    alpha_bar = head.alphas_cumprod[timesteps][:, None]
    with torch.no_grad():
        noisy = alpha_bar.sqrt() * sample_NC + (1 - alpha_bar).sqrt() * noise
        real_x0 = head.x0_from_velocity(noisy, real(noisy, timesteps, condition_NC).float(), timesteps)
        fake_x0 = head.x0_from_velocity(noisy, fake(noisy, timesteps, condition_NC).float(), timesteps)
        weight = 1.0 / ((sample_NC - real_x0).abs().mean(dim=1, keepdim=True) + 1e-6)
        gradient = (fake_x0 - real_x0) * weight
    return 0.5 * F.mse_loss(sample_NC, (sample_NC - gradient).detach())


def fake_score_loss(head: ResidualDiffusionHead, fake, sample_NC: torch.Tensor, condition_NC: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    """The head's own v-prediction loss, on the generator's (detached) outputs."""
    count = sample_NC.shape[0]
    timesteps = torch.randint(0, head.config.num_train_timesteps, (count,), generator=generator)
    noise = torch.randn(sample_NC.shape, generator=generator)
    alpha_bar = head.alphas_cumprod[timesteps][:, None]
    noisy = alpha_bar.sqrt() * sample_NC + (1 - alpha_bar).sqrt() * noise
    velocity = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * sample_NC
    return F.mse_loss(fake(noisy, timesteps, condition_NC).float(), velocity)


def distil(head: ResidualDiffusionHead, conditions_NH: torch.Tensor, residuals_NC: torch.Tensor,
           config: DistillConfig, log_path: Path | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Train a one-step generator for `head` on these condition vectors; returns it and the log.

    `residuals_NC` are the true residuals of the last rows (the validation share), used only
    to report how close each sampler gets.
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    scale = head.config.target_scale
    validation = max(1, int(len(conditions_NH) * config.validation_share))
    train_conditions, valid_conditions = conditions_NH[:-validation], conditions_NH[-validation:]
    valid_residuals = residuals_NC[-validation:] * scale
    real = head.denoiser.eval().requires_grad_(False)
    fake = copy.deepcopy(real).train().requires_grad_(True)
    student = copy.deepcopy(real).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=0.0)
    fake_optimizer = torch.optim.AdamW(fake.parameters(), lr=config.fake_learning_rate, weight_decay=0.0)

    pair_rows = torch.randint(len(train_conditions), (config.regression_pairs,), generator=generator)
    pair_noise = torch.randn((config.regression_pairs, head.config.latent_channels), generator=generator)
    with torch.no_grad():
        pair_targets = torch.cat([
            head.sample(train_conditions[rows], config.teacher_steps, noise_NC=noise, distilled=False) * scale
            for rows, noise in zip(pair_rows.split(4096), pair_noise.split(4096))])
        valid_noise = torch.randn((len(valid_conditions), head.config.latent_channels), generator=generator)
        teacher_valid = head.sample(valid_conditions, config.teacher_steps, noise_NC=valid_noise,
                                    distilled=False) * scale

    def validate() -> dict[str, float]:
        student.eval()
        with torch.no_grad():
            sample = head.one_step_sample(student, valid_noise, valid_conditions)
        student.train()
        return {"valid_mse_to_teacher": float(F.mse_loss(sample, teacher_valid)),
                "valid_mse_to_true": float(F.mse_loss(sample, valid_residuals))}

    rows, columns = [], ["step", "dm", "regression", "fake", "valid_mse_to_teacher", "valid_mse_to_true"]
    sums = {"dm": 0.0, "regression": 0.0, "fake": 0.0}
    progress = tqdm(range(1, config.steps + 1), desc="distilling the residual head")
    for step in progress:
        chosen = torch.randint(len(train_conditions), (config.batch_size,), generator=generator)
        condition = train_conditions[chosen]
        noise = torch.randn((config.batch_size, head.config.latent_channels), generator=generator)
        sample = head.one_step_sample(student, noise, condition)
        dm = distribution_matching_loss(head, real, fake, sample, condition, config, generator)
        pairs = torch.randint(config.regression_pairs, (config.batch_size,), generator=generator)
        regression = F.mse_loss(head.one_step_sample(student, pair_noise[pairs], train_conditions[pair_rows[pairs]]),
                                pair_targets[pairs])
        optimizer.zero_grad(set_to_none=True)
        (dm + config.regression_weight * regression).backward()
        optimizer.step()
        for _ in range(config.fake_updates):
            fake_loss = fake_score_loss(head, fake, sample.detach(), condition, generator)
            fake_optimizer.zero_grad(set_to_none=True)
            fake_loss.backward()
            fake_optimizer.step()
        sums["dm"] += float(dm)
        sums["regression"] += float(regression)
        sums["fake"] += float(fake_loss)
        if step % config.log_every == 0 or step == config.steps:
            span = config.log_every if step % config.log_every == 0 else step % config.log_every
            row = {"step": step, **{name: value / span for name, value in sums.items()}, **validate()}
            rows.append(row)
            progress.set_postfix(regression=f"{row['regression']:.4f}", valid=f"{row['valid_mse_to_teacher']:.4f}")
            sums = dict.fromkeys(sums, 0.0)
            if log_path is not None:
                new = not log_path.is_file()
                with log_path.open("a", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=columns)
                    if new:
                        writer.writeheader()
                    writer.writerow({name: f"{row[name]:.6g}" if name != "step" else step for name in columns})
    return student.eval().requires_grad_(False), rows


def main(argv: list[str] | None = None) -> None:
    config, overwrite = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    output = Path(config.output)
    source = Path(config.model).resolve() if config.model else None
    if source is not None and output.resolve() == source:
        raise SystemExit(f"--output {output} is the input model; write the distilled model to a new folder")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise SystemExit(f"{output} exists and is not empty; pass --overwrite to replace it")
    model = UnifiedVLM.from_pretrained(config.model)
    conditions, residuals = collect_conditions(model, config.data, config.images, config.batch_conversations,
                                               config.seed)
    logger.info("collected %d images x %d positions of conditions", conditions.shape[0], conditions.shape[1])
    # Images, not positions, are split: validation rows come from images the generator never saw.
    conditions_NH, residuals_NC = conditions.flatten(0, 1), residuals.flatten(0, 1)
    staging = output.with_name(output.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    student, rows = distil(model.residual_head, conditions_NH, residuals_NC, config, staging / "distill_log.csv")
    model.residual_head.add_one_step(student)
    model.save_pretrained(staging)
    (staging / "distill_config.json").write_text(json.dumps(asdict(config), indent=2))
    swap_in(staging, output)
    logger.info("wrote %s (final: %s)", output, rows[-1] if rows else {})


if __name__ == "__main__":
    main()
