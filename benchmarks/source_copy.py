"""How much of an edited image (or the next step of a drawing) its source already holds, in codes.

    python -m benchmarks.source_copy [--tokenizer PATH] [--pairs 64] [--seed 0] [--json PATH]

Why: an edit changes one shape and keeps the rest, so the decoder could copy most of its codes
from the source, which is what the source hint (`UnifiedVLMConfig.source_hint`) feeds it. How
much copying can give depends on the tokenizer: multi-scale residual codes are not local (a
change anywhere moves the coarse scales, and with them every finer residual), and neither is a
conv encoder's latent. For source/target pairs of the shapes world (single edits from
`worlds.scene_edits`, consecutive steps from `worlds.step_drawings`), per scale:

- `same_code`: the target's code equals the source's code at the same place;
- `hint_lookup`: the nearest code to the hint's vector (the source latent at the scale's size
  minus the target's own running sum: what the quantizer would look up if the target were the
  source) is the target's code. This is what a decoder gets by copying through the hint;

and over the 8x8 latent grid: the share of cells whose pixels change (any pixel of the cell by
more than 0.05) and the share whose latent vector moves by more than 20% of its norm.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from vlm.image_io import images_to_tensor
from vlm.quantizer import RunningSum
from vlm.tokenizer import HybridTokenizer
from vlm.unified_model import CONFIG_NAME, DEFAULT_MODEL_PATH, model_tokenizer_folder
from worlds.scene_edits import random_edit
from worlds.shapes import random_scene, render
from worlds.step_drawings import PROCEDURES, step_images


def default_model_tokenizer() -> Path | None:
    """The tokenizer the shipped model was trained on."""
    name = json.loads((DEFAULT_MODEL_PATH / CONFIG_NAME).read_text())["image_tokenizer"]
    return model_tokenizer_folder(DEFAULT_MODEL_PATH, name)


def edit_pairs(rng: random.Random, count: int, size: int) -> list[tuple]:
    pairs = []
    while len(pairs) < count:
        edit = random_edit(random_scene(rng), rng)
        if edit is not None:
            pairs.append((render(list(edit.before), size), render(list(edit.after), size)))
    return pairs


def step_pairs(rng: random.Random, count: int, size: int) -> list[tuple]:
    pairs = []
    procedures = list(PROCEDURES.values())
    while len(pairs) < count:
        images = step_images(rng.choice(procedures)(rng), size)
        pairs += list(zip(images, images[1:]))
    return pairs[:count]


@torch.no_grad()
def measure(tokenizer: HybridTokenizer, pairs: list[tuple]) -> dict:
    size = tokenizer.config.image_size
    sources = images_to_tensor([source for source, _ in pairs], size)
    targets = images_to_tensor([target for _, target in pairs], size)
    quantizer = tokenizer.quantizer
    source_tokens, target_tokens = tokenizer.encode_pixels(sources), tokenizer.encode_pixels(targets)
    source_latent, target_latent = tokenizer.latent(source_tokens), tokenizer.latent(target_tokens)
    running = RunningSum(quantizer)
    same, hinted = [], []
    for scale_index, (source_codes, target_codes) in enumerate(zip(source_tokens.codes, target_tokens.codes)):
        missing = quantizer.still_missing(source_latent, scale_index, running.next_input() if scale_index else None)
        looked_up = quantizer.lookup(missing.permute(0, 2, 3, 1).flatten(0, 2)).view_as(target_codes)
        same.append(float((source_codes == target_codes).float().mean()))
        hinted.append(float((looked_up == target_codes).float().mean()))
        running.add(target_codes)
    counts = torch.tensor([size * size for size in quantizer.scales], dtype=torch.float32)
    grid = source_latent.shape[-1]
    changed = F.adaptive_max_pool2d((sources - targets).abs().amax(dim=1, keepdim=True), grid)[:, 0] > 0.05
    moved = (source_latent - target_latent).norm(dim=1) / target_latent.norm(dim=1).clamp_min(1e-6) > 0.2
    return {"pairs": len(pairs), "same_code": same, "hint_lookup": hinted,
            "same_code_all": float((torch.tensor(same) * counts).sum() / counts.sum()),
            "hint_lookup_all": float((torch.tensor(hinted) * counts).sum() / counts.sum()),
            "cells_with_changed_pixels": float(changed.float().mean()),
            "cells_latent_moved_20pct": float(moved.float().mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.source_copy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default=None, help="image tokenizer folder (default: the default model's)")
    parser.add_argument("--pairs", type=int, default=64, help="source/target pairs per kind (edits, steps)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scenes, edits and drawings")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    tokenizer = HybridTokenizer.from_pretrained(args.tokenizer or default_model_tokenizer()).eval()
    rng = random.Random(f"source-copy-{args.seed}")
    size = tokenizer.config.image_size
    results = {"edits": measure(tokenizer, edit_pairs(rng, args.pairs, size)),
               "steps": measure(tokenizer, step_pairs(rng, args.pairs, size))}
    scales = " | ".join(str(scale) for scale in tokenizer.config.scales)
    print(f"| pairs | measure | {scales} | all |")
    print("|---" * (len(tokenizer.config.scales) + 3) + "|")
    for kind, values in results.items():
        for key in ("same_code", "hint_lookup"):
            cells = " | ".join(f"{value:.2f}" for value in values[key])
            print(f"| {kind} ({values['pairs']}) | {key} | {cells} | {values[key + '_all']:.2f} |")
    for kind, values in results.items():
        print(f"{kind}: latent cells with changed pixels {values['cells_with_changed_pixels']:.2f}, "
              f"latent vectors moved by >20% {values['cells_latent_moved_20pct']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
