"""Tokenizer quality, learnability of its codes, and speed.

    python -m benchmarks.tokenizer [--model PATH] [--json PATH]

Prints, on held-out OpenMoji, PSNR and SSIM for discrete-only and hybrid decoding, the share
of the codebook the held-out codes use, and encode/decode throughput on this machine
(median of repeated passes after a warm-up). Then what decides whether a decoder model can
learn the codes, on a fixed set of flat shapes renders (4 shapes x 6 colours x 2 sizes x 5
positions): the code entropy per scale (nats; a decoder predicting the codes pays about
this much per token) and how many distinct codes a blank white canvas uses per scale.
Then the GenEval ceiling (the project's shapes detector on reconstructions of true
renders) and PSNR on held-out photographs beside a 16x16 bicubic thumbnail of the same
photos (the tokenizer must reconstruct a user's upload, not only emoji).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.evaluation import geneval
from benchmarks.evaluation.common import EvalSettings
from vlm.image_metrics import psnr, ssim
from vlm.tokenizer import HybridTokenizer
from worlds.image_sets import PhotoCrops, stack_pixels
from worlds.openmoji import OpenMojiDataset
from worlds.shapes import COLOURS, POSITIONS, SIZES, Shape, render

ENTROPY_SHAPES = ("circle", "square", "triangle", "star")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tokenizer", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="tokenizer folder (save_pretrained); default: the shipped tokenizer")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--batch-size", type=int, default=64, help="images per encode/decode call")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the held-out set (median)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N held-out images (quick checks)")
    parser.add_argument("--heldout-percent", type=float, default=10.0,
                        help="held-out share of emoji groups; must match the one used in training")
    parser.add_argument("--speed-images", type=int, default=None,
                        help="held-out images per timed pass, in whole batches (default: all of them)")
    parser.add_argument("--photos", type=int, default=256, help="held-out photograph crops to score")
    parser.add_argument("--geneval-prompts", type=int, default=24,
                        help="GenEval ceiling prompts per category (6 categories)")
    return parser.parse_args(argv)


def _median_images_per_second(function, batches: list, num_images: int, repeats: int) -> float:
    function(batches[0])  # warm-up: first calls pay for allocation and kernel selection
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            function(batch)
        seconds.append(time.perf_counter() - started)
    return num_images / statistics.median(seconds)


@torch.no_grad()
def run(model: HybridTokenizer, dataset: OpenMojiDataset, batch_size: int, repeats: int,
        limit: int | None = None, speed_images: int | None = None) -> dict[str, float]:
    count = len(dataset) if limit is None else min(limit, len(dataset))
    pixels = torch.stack([dataset[index]["pixels"] for index in range(count)])
    batches = list(pixels.split(batch_size))
    scores = {"psnr_discrete": [], "psnr_hybrid": [], "ssim_discrete": [], "ssim_hybrid": []}
    used = torch.zeros(model.config.codebook_size, dtype=torch.bool)
    token_batches = []
    for batch in batches:
        tokens = model.encode_pixels(batch)
        token_batches.append(tokens)
        for codes in tokens.codes:
            used[codes.flatten().cpu()] = True
        for name, use_residual in (("discrete", False), ("hybrid", True)):
            reconstruction = model.decode(tokens, use_residual=use_residual).cpu()
            scores[f"psnr_{name}"].append(psnr(reconstruction, batch))
            scores[f"ssim_{name}"].append(ssim(reconstruction, batch))
    results = {key: float(torch.cat(values).mean()) for key, values in scores.items()}
    results["codebook_usage"] = float(used.float().mean())
    timed = len(batches) if speed_images is None else max(1, -(-speed_images // batch_size))  # whole batches
    timed_images = sum(len(batch) for batch in batches[:timed])
    results["encode_images_per_s"] = _median_images_per_second(model.encode_pixels, batches[:timed], timed_images,
                                                               repeats)
    results["decode_images_per_s"] = _median_images_per_second(model.decode, token_batches[:timed], timed_images,
                                                               repeats)
    results["num_images"] = count
    return results


def flat_shapes() -> list[Image.Image]:
    """The fixed shapes set of the code statistics: one flat shape per render on white."""
    return [render([Shape(kind, colour, size, *POSITIONS[position])])
            for kind, colour, size, position in itertools.product(ENTROPY_SHAPES, COLOURS, SIZES, POSITIONS)]


@torch.no_grad()
def code_statistics(model: HybridTokenizer) -> dict[str, list]:
    """Per scale: entropy (nats) of the codes over the flat shapes set, and distinct codes of a blank canvas."""
    size = model.config.image_size
    shapes_tokens = model.encode(flat_shapes())
    blank_tokens = model.encode(Image.new("RGB", (size, size), "white"))
    entropies = []
    for codes in shapes_tokens.codes:
        counts = torch.bincount(codes.flatten().cpu()).float()
        probabilities = counts[counts > 0] / counts.sum()
        entropies.append(float(-(probabilities * probabilities.log()).sum()))
    return {"code_entropy_per_scale": entropies,
            "blank_codes_per_scale": [int(codes.unique().numel()) for codes in blank_tokens.codes]}


def thumbnail(pixels_BCHW: torch.Tensor, side: int) -> torch.Tensor:
    """Bicubic down to side x side and back: the baseline a tokenizer's reconstruction must beat."""
    small = F.interpolate(pixels_BCHW, size=(side, side), mode="bicubic", align_corners=False, antialias=True)
    return F.interpolate(small, size=pixels_BCHW.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)


