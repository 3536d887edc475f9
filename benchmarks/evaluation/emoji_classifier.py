"""An emoji classifier that is not the VLM, to judge whether a drawn image shows the asked emoji.

A small CNN trained here on every OpenMoji render with augmentation that mimics what a
generator gets wrong (shifts, scale, blur, noise, colour drift), so blurry or off-centre
drawings are still recognised when they show the right thing. Trained once and cached
(`$HYBRID_VLM_CACHE/emoji_classifier/`); a few minutes on a CPU.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from vlm.cache import cache_dir
from vlm.files import swap_in
from worlds.openmoji import OpenMojiDataset

logger = logging.getLogger(__name__)


@dataclass
class ClassifierConfig:
    image_size: int = 32  # renders (64px) are downsampled to this; enough to tell emoji apart
    width: int = 32
    steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 2e-3
    seed: int = 0

    def key(self) -> str:
        return "-".join(f"{value}" for value in asdict(self).values())


class EmojiNet(nn.Module):
    def __init__(self, classes: int, width: int):
        super().__init__()
        layers, channels = [], 3
        for multiple in (1, 2, 4, 8):
            layers += [nn.Conv2d(channels, width * multiple, 3, stride=2, padding=1), nn.BatchNorm2d(width * multiple),
                       nn.GELU(), nn.Conv2d(width * multiple, width * multiple, 3, padding=1),
                       nn.BatchNorm2d(width * multiple), nn.GELU()]
            channels = width * multiple
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, classes)

    def forward(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels_BCHW).mean(dim=(2, 3)))


def augment(pixels_BCHW: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random scale/shift (white fill), blur, colour drift and noise, on [-1, 1] images."""
    batch = pixels_BCHW.shape[0]
    uniform = lambda low, high: low + (high - low) * torch.rand(batch, generator=generator)  # noqa: E731
    scale = uniform(0.45, 1.15)
    shift_x, shift_y = uniform(-0.45, 0.45), uniform(-0.3, 0.3)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, 0, 2], theta[:, 1, 2] = -shift_x / scale, -shift_y / scale
    grid = F.affine_grid(theta, list(pixels_BCHW.shape), align_corners=False)
    # Sample (x + 1) so padding zeros mean white, then shift back.
    out = F.grid_sample(pixels_BCHW + 1, grid, align_corners=False, padding_mode="zeros") - 1
    out = torch.where(_outside(grid)[:, None], torch.ones_like(out), out)
    sigma = uniform(0.0, 1.6) * pixels_BCHW.shape[-1] / 64
    out = torch.stack([_blur(image, float(s)) for image, s in zip(out, sigma)])
    out = out * uniform(0.8, 1.1)[:, None, None, None] + uniform(-0.15, 0.15)[:, None, None, None]
    out = out + torch.randn(out.shape, generator=generator) * uniform(0.0, 0.12)[:, None, None, None]
    return out.clamp(-1, 1)


def _outside(grid_BHW2: torch.Tensor) -> torch.Tensor:
    return (grid_BHW2.abs() > 1).any(dim=-1)


def _blur(image_CHW: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma < 0.3:
        return image_CHW
    radius = math.ceil(2 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = image_CHW.shape[0]
    padded = F.pad(image_CHW[None], (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)[0]


class EmojiClassifier:
    """Names of every OpenMoji emoji, and a net that scores images against them."""

    def __init__(self, net: EmojiNet, names: list[str], image_size: int):
        self.net = net.eval()
        self.names = names
        self.index = {name: position for position, name in enumerate(names)}
        self.image_size = image_size

    @torch.no_grad()
    def top_k(self, images: list[Image.Image], k: int = 5) -> list[list[str]]:
        pixels = torch.stack([torch.from_numpy(np.array(image.convert("RGB").resize(
            (self.image_size, self.image_size), Image.Resampling.BICUBIC))).permute(2, 0, 1).float() / 127.5 - 1
            for image in images])
        ranked = self.net(pixels).topk(k, dim=1).indices
        return [[self.names[index] for index in row] for row in ranked.tolist()]

    @classmethod
    def load_or_train(cls, config: ClassifierConfig | None = None) -> EmojiClassifier:
        config = config or ClassifierConfig()
        folder = cache_dir() / "emoji_classifier" / config.key()
        if (folder / "model.safetensors").is_file():
            names = json.loads((folder / "names.json").read_text())
            net = EmojiNet(len(names), config.width)
            net.load_state_dict(load_file(folder / "model.safetensors"))
            return cls(net, names, config.image_size)
        net, names = train(config)
        staging = folder.with_name(folder.name + ".tmp")
        staging.mkdir(parents=True, exist_ok=True)
        save_file(net.state_dict(), staging / "model.safetensors")
        (staging / "names.json").write_text(json.dumps(names))
        swap_in(staging, folder)
        return cls(net, names, config.image_size)


@torch.enable_grad()  # callers (benchmarks.residual_head) may be inside no_grad when the cache is empty
def train(config: ClassifierConfig) -> tuple[EmojiNet, list[str]]:
    dataset = OpenMojiDataset(split="all", image_size=64)
    names = sorted({entry.name for entry in dataset.entries})
    index = {name: position for position, name in enumerate(names)}
    labels = torch.tensor([index[entry.name] for entry in dataset.entries])
    pixels = torch.from_numpy(dataset.images_NHWC).permute(0, 3, 1, 2).float() / 127.5 - 1
    pixels = F.interpolate(pixels, size=config.image_size, mode="area")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net = EmojiNet(len(names), config.width)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=config.steps)
    net.train()
    progress = tqdm(range(config.steps), desc="training the emoji classifier")
    for _ in progress:
        chosen = torch.randint(len(labels), (config.batch_size,), generator=generator)
        loss = F.cross_entropy(net(augment(pixels[chosen], generator)), labels[chosen], label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")
    logger.info("emoji classifier: %d classes, final loss %.3f", len(names), loss.item())
    return net.eval(), names
