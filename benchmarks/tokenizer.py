"""Tokenizer quality and speed on held-out OpenMoji.

    python -m benchmarks.tokenizer [--model PATH] [--json PATH]

Prints PSNR and SSIM for discrete-only and hybrid decoding, the share of the codebook the
held-out codes use, and encode/decode throughput on this machine (median of repeated
passes after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from training.image_data import OpenMojiDataset
from training.image_metrics import psnr, ssim
from vlm.tokenizer import HybridTokenizer


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
        limit: int | None = None) -> dict[str, float]:
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
    results["encode_images_per_s"] = _median_images_per_second(model.encode_pixels, batches, count, repeats)
    results["decode_images_per_s"] = _median_images_per_second(model.decode, token_batches, count, repeats)
    results["num_images"] = count
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
    lines = [f"held-out OpenMoji, {results['num_images']} images", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = HybridTokenizer.from_pretrained(args.model)
    dataset = OpenMojiDataset("heldout", model.config.image_size, args.heldout_percent)
    results = run(model, dataset, args.batch_size, args.repeats, args.limit)
    print(format_table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
