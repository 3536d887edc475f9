"""Show the tokenizer working: original, discrete-only and hybrid reconstructions side by side.

    python -m benchmarks.reconstruct --out docs/tokenizer_reconstructions.png
    python -m benchmarks.reconstruct --images my_photo.jpg other.png --out grid.png

Rows: the input, the image decoded from its discrete codes alone, and the image decoded
from codes plus residual. Without --images it uses held-out OpenMoji emoji.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from vlm.image_io import tensor_to_pil
from vlm.image_metrics import psnr
from vlm.tokenizer import HybridTokenizer
from worlds.openmoji import OpenMojiDataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reconstruct", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="tokenizer folder (save_pretrained); default: the shipped tokenizer")
    parser.add_argument("--images", type=Path, nargs="*", default=None,
                        help="your own image files; default: held-out OpenMoji emoji")
    parser.add_argument("--count", type=int, default=10, help="how many held-out emoji to show without --images")
    parser.add_argument("--out", type=Path, default=Path("docs/tokenizer_reconstructions.png"),
                        help="where to write the grid PNG")
    parser.add_argument("--zoom", type=int, default=2, help="pixel zoom of each tile in the grid")
    return parser.parse_args(argv)


def make_grid(rows: list[list[Image.Image]], labels: list[str], zoom: int) -> Image.Image:
    tile = rows[0][0].width * zoom
    label_width = 90
    grid = Image.new("RGB", (label_width + tile * len(rows[0]), tile * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for row_index, (row, label) in enumerate(zip(rows, labels)):
        draw.text((4, row_index * tile + tile // 2 - 6), label, fill="black")
        for column, image in enumerate(row):
            zoomed = image.resize((tile, tile), Image.Resampling.NEAREST)
            grid.paste(zoomed, (label_width + column * tile, row_index * tile))
    return grid


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = HybridTokenizer.from_pretrained(args.model)
    if args.images:
        pixels = model.preprocess(list(args.images))
    else:
        dataset = OpenMojiDataset("heldout", model.config.image_size)
        step = max(1, len(dataset) // args.count)
        pixels = torch.stack([dataset[index]["pixels"] for index in range(0, step * args.count, step)])
    tokens = model.encode_pixels(pixels)
    discrete = model.decode(tokens, use_residual=False)
    hybrid = model.decode(tokens, use_residual=True)
    rows = [tensor_to_pil(pixels), tensor_to_pil(discrete), tensor_to_pil(hybrid)]
    psnr_discrete = float(psnr(discrete, pixels).mean())
    psnr_hybrid = float(psnr(hybrid, pixels).mean())
    labels = ["input", f"discrete\n{psnr_discrete:.1f} dB", f"hybrid\n{psnr_hybrid:.1f} dB"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make_grid(rows, labels, args.zoom).save(args.out)
    print(f"{len(rows[0])} images, {model.config.tokens_per_image} discrete tokens each "
          f"(scales {model.config.scales}) + a {model.config.latent_channels}x{model.config.latent_size}"
          f"x{model.config.latent_size} residual")
    print(f"PSNR discrete-only {psnr_discrete:.2f} dB, hybrid {psnr_hybrid:.2f} dB")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
