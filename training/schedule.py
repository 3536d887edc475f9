"""The learning-rate schedule both trainers use: linear warm-up, then cosine decay to a floor.

transformers' `get_cosine_with_min_lr_schedule_with_warmup` has the same shape, but its
warm-up starts at a learning rate of 0, so the first optimizer step changes nothing; on a
CPU budget of ~100 steps that is 1% spent on nothing. Here step 0 already gets 1/warmup.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, floor: float) -> float:
    """Multiplier of the peak learning rate at `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  floor: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, floor))


def use_config_peaks(scheduler: torch.optim.lr_scheduler.LambdaLR, peaks: list[float]) -> list[float]:
    """After loading a checkpoint: continue with `peaks` (this run's configured peak learning
    rates) and return the checkpoint's. A LambdaLR's saved state carries the peaks it started
    with while its shape (warm-up, length, floor) comes from the config, so a run resumed with a
    new learning rate kept the old one without a word."""
    saved = list(scheduler.base_lrs)
    scheduler.base_lrs = list(peaks)
    for group, peak, factor in zip(scheduler.optimizer.param_groups, peaks, scheduler.lr_lambdas):
        group["initial_lr"], group["lr"] = peak, peak * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
    return saved
