"""Reconstruction metrics on model-space pixels ([-1, 1]), reported on the usual [0, 1] scale."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


def _to_unit_range(pixels_BCHW: torch.Tensor) -> torch.Tensor:
    return ((pixels_BCHW.float().clamp(-1, 1) + 1) / 2)


def psnr(reconstruction_BCHW: torch.Tensor, target_BCHW: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, (B,), with a peak of 1 on [0, 1] pixels; average it over images."""
    mse = (_to_unit_range(reconstruction_BCHW) - _to_unit_range(target_BCHW)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim(reconstruction_BCHW: torch.Tensor, target_BCHW: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM, (B,): 11x11 Gaussian window, sigma 1.5 (Wang et al. 2004)."""
    return structural_similarity_index_measure(
        _to_unit_range(reconstruction_BCHW), _to_unit_range(target_BCHW), data_range=1.0, reduction="none"
    )