@torch.no_grad()
def photo_scores(model: HybridTokenizer, count: int) -> dict[str, float]:
    pixels = stack_pixels(PhotoCrops("heldout", count, model.config.image_size))
    results = {"psnr_photos_discrete": 0.0, "psnr_photos_hybrid": 0.0}
    for batch in pixels.split(64):
        tokens = model.encode_pixels(batch)
        for name, use_residual in (("discrete", False), ("hybrid", True)):
            results[f"psnr_photos_{name}"] += float(psnr(model.decode(tokens, use_residual).cpu(), batch).sum())
    results = {key: value / len(pixels) for key, value in results.items()}
    results["psnr_photos_thumbnail16"] = float(psnr(thumbnail(pixels, 16), pixels).mean())
    results["num_photos"] = len(pixels)
    return results


def world_scores(model: HybridTokenizer, args: argparse.Namespace) -> dict:
    """Everything beyond held-out OpenMoji: code statistics, GenEval ceiling, photographs."""
    settings = EvalSettings(geneval_prompts=args.geneval_prompts)
    results: dict = code_statistics(model)
    for name, use_residual in (("hybrid", True), ("discrete", False)):
        results[f"geneval_ceiling_{name}"] = geneval.ceiling(model, settings, use_residual)["overall"]
    results |= photo_scores(model, args.photos)
    return results


def format_table(results: dict[str, float]) -> str:
    rows = [
        ("PSNR discrete-only (dB)", f"{results['psnr_discrete']:.2f}"),
        ("PSNR hybrid (dB)", f"{results['psnr_hybrid']:.2f}"),
        ("SSIM discrete-only", f"{results['ssim_discrete']:.4f}"),
        ("SSIM hybrid", f"{results['ssim_hybrid']:.4f}"),
        ("codebook usage (share of codes)", f"{results['codebook_usage']:.3f}"),
        ("encode (images/s)", f"{results['encode_images_per_s']:.1f}"),
        ("decode, hybrid (images/s)", f"{results['decode_images_per_s']:.1f}"),
    ]
    if "code_entropy_per_scale" in results:
        rows += [
            ("code entropy per scale, flat shapes set (nats)",
             ", ".join(f"{value:.2f}" for value in results["code_entropy_per_scale"])),
            ("distinct codes of a blank canvas per scale", ", ".join(map(str, results["blank_codes_per_scale"]))),
            ("GenEval ceiling, hybrid", f"{results['geneval_ceiling_hybrid']:.3f}"),
            ("GenEval ceiling, discrete only", f"{results['geneval_ceiling_discrete']:.3f}"),
            (f"PSNR held-out photos, hybrid ({results['num_photos']} crops)", f"{results['psnr_photos_hybrid']:.2f}"),
            ("PSNR held-out photos, discrete only", f"{results['psnr_photos_discrete']:.2f}"),
            ("PSNR held-out photos, 16x16 bicubic thumbnail", f"{results['psnr_photos_thumbnail16']:.2f}"),
        ]
    lines = [f"held-out OpenMoji, {results['num_images']} images", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = HybridTokenizer.from_pretrained(args.model)
    dataset = OpenMojiDataset("heldout", model.config.image_size, args.heldout_percent)
    results = run(model, dataset, args.batch_size, args.repeats, args.limit, args.speed_images)
    results |= world_scores(model, args)
    print(format_table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
