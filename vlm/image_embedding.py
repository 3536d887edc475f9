"""How image positions enter the decoder: latent projection, start vector, level and 2-D position.

Every image position's input is (what it shows) + (where it is):
- what: a projection of a latent vector (the running discrete sum at that scale, or the
  finished latent for the final block), or a learned start vector for the 1x1 first scale;
- where: a level embedding (scale k, or the final block) plus Fourier features of its
  (row, column) centre on the final grid, so every scale shares one frame (HART).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def fourier_features(grid_NC: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """(N, 2) coordinates in [0, 1] -> (N, 4 * num_frequencies) sines and cosines."""
    frequencies = 2.0 ** torch.arange(num_frequencies, device=grid_NC.device) * math.pi
    angles = grid_NC[..., None] * frequencies  # (N, 2, F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class ImageEmbedder(nn.Module):
    """Latent vectors and their places -> decoder input vectors."""

    def __init__(self, latent_channels: int, hidden_size: int, num_levels: int, num_frequencies: int):
        super().__init__()
        self.num_frequencies = num_frequencies
        self.latent_projection = nn.Linear(latent_channels, hidden_size)
        self.start = nn.Parameter(torch.randn(hidden_size) * 0.02)
        self.level_embedding = nn.Embedding(num_levels, hidden_size)
        nn.init.normal_(self.level_embedding.weight, std=0.02)
        self.position_projection = nn.Linear(4 * num_frequencies, hidden_size)

    def place(self, levels_N: torch.Tensor, grid_N2: torch.Tensor) -> torch.Tensor:
        """(N,) levels and (N, 2) grid centres -> (N, hidden)."""
        features = fourier_features(grid_N2.to(self.start.dtype), self.num_frequencies)
        return self.level_embedding(levels_N) + self.position_projection(features)

    def content(self, latents_NC: torch.Tensor) -> torch.Tensor:
        return self.latent_projection(latents_NC.to(self.start.dtype))
