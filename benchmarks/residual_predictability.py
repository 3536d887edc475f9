"""How much of the continuous residual can be predicted, and from what information.

    python -m benchmarks.residual_predictability [--model PATH] [--train-images 256]
        [--valid-images 64] [--context-images 4096] [--steps 1000] [--json PATH]

Why: a sampled residual beats discrete-only decoding in PSNR only where its condition explains
more than half of the residual's variance (a sample's expected error is the unexplained
variance twice; the conditional mean's is that variance once). So before tuning the residual
head, this measures what its condition can explain at all.

Drawings go through the decoder with their true codes (teacher forcing). On training
drawings (shapes scenes and training-split emoji), small deterministic predictors of the
residual's conditional mean are fitted by regression from each source of information; on
held-out drawings (fresh scenes, held-out emoji) each is scored by the residual energy it
leaves (MSE / the MSE of predicting zero) and by the PSNR of the decoded image against the
original. The sources: the head's own condition (the decoder's hidden state at a last-scale
position plus that position's code), the final discrete latent around the position (every
scale summed; it holds the neighbours' last-scale codes, which the head's condition lacks),
and both. The model's own head is scored beside them (its one-step estimate is its
conditional mean; its 8-step sample is what drawings use).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from benchmarks.residual_head import psnr, shapes_and_emoji_drawings
from vlm.teacher_forcing import teacher_forced_residuals
from vlm.tokenizer import HybridTokens
from vlm.unified_model import UnifiedVLM
from worlds.openmoji import OpenMojiDataset
from worlds.shapes import random_scene, render

logger = logging.getLogger(__name__)


@dataclass
class Drawings:
    """Teacher-forced drawings: conditions (N, s*s, hidden), residuals and discrete latents
    (N, C, s, s), codes per scale, and the original pixels (N, 3, H, W)."""

    conditions: torch.Tensor
    residuals: torch.Tensor
    discrete: torch.Tensor
    codes: list[torch.Tensor]
    pixels: torch.Tensor


@torch.no_grad()
def collect(model: UnifiedVLM, conversations: list[list[dict]], batch: int = 8) -> Drawings:
    tokenizer = model.image_tokenizer
    parts: dict[str, list] = {"conditions": [], "residuals": [], "discrete": [], "codes": [], "pixels": []}
    for first in tqdm(range(0, len(conversations), batch), desc="teacher forcing"):
        processed = model.processor(conversations[first:first + batch])
        tokens = tokenizer.encode_pixels(processed.pixels.to(model.device))
        conditions, residuals, indices = teacher_forced_residuals(model, processed, tokens)
        count, positions, channels = residuals.shape
        side = int(positions ** 0.5)
        codes = [code[indices] for code in tokens.codes]
        parts["conditions"].append(conditions.cpu())
        parts["residuals"].append(residuals.view(count, side, side, channels).permute(0, 3, 1, 2).cpu())
        parts["discrete"].append(tokenizer.quantizer.codes_to_latent(codes).cpu())
        parts["codes"].append([code.cpu() for code in codes])
        parts["pixels"].append(processed.pixels[indices].cpu())
    codes = [torch.cat(scale) for scale in zip(*parts.pop("codes"))]
    return Drawings(**{name: torch.cat(values) for name, values in parts.items()}, codes=codes)


@torch.no_grad()
def encode_context_images(model: UnifiedVLM, images: list, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(discrete latents, residuals) of images, by the tokenizer alone (no decoder pass)."""
    tokenizer = model.image_tokenizer
    discrete, residuals = [], []
    for first in range(0, len(images), batch):
        tokens = tokenizer.encode(images[first:first + batch])
        discrete.append(tokenizer.quantizer.codes_to_latent(tokens.codes).cpu())
        residuals.append(tokens.residual.cpu())
    return torch.cat(discrete), torch.cat(residuals)


