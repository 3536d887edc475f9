"""Picking tokens from logits: temperature, top-k, top-p and repetition penalty.

The filters are transformers' own logits warpers, so they behave exactly as in the
backbone's `generate()`. Sampling draws from one seeded `torch.Generator` so a run with
the same seed and settings repeats itself.
"""

from __future__ import annotations

import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def filter_logits(logits_NV: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Scaled and filtered logits (removed entries at -inf); temperature 0 leaves them for argmax."""
    scores = logits_NV.float()
    if temperature > 0:
        scores = scores / temperature
    if top_k > 0:
        scores = TopKLogitsWarper(min(top_k, scores.shape[-1]))(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores


def penalise_repeats(logits_V: torch.Tensor, previous_ids: list[int], penalty: float) -> torch.Tensor:
    """One row's logits with HF's repetition penalty over the ids it has already seen."""
    if penalty == 1.0 or not previous_ids:
        return logits_V
    previous = torch.tensor([previous_ids], device=logits_V.device)
    return RepetitionPenaltyLogitsProcessor(penalty)(previous, logits_V[None].float())[0]


def guide(conditional: torch.Tensor, unconditional: torch.Tensor, strength: float) -> torch.Tensor:
    """Classifier-free guidance in HART's form: (1 + t) cond - t uncond (t = 0: conditional only)."""
    if strength == 0:
        return conditional
    return (1 + strength) * conditional.float() - strength * unconditional.float()


def code_log_likelihood(logits_BNV: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """(B,) summed log-probability of each row's codes (B, N, or B, s, s) under its logits: how
    likely a drawn scale is, the score image candidates (and benchmarks.best_of_n) rank by."""
    return torch.log_softmax(logits_BNV.float(), dim=-1).gather(-1, codes.flatten(1)[..., None])[..., 0].sum(dim=-1)
