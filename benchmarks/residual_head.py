"""The residual head in isolation: image quality and time for each way of sampling the residual.

    python -m benchmarks.residual_head [--model PATH] [--images 64] [--json PATH]

Held-out drawing conversations (shapes scenes and held-out OpenMoji emoji) go through the
decoder with their true codes (teacher forcing), so every row starts from the same discrete
image and only the residual differs: none (discrete only), one DDIM step of the head, the
distilled one-step generator (when the model has one), 8 DDIM steps unguided and guided as
drawings use them (the unconditional conditions come from the same pass with every image
blind to its prompt, the view of guidance's unconditional rows), and the true residual
(the tokenizer's own hybrid reconstruction, the ceiling). For each: PSNR against the
original image, the residual's energy relative to the true one (a sampler that only
predicts the mean has too little), and the same images scored by the evaluation suite (the
shapes detector reads the scene exactly; the emoji classifier's top-1). Then time: the
head's milliseconds per image (CFG doubles the multi-step head's calls, as in the app), and
its share of one whole generated image.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from pathlib import Path

import torch

from benchmarks.evaluation.emoji_classifier import EmojiClassifier
from generation import GenerationConfig, ImageFinished, ImageStarted, stream_generate
from vlm.image_io import tensor_to_pil
from vlm.teacher_forcing import teacher_forced_residuals
from vlm.tokenizer import HybridTokens
from vlm.unified_model import UnifiedVLM
from worlds.openmoji import OpenMojiDataset
from worlds.shapes import describe, random_scene, render
from worlds.shapes_detector import read_scene, scene_key

logger = logging.getLogger(__name__)


def shapes_and_emoji_drawings(count: int, seed: int, split: str = "heldout"
                              ) -> tuple[list[list[dict]], list[tuple[str, object]]]:
    """Half shapes scenes, half emoji of an OpenMoji split (held-out by default): conversations
    and what each image should show."""
    rng = random.Random(f"residual-head-{seed}")
    conversations, truths = [], []
    for _ in range(count - count // 2):
        scene = random_scene(rng)
        subject = describe(scene).rstrip(".")
        conversations.append([{"role": "user", "content": f"Draw {subject[0].lower()}{subject[1:]}."},
                              {"role": "assistant", "content": [{"type": "text", "text": "Here it is:"},
                                                                {"type": "image", "image": render(scene)}]}])
        truths.append(("shapes", scene_key(scene)))
    emoji = OpenMojiDataset(split=split, image_size=64)
    from PIL import Image

    for index in rng.sample(range(len(emoji)), count // 2):
        name = emoji.entries[index].name
        conversations.append([{"role": "user", "content": f"Draw a {name}."},
                              {"role": "assistant", "content": [{"type": "text", "text": f"Here is a {name}:"},
                                                                {"type": "image",
                                                                 "image": Image.fromarray(emoji.images_NHWC[index])}]}])
        truths.append(("emoji", name))
    return conversations, truths


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean PSNR in dB of images in [-1, 1]."""
    error = ((images.float() - reference.float()) ** 2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
    return float((10 * torch.log10(4.0 / error)).mean())


def energy_score(sample: torch.Tensor, again: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per position, the energy score of the sampler from two of its samples (Gneiting & Raftery):
    E||X - y|| - E||X - X'|| / 2 over the channel vector; lower is better, and only a sampler of
    the true conditional distribution minimises it (a deterministic one scores ||x - y||)."""
    distance = ((sample - truth).norm(dim=-1) + (again - truth).norm(dim=-1)) / 2
    return (distance - (sample - again).norm(dim=-1) / 2).flatten()


@torch.no_grad()
def quality_table(model: UnifiedVLM, conversations: list, truths: list, seed: int, batch: int = 8,
                  cfg_scale: float = 3.0) -> list[dict]:
    tokenizer = model.image_tokenizer
    classifier = EmojiClassifier.load_or_train()
    head = model.residual_head
    variants = {"0 steps (discrete only)": None, "1 step, undistilled": (1, False, False)}
    if head.one_step is not None:
        variants["1 step, distilled (DMD)"] = (1, True, False)
    variants |= {"8 steps": (8, False, False), f"8 steps, CFG {cfg_scale:g} (as drawings use it)": (8, False, True),
                 "true residual (ceiling)": "true"}
    decoded: dict[str, list[torch.Tensor]] = {name: [] for name in variants}
    energy: dict[str, list[float]] = {name: [] for name in variants}
    scores: dict[str, list[torch.Tensor]] = {name: [] for name in variants}
    originals = []
    generator = torch.Generator().manual_seed(seed)
    for first in range(0, len(conversations), batch):
        processed = model.processor(conversations[first:first + batch])
        tokens = tokenizer.encode_pixels(processed.pixels.to(model.device))
        conditions, residuals, indices = teacher_forced_residuals(model, processed, tokens)
        # Generation guides the head with the unconditional rows' conditions (scale cfg - 1).
        blind, _, _ = teacher_forced_residuals(model, processed, tokens, blind=True)
        count, positions, channels = residuals.shape
        side = int(positions ** 0.5)
        codes = [code[indices] for code in tokens.codes]
        originals.append(processed.pixels[indices])
        for name, how in variants.items():
            if how is None:
                sampled = again = torch.zeros_like(residuals)
            elif how == "true":
                sampled = again = residuals
            else:
                steps, distilled, guided = how
                sampled, again = (head.sample(conditions.flatten(0, 1), steps, generator, distilled=distilled,
                                              unconditional_NC=blind.flatten(0, 1) if guided else None,
                                              guidance_scale=cfg_scale - 1 if guided else 0.0
                                              ).view(count, positions, channels) for _ in range(2))
            scores[name].append(energy_score(sampled, again, residuals))
            energy[name].append(float((sampled ** 2).sum() / (residuals ** 2).sum().clamp(min=1e-12)))
            latent = sampled.view(count, side, side, channels).permute(0, 3, 1, 2)
            decoded[name].append(tokenizer.decode(HybridTokens(codes, latent)).cpu())
    reference = torch.cat(originals)
    rows = []
    for name in variants:
        images = torch.cat(decoded[name])
        pictures = tensor_to_pil(images)
        shapes_ok = [read_scene(picture) == truth for picture, (kind, truth) in zip(pictures, truths)
                     if kind == "shapes"]
        emoji = [(picture, truth) for picture, (kind, truth) in zip(pictures, truths) if kind == "emoji"]
        ranked = classifier.top_k([picture for picture, _ in emoji], 1)
        rows.append({"residual": name, "psnr": psnr(images, reference),
                     "energy_ratio": statistics.mean(energy[name]),
                     "energy_score": float(torch.cat(scores[name]).mean()),
                     "shapes_detector_exact": sum(shapes_ok) / max(len(shapes_ok), 1),
                     "emoji_classifier_top1": sum(top[0] == truth for top, (_, truth) in zip(ranked, emoji))
                     / max(len(emoji), 1)})
    return rows


def _median_ms(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


@torch.no_grad()
def timing_table(model: UnifiedVLM, repeats: int, cfg_scale: float) -> list[dict]:
    head = model.residual_head
    side = model.image_tokenizer.config.scales[-1]
    condition = torch.randn(side * side, head.config.condition_channels, device=model.device)
    head_ms = {
        "8 steps, CFG": lambda: head.sample(condition, 8, unconditional_NC=condition, guidance_scale=cfg_scale - 1,
                                            distilled=False),
        "1 step, undistilled": lambda: head.sample(condition, 1, distilled=False),
    }
    if head.one_step is not None:
        head_ms["1 step, distilled (DMD)"] = lambda: head.sample(condition, 1)
    rows = []
    prompt = [{"role": "user", "content": "Draw a red circle."}]

    def image_ms(steps: int) -> float:
        config = GenerationConfig(force_image=True, max_images=1, max_new_tokens=1, residual_steps=steps,
                                  cfg_scale=cfg_scale, seed=0)
        times = []
        for _ in range(repeats + 1):
            for event in stream_generate(model, prompt, config):
                if isinstance(event, ImageStarted):
                    started = time.perf_counter()
                elif isinstance(event, ImageFinished):
                    times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times[1:])

    discrete = image_ms(0)
    for name, function in head_ms.items():
        steps = 8 if name.startswith("8") else 1
        if name == "1 step, undistilled" and head.one_step is not None:
            whole = None  # generation's 1 step is the distilled head when there is one
        else:
            whole = image_ms(steps)
        ms = _median_ms(function, repeats)
        rows.append({"residual": name, "head_ms_per_image": ms, "image_ms": whole,
                     "head_share_of_image": None if whole is None else (whole - discrete) / whole})
    rows.append({"residual": "0 steps (discrete only)", "head_ms_per_image": 0.0, "image_ms": discrete,
                 "head_share_of_image": 0.0})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.residual_head", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--images", type=int, default=64, help="held-out images (half shapes, half emoji)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median) after a warm-up")
    parser.add_argument("--cfg-scale", type=float, default=None,
                        help="CFG scale of the guided head row and of the timed generations (default: the "
                             "model's own, as its drawings use it: its generation_config.json, else 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the images and the residual noise")
    parser.add_argument("--json", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = UnifiedVLM.from_pretrained(args.model).eval()
    if args.cfg_scale is None:
        args.cfg_scale = GenerationConfig.for_model(model).cfg_scale
    conversations, truths = shapes_and_emoji_drawings(args.images, args.seed)
    quality = quality_table(model, conversations, truths, args.seed, cfg_scale=args.cfg_scale)
    timing = timing_table(model, args.repeats, args.cfg_scale)
    print(f"| residual (true codes, {args.images} held-out images) | PSNR (dB) | energy / true | energy score | "
          "shapes read exactly | emoji top-1 |\n|---|---|---|---|---|---|")
    for row in quality:
        print(f"| {row['residual']} | {row['psnr']:.2f} | {row['energy_ratio']:.2f} | {row['energy_score']:.3f} | "
              f"{row['shapes_detector_exact']:.2f} | {row['emoji_classifier_top1']:.2f} |")
    print(f"\n| residual head | head ms / image | whole image ms (CFG {args.cfg_scale:g}) | head share |\n"
          "|---|---|---|---|")
    for row in timing:
        whole = "-" if row["image_ms"] is None else f"{row['image_ms']:.0f}"
        share = "-" if row["head_share_of_image"] is None else f"{row['head_share_of_image']:.1%}"
        print(f"| {row['residual']} | {row['head_ms_per_image']:.1f} | {whole} | {share} |")
    if args.json:
        args.json.write_text(json.dumps({"quality": quality, "timing": timing, "images": args.images}, indent=2))


if __name__ == "__main__":
    main()
