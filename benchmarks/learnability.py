"""How learnable are a tokenizer's codes? Train a fresh model on shapes drawings at a fixed budget.

    python -m benchmarks.learnability --tokenizer PATH [--steps 100] [--json PATH] [TRAIN FLAGS]

Builds a seeded shapes-only drawing set (1-3 shapes per scene, the training data's
phrasings), trains a fresh unified model on it with the real trainer and the shipped recipe
for `--steps` steps, then prints the per-scale training image loss (mean of the last 10
steps), the held-out image loss per scale on drawings of other scenes (teacher forced), and
GenEval on the result (the project's detector). Run it for two tokenizers with the same
flags: the one whose codes a decoder learns faster has the lower losses and the higher
GenEval. Flags after the benchmark's own go to `python -m training.train`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

from benchmarks.evaluation import geneval
from benchmarks.evaluation.common import EvalSettings
from benchmarks.fresh_training import RECIPE, FreshRun, image_losses, read_log, run_in_work_dir, window_mean
from vlm.unified_model import UnifiedVLM
from worlds.conversation_writer import ConversationWriter
from worlds.shapes import DRAW_REPLIES, drawing_prompt, random_scene, render


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learnability", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=str, default=None, help="image tokenizer folder (default: shipped)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of the training run")
    parser.add_argument("--batch-size", type=int, default=8, help="conversations per step")
    parser.add_argument("--drawings", type=int, default=2000, help="training drawings (seeded scenes)")
    parser.add_argument("--heldout", type=int, default=48, help="held-out drawings for the held-out loss")
    parser.add_argument("--geneval-prompts", type=int, default=4, help="GenEval prompts per category (6 of them)")
    parser.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance for GenEval")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="training config whose recipe keys are used")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data, the model and the training")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep data and model here (default: temporary)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return parser.parse_known_args(argv)


def drawing_set(count: int, seed: str) -> list[list[dict]]:
    """Seeded text-to-image conversations of the shapes world."""
    rng = random.Random(seed)
    conversations = []
    for _ in range(count):
        scene = random_scene(rng)
        conversations.append([{"role": "user", "content": drawing_prompt(scene, rng)},
                              {"role": "assistant", "content": [{"type": "text", "text": rng.choice(DRAW_REPLIES)},
                                                                {"type": "image", "image": render(scene)}]}])
    return conversations


def run(args: argparse.Namespace, extra: list[str], work: Path) -> dict:
    with ConversationWriter(work, "shapes_drawings") as writer:
        for conversation in drawing_set(args.drawings, f"learnability-train-{args.seed}"):
            writer.add(conversation)
    fresh = FreshRun(args.steps, args.batch_size, seed=args.seed, tokenizer=args.tokenizer, recipe=args.recipe,
                     extra=extra)
    seconds = fresh.train(writer.path, work / "run")
    log = read_log(work / "run" / "log.csv")[-10:]
    model = UnifiedVLM.from_pretrained(work / "run" / "model", for_training=True)
    scales = model.image_tokenizer.config.scales
    heldout = image_losses(model, drawing_set(args.heldout, f"learnability-heldout-{args.seed}"))
    settings = EvalSettings(seed=args.seed, geneval_prompts=args.geneval_prompts)
    scores = geneval.run(model, settings, cfg_scale=args.cfg, residual_steps=8)
    return {
        "tokenizer": args.tokenizer or "shipped", "steps": args.steps, "batch_size": args.batch_size,
        "recipe_overrides": extra, "scales": list(scales),
        "train_image_loss_last10": window_mean(log, "image"),
        "train_image_loss_per_scale_last10": [window_mean(log, f"image_scale_{k + 1}") for k in range(len(scales))],
        "heldout_image_loss": heldout["image"],
        "heldout_image_loss_per_scale": [heldout[f"image_scale_{k + 1}"] for k in range(len(scales))],
        "geneval": scores, "geneval_overall": scores["overall"], "train_seconds": seconds,
    }


def format_report(results: dict) -> str:
    scales = results["scales"]
    row = lambda name, values: f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |"  # noqa: E731
    lines = [f"learnability: tokenizer {results['tokenizer']}, {results['steps']} steps of {results['batch_size']}, "
             f"recipe overrides {results['recipe_overrides'] or 'none'}", "",
             "| image loss (nats) | all | " + " | ".join(f"scale {s}" for s in scales) + " |",
             "|---|---|" + "---|" * len(scales),
             row("training, last 10 steps", [results["train_image_loss_last10"],
                                             *results["train_image_loss_per_scale_last10"]]),
             row("held-out drawings", [results["heldout_image_loss"], *results["heldout_image_loss_per_scale"]]),
             "", f"GenEval overall {results['geneval_overall']:.3f}: "
             + ", ".join(f"{key} {value:.2f}" for key, value in results["geneval"].items() if key != "overall"),
             f"training wall time {results['train_seconds'] / 60:.1f} min"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args, extra = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.steps < 1 or args.drawings < args.batch_size:
        raise SystemExit("--steps must be >= 1 and --drawings at least one batch")
    results = run_in_work_dir(args.work_dir, "learnability-", lambda work: run(args, extra, work))
    print(format_report(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
