"""The convolutional encoder and decoder around the hybrid tokenizer's latent.

Deliberately small: the project trains them on a CPU, so full-resolution layers are thin
and the capacity sits at the low resolutions where a convolution is cheap. Channel widths
and block counts per resolution level are configuration (`TokenizerConfig`).
"""

from __future__ import annotations

import torch
from torch import nn


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(8, channels), num_channels=channels, eps=1e-6)


def conv3x3(in_channels: int, out_channels: int, padding_mode: str) -> nn.Conv2d:
    """A 3x3 'same' convolution. Replicate padding keeps a flat image flat right up to the
    border, so a blank canvas gives one latent vector everywhere and hence one code per scale;
    zero padding (the first tokenizer's) makes the border differ from the middle."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode=padding_mode)


class ResidualBlock(nn.Module):
    """Pre-norm residual block: norm, SiLU, conv, twice."""

    def __init__(self, channels: int, padding_mode: str = "zeros"):
        super().__init__()
        self.block = nn.Sequential(
            _group_norm(channels),
            nn.SiLU(),
            conv3x3(channels, channels, padding_mode),
            _group_norm(channels),
            nn.SiLU(),
            conv3x3(channels, channels, padding_mode),
        )

    def forward(self, hidden_BCHW: torch.Tensor) -> torch.Tensor:
        return hidden_BCHW + self.block(hidden_BCHW)


class Encoder(nn.Module):
    """Pixels (B, 3, H, W) -> latent f (B, latent_channels, H / 2^L, W / 2^L).

    `channels[i]` is the width at resolution level i (level 0 = full resolution); every
    level after the first halves the resolution with a strided convolution.
    """

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        channels: tuple[int, ...],
        res_blocks: tuple[int, ...],
        padding_mode: str = "zeros",
    ):
        super().__init__()
        layers: list[nn.Module] = [conv3x3(in_channels, channels[0], padding_mode)]
        for level, width in enumerate(channels):
            if level > 0:
                layers.append(nn.Conv2d(channels[level - 1], width, 4, stride=2, padding=1, padding_mode=padding_mode))
            layers.extend(ResidualBlock(width, padding_mode) for _ in range(res_blocks[level]))
        layers.extend([_group_norm(channels[-1]), nn.SiLU(), conv3x3(channels[-1], latent_channels, padding_mode)])
        self.layers = nn.Sequential(*layers)

    def forward(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        return self.layers(pixels_BCHW)


class Decoder(nn.Module):
    """Latent (B, latent_channels, h, w) -> pixels (B, 3, h * 2^L, w * 2^L), the encoder mirrored."""

    def __init__(
        self,
        out_channels: int,
        latent_channels: int,
        channels: tuple[int, ...],
        res_blocks: tuple[int, ...],
        padding_mode: str = "zeros",
    ):
        super().__init__()
        widths = channels[::-1]
        blocks = res_blocks[::-1]
        layers: list[nn.Module] = [conv3x3(latent_channels, widths[0], padding_mode)]
        for level, width in enumerate(widths):
            if level > 0:
                layers.extend([nn.Upsample(scale_factor=2, mode="nearest"),
                               conv3x3(widths[level - 1], width, padding_mode)])
            layers.extend(ResidualBlock(width, padding_mode) for _ in range(blocks[level]))
        layers.extend([_group_norm(widths[-1]), nn.SiLU(), conv3x3(widths[-1], out_channels, padding_mode)])
        self.layers = nn.Sequential(*layers)

    def forward(self, latent_BCHW: torch.Tensor) -> torch.Tensor:
        return self.layers(latent_BCHW)


def grow_into(source: nn.Sequential, target: nn.Sequential) -> None:
    """Copy `source` into `target`, which is the same stack with extra residual blocks, so that
    `target` computes exactly what `source` does: the extra blocks get a zeroed last convolution
    and so add nothing until they train."""
    source_layers = list(source)
    position = 0
    for layer in target:
        if position < len(source_layers) and type(source_layers[position]) is type(layer):
            layer.load_state_dict(source_layers[position].state_dict())
            position += 1
        elif isinstance(layer, ResidualBlock):
            last_conv = layer.block[-1]
            nn.init.zeros_(last_conv.weight)
            nn.init.zeros_(last_conv.bias)
        else:
            raise ValueError(f"cannot grow {type(source_layers[position]).__name__} into {type(layer).__name__}")
    if position != len(source_layers):
        raise ValueError(f"the grown stack lacks {len(source_layers) - position} layers of the original")