class ConvProbe(nn.Module):
    """A 1x1 stem (wide inputs such as hidden states stay cheap), then 3x3 convolutions over the
    latent-sized map: each output position sees a 9x9 window."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 96, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 1), nn.SiLU()]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(width, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, maps_BCHW: torch.Tensor) -> torch.Tensor:
        return self.net(maps_BCHW)


def condition_map(conditions_BNH: torch.Tensor) -> torch.Tensor:
    """(B, s*s, hidden) row-major conditions as a (B, hidden, s, s) map."""
    count, positions, hidden = conditions_BNH.shape
    side = int(positions ** 0.5)
    return conditions_BNH.transpose(1, 2).reshape(count, hidden, side, side)


def fit(probe: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, steps: int, batch: int, seed: int,
        description: str) -> nn.Module:
    """Regression (MSE) of targets on inputs, AdamW with a cosine rate; rows are sampled with replacement."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    probe.train()
    for _ in tqdm(range(steps), desc=description, leave=False):
        rows = torch.randint(len(inputs), (min(batch, len(inputs)),), generator=generator)
        loss = F.mse_loss(probe(inputs[rows]), targets[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return probe.eval()


@torch.no_grad()
def predictability_table(model: UnifiedVLM, train: Drawings, valid: Drawings,
                         context: tuple[torch.Tensor, torch.Tensor] | None = None, steps: int = 1000,
                         seed: int = 0) -> list[dict]:
    """One row per predictor of the held-out residuals: energy left and decoded PSNR."""
    tokenizer = model.image_tokenizer
    head = model.residual_head
    count, channels, side, _ = valid.residuals.shape
    hidden = train.conditions.shape[-1]
    zero_error = float(valid.residuals.pow(2).mean())

    def as_map(rows_NC: torch.Tensor) -> torch.Tensor:
        return rows_NC.view(count, side, side, channels).permute(0, 3, 1, 2)

    generator = torch.Generator().manual_seed(seed)
    flat_conditions = valid.conditions.flatten(0, 1).to(model.device)
    predictions: dict[str, torch.Tensor] = {
        "none (discrete only)": torch.zeros_like(valid.residuals),
        "the model's head, conditional mean (1 step)": as_map(
            head.sample(flat_conditions, 1, generator, distilled=False).cpu()),
        "the model's head, 8-step sample": as_map(head.sample(flat_conditions, 8, generator, distilled=False).cpu()),
    }
    with torch.enable_grad():
        mlp = fit(nn.Sequential(nn.Linear(hidden, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU(),
                                nn.Linear(256, channels)),
                  train.conditions.flatten(0, 1), train.residuals.permute(0, 2, 3, 1).flatten(0, 2),
                  steps, 1024, seed, "fitting on the head's condition")
        neighbourhood = fit(ConvProbe(channels, channels), train.discrete, train.residuals, steps, 64, seed,
                            "fitting on the discrete neighbourhood")
        both = fit(ConvProbe(channels + hidden, channels),
                   torch.cat([train.discrete, condition_map(train.conditions)], dim=1), train.residuals,
                   steps, 64, seed, "fitting on both")
    predictions["the head's condition (fitted MLP)"] = as_map(mlp(valid.conditions.flatten(0, 1)))
    predictions["discrete neighbourhood (fitted conv)"] = neighbourhood(valid.discrete)
    predictions["both (fitted conv)"] = both(torch.cat([valid.discrete, condition_map(valid.conditions)], dim=1))
    if context is not None:
        with torch.enable_grad():
            wider = fit(ConvProbe(channels, channels), torch.cat([train.discrete, context[0]]),
                        torch.cat([train.residuals, context[1]]), steps, 64, seed,
                        "fitting on the discrete neighbourhood, more images")
        predictions[f"discrete neighbourhood (fitted conv, +{len(context[0])} images)"] = wider(valid.discrete)
    predictions["true residual (ceiling)"] = valid.residuals
    rows = []
    for name, predicted in predictions.items():
        images = tokenizer.decode(HybridTokens([code.to(model.device) for code in valid.codes],
                                               predicted.to(model.device))).cpu()
        rows.append({"predictor": name,
                     "energy_left": float((predicted - valid.residuals).pow(2).mean()) / zero_error,
                     "psnr": psnr(images, valid.pixels)})
    return rows


def context_images(count: int, seed: int, image_size: int) -> list:
    """Training-split emoji and fresh shapes scenes, half each: tokenizer-only training images."""
    from PIL import Image

    rng = random.Random(f"residual-context-{seed}")
    emoji = OpenMojiDataset(split="train", image_size=image_size)
    chosen = [Image.fromarray(emoji.images_NHWC[index])
              for index in rng.sample(range(len(emoji)), min(count // 2, len(emoji)))]
    return chosen + [render(random_scene(rng)) for _ in range(count - len(chosen))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.residual_predictability",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--train-images", type=int, default=256,
                        help="training drawings run through the decoder (half shapes, half training-split emoji)")
    parser.add_argument("--valid-images", type=int, default=64,
                        help="held-out drawings scored (half shapes, half held-out emoji)")
    parser.add_argument("--context-images", type=int, default=4096,
                        help="extra images encoded by the tokenizer alone, for one more fit of the "
                             "neighbourhood predictor (0: skip it)")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps of each fitted predictor")
    parser.add_argument("--seed", type=int, default=0, help="seed for the drawings, the fits and the head's noise")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.train_images < 2 or args.valid_images < 2 or args.steps < 1 or args.context_images < 0:
        parser.error("--train-images and --valid-images must be >= 2, --steps >= 1, --context-images >= 0")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = UnifiedVLM.from_pretrained(args.model).eval()
    train = collect(model, shapes_and_emoji_drawings(args.train_images, args.seed + 1, split="train")[0])
    valid = collect(model, shapes_and_emoji_drawings(args.valid_images, args.seed)[0])
    context = None
    if args.context_images:
        context = encode_context_images(model, context_images(args.context_images, args.seed,
                                                              model.image_tokenizer.config.image_size))
    rows = predictability_table(model, train, valid, context, args.steps, args.seed)
    print(f"| predictor of the residual ({args.valid_images} held-out drawings, true codes) | energy left | "
          "PSNR (dB) |\n|---|---|---|")
    for row in rows:
        print(f"| {row['predictor']} | {row['energy_left']:.3f} | {row['psnr']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, **{key: value for key, value in vars(args).items()
                                                           if key != "json"}}, indent=2))


if __name__ == "__main__":
    main()
