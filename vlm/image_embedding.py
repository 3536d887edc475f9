"""How image positions enter the decoder: latent projection, start vector, level and 2-D position.

Every image position's input is (what it shows) + (where it is):
- what: a projection of a latent vector (the running discrete sum at that scale, or the
  finished latent for the final block), or a learned start vector for the 1x1 first scale;
- where: a level embedding (scale k, or the final block) plus Fourier features of its
  (row, column) centre on the final grid, so every scale shares one frame (HART);
- with the source hint (`UnifiedVLMConfig.source_hint`), a drawn image's scale positions also
  add a projection of what the previous image of the conversation would still add at that
  scale and place (`MultiScaleQuantizer.still_missing`): an edit or the next step of a drawing
  reads its source where it draws, as image editors take the source latent as extra input
  channels (InstructPix2Pix), instead of finding it through attention.
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

    def __init__(self, latent_channels: int, hidden_size: int, num_levels: int, num_frequencies: int,
                 input_rms: float | None = None, source_hint: bool = False):
        super().__init__()
        self.num_frequencies = num_frequencies
        # With `input_rms`, every image input is RMS-normalised and scaled by a learned gain that
        # starts at the backbone's text-embedding RMS. Without it, image inputs came out ~4x the
        # norm of text embeddings (10.7 vs 2.7). Measured on the memorise-16 benchmark, matching
        # the scales did not change the loss (docs/overfit), so it is an option, off by default.
        self.input_gain = nn.Parameter(torch.full((hidden_size,), float(input_rms))) if input_rms else None
        self.latent_projection = nn.Linear(latent_channels, hidden_size)
        self.start = nn.Parameter(torch.randn(hidden_size) * 0.02)
        self.level_embedding = nn.Embedding(num_levels, hidden_size)
        nn.init.normal_(self.level_embedding.weight, std=0.02)
        self.position_projection = nn.Linear(4 * num_frequencies, hidden_size)
        self.hint_projection = self.new_hint_projection(latent_channels, hidden_size) if source_hint else None

    @staticmethod
    def new_hint_projection(latent_channels: int, hidden_size: int) -> nn.Linear:
        """Zero at first, so adding the hint to a trained model changes none of its outputs."""
        projection = nn.Linear(latent_channels, hidden_size)
        nn.init.zeros_(projection.weight)
        nn.init.zeros_(projection.bias)
        return projection

    def add_source_hint(self) -> None:
        if self.hint_projection is None:
            latent_channels, hidden_size = self.latent_projection.in_features, self.latent_projection.out_features
            self.hint_projection = self.new_hint_projection(latent_channels, hidden_size).to(
                self.latent_projection.weight.device)

    def hint(self, missing_NC: torch.Tensor) -> torch.Tensor:
        """(N, C) latent vectors still missing from the source -> (N, hidden), added to `content`."""
        if self.hint_projection is None:
            raise ValueError("this model has no source hint layer (UnifiedVLMConfig.source_hint)")
        return self.hint_projection(missing_NC.to(self.start.dtype))

    def place(self, levels_N: torch.Tensor, grid_N2: torch.Tensor) -> torch.Tensor:
        """(N,) levels and (N, 2) grid centres -> (N, hidden)."""
        features = fourier_features(grid_N2.to(self.start.dtype), self.num_frequencies)
        return self.level_embedding(levels_N) + self.position_projection(features)

    def content(self, latents_NC: torch.Tensor) -> torch.Tensor:
        return self.latent_projection(latents_NC.to(self.start.dtype))

    def combine(self, content: torch.Tensor, placed: torch.Tensor) -> torch.Tensor:
        """What an image position feeds the decoder: its content plus its place, at text scale."""
        inputs = content + placed
        if self.input_gain is None:
            return inputs
        return inputs * torch.rsqrt(inputs.float().square().mean(dim=-1, keepdim=True) + 1e-6).to(inputs.dtype) \
            * self.input_gain
