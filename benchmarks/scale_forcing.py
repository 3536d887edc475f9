"""At which scale a drawing loses the asked shape: single-shape drawings with the first k scales held at the true codes.

    python -m benchmarks.scale_forcing                       # the shipped model, k = 0 .. all scales
    python -m benchmarks.scale_forcing --model runs/mine/model --keep 0,5 --prompts 96 --json out.json

GenEval's single-object score says a model draws the wrong shape, not where. Here every prompt
asks for one shape of the shapes world (a seeded scene, GenEval's phrasing); its true render is
encoded, and for each k the model draws the image with scales 1..k held at the render's codes
(it still reads them as its own: the next scales see them exactly as they would a sample) and
samples the rest. The project's detector then checks the single-object rule (one shape, of the
asked kind). Beside each k, `codes alone` decodes the true first k scales with nothing after
them: how much of the shape those scales carry at all. k = 0 is the plain GenEval single-object
score on these prompts; k = all scales leaves the model only the residual head (with
`--residual-steps 0`, the drawing is the true discrete image).

A low score that rises only at the last k means the finest scale is where the model fails (on
the 2026-12 default model: 2/48 at k = 0, 18/48 at k = 5, 47/48 at k = 6). Sampling follows
the model's saved defaults (or GenerationConfig's), seeded per batch as the evaluation does.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from benchmarks.evaluation.common import first_image, replies
from benchmarks.evaluation.geneval import check, prompt_for
from chat.quiet import add_dtype_flag
from generation import GenerationConfig
from vlm.backbone import resolve_dtype
from vlm.image_io import images_to_tensor, tensor_to_pil
from vlm.quantizer import RunningSum
from vlm.unified_model import UnifiedVLM
from worlds.shapes import Shape, random_scene, render
from worlds.shapes_detector import detect

logger = logging.getLogger(__name__)


def scenes(count: int, seed: int) -> list[list[Shape]]:
    """`count` one-shape scenes, the same for every model."""
    rng = random.Random(f"scale-forcing-{seed}")
    return [random_scene(rng, 1) for _ in range(count)]


def true_codes(model: UnifiedVLM, cases: list[list[Shape]]) -> list[torch.Tensor]:
    """Per scale, (len(cases), s, s): the codes of each scene's true render."""
    tokenizer = model.image_tokenizer
    pixels = images_to_tensor([render(scene, tokenizer.config.image_size) for scene in cases],
                              tokenizer.config.image_size)
    return [codes.cpu() for codes in tokenizer.encode_pixels(pixels).codes]


@torch.no_grad()
def decoded_alone(model: UnifiedVLM, codes: list[torch.Tensor], keep: int) -> list[Image.Image | None]:
    """The true first `keep` scales decoded with nothing after them (None for keep = 0: nothing to decode)."""
    if keep == 0:
        return [None] * len(codes[0])
    running = RunningSum(model.image_tokenizer.quantizer)
    for scale_codes in codes[:keep]:
        running.add(scale_codes.to(model.device))
    return tensor_to_pil(model.image_tokenizer.decode_latent(running.latent))


def drawn(model: UnifiedVLM, cases: list[list[Shape]], codes: list[torch.Tensor], keep: int,
          config: GenerationConfig, batch_size: int) -> list[Image.Image | None]:
    """The model's drawing for each scene (None where it drew none) with its first `keep` scales
    held at the true codes."""
    def hold(rows: list[int], scale_index: int, sampled: torch.Tensor) -> torch.Tensor:
        if scale_index >= keep:
            return sampled
        return codes[scale_index][rows].to(sampled.device, sampled.dtype)

    conversations = [[{"role": "user", "content": prompt_for(scene)}] for scene in cases]
    return [first_image(reply) for reply in replies(model, conversations, config, batch_size, f"k={keep}", hold)]


def scores(cases: list[list[Shape]], images: list[Image.Image | None]) -> tuple[float, float]:
    """(share passing GenEval's single-object check, share where the detector finds no shape)."""
    passed = sum(check("single_object", scene, image) for scene, image in zip(cases, images))
    blank = sum(image is None or not detect(image) for image in images)
    return passed / len(cases), blank / len(cases)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_forcing", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--keep", default=None,
                        help="comma-separated numbers of true coarse scales to hold, e.g. 0,4,5 "
                             "(default: every k from 0 to the tokenizer's number of scales)")
    parser.add_argument("--prompts", type=int, default=48, help="one-shape prompts (each k draws all of them)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the scenes and the sampling")
    parser.add_argument("--residual-steps", type=int, default=None,
                        help="residual head steps (0 = discrete only; default: the model's saved default, else 8)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generation run")
    add_dtype_flag(parser)
    parser.add_argument("--json", type=Path, default=None, help="write the table here too")
    args = parser.parse_args(argv)
    if args.prompts < 1:
        parser.error(f"--prompts must be >= 1, got {args.prompts}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.keep is not None:
        try:
            args.keep = [int(item) for item in args.keep.split(",")]
        except ValueError:
            parser.error(f"--keep takes whole numbers joined by commas (e.g. 0,5), got {args.keep!r}")
        if any(value < 0 for value in args.keep):
            parser.error(f"--keep values must be >= 0, got {args.keep}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from chat.session import load_chat_model_and_source

    model, source = load_chat_model_and_source(args.model, resolve_dtype(args.dtype), args.int8)
    num_scales = len(model.image_tokenizer.config.scales)
    keeps = args.keep if args.keep is not None else list(range(num_scales + 1))
    if max(keeps) > num_scales:
        raise SystemExit(f"--keep {max(keeps)}: the model's image tokenizer has {num_scales} scales "
                         f"({model.image_tokenizer.config.scales})")
    config = GenerationConfig(max_images=1, max_new_tokens=32, temperature=0.7, seed=args.seed,
                              **model.sampling_defaults)
    if args.residual_steps is not None:
        config = replace(config, residual_steps=args.residual_steps)
    cases = scenes(args.prompts, args.seed)
    codes = true_codes(model, cases)
    rows = []
    for keep in keeps:
        started = time.time()
        model_score, blank = scores(cases, drawn(model, cases, codes, keep, config, args.batch_size))
        rows.append({"keep": keep, "model": model_score, "no_shape": blank,
                     "codes_alone": scores(cases, decoded_alone(model, codes, keep))[0],
                     "seconds": time.time() - started})
    sides = model.image_tokenizer.config.scales
    print(f"single-shape drawings, first k scales held at the true codes; {args.prompts} prompts, seed {args.seed}, "
          f"cfg {config.cfg_scale:g}, {config.residual_steps} residual steps, {source}\n")
    print("| k | scales held (sides) | model draws the rest | no shape found | codes alone | s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        held = ", ".join(str(side) for side in sides[:row["keep"]]) or "none"
        print(f"| {row['keep']} | {held} | {row['model']:.3f} | {row['no_shape']:.3f} | {row['codes_alone']:.3f} "
              f"| {row['seconds']:.0f} |")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": source, "prompts": args.prompts, "seed": args.seed,
                                         "cfg_scale": config.cfg_scale, "residual_steps": config.residual_steps,
                                         "scales": list(sides), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
