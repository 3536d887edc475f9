"""Can the training recipe memorise a handful of drawings? The fast judge of every recipe change.

    python -m benchmarks.overfit [--images 16] [--steps 165] [--tokenizer PATH] [--json PATH] [TRAIN FLAGS]

Builds N seeded single-shape drawing conversations ("Draw a small red triangle at the
bottom." -> "Here it is:" + the render), trains a fresh model on them with the real
trainer (`python -m training.train`, a child process) and the shipped recipe (training/configs/default_model.yaml),
then prints the image loss per step, the teacher-forced accuracy per scale, and how many
drawings the model reproduces when asked with the training prompt, judged by the shapes
detector, plus the wall time.

Any flag of `python -m training.train` (see its --help) given after the benchmark's own
flags overrides the recipe, e.g. `--learning-rate 3e-3 --finetune full --mixed-precision no`:
an A/B is two runs that differ in one flag. Everything is seeded and repeatable.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import torch

from benchmarks.fresh_training import RECIPE, FreshRun, read_log, run_in_work_dir, window_mean
from generation import GenerationConfig, generate
from vlm.image_io import tensor_to_pil
from vlm.teacher_forcing import teacher_forced_code_logits, teacher_forced_residuals
from vlm.unified_model import UnifiedVLM
from worlds.conversation_writer import ConversationWriter
from worlds.shapes import Shape, position_name, random_scene, render
from worlds.shapes_detector import read_scene, scene_key

REPLY = "Here it is:"

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overfit", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="drawings to memorise (distinct single shapes)")
    parser.add_argument("--steps", type=int, default=165,
                        help="optimizer steps of the training run (165 of batch 8: 20-25 min on 2 cores in bf16)")
    parser.add_argument("--batch-size", type=int, default=8, help="conversations per step")
    parser.add_argument("--warmup-steps", type=int, default=10, help="learning-rate warm-up steps")
    parser.add_argument("--tokenizer", type=str, default=None,
                        help="image tokenizer folder the fresh model is built on (default: the shipped one)")
    parser.add_argument("--recipe", type=Path, default=RECIPE,
                        help="training config whose recipe keys (learning rate, fine-tuning, precision...) are used")
    parser.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance when drawing")
    parser.add_argument("--image-temperature", type=float, default=0.0, help="0: greedy codes when drawing")
    parser.add_argument("--residual-steps", type=int, default=8, help="residual head steps when drawing")
    parser.add_argument("--seed", type=int, default=0, help="seed for the drawings, the model and the training")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the data, model, log and drawn images here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return parser.parse_known_args(argv)


def drawing_conversations(count: int, seed: int, image_size: int = 64) -> list[tuple[list[Shape], list[dict]]]:
    """`count` distinct single-shape scenes with the conversation that asks for each."""
    rng = random.Random(f"overfit-{seed}")
    seen, out = set(), []
    while len(out) < count:
        scene = random_scene(rng, 1)
        key = tuple(scene_key(scene))
        if key in seen:
            continue
        seen.add(key)
        prompt = f"Draw a {scene[0].phrase} {position_name(scene[0])}."
        out.append((scene, [{"role": "user", "content": prompt},
                            {"role": "assistant", "content": [{"type": "text", "text": REPLY},
                                                              {"type": "image", "image": render(scene, image_size)}]}]))
        if len(seen) >= 360 and len(out) < count:  # 6 kinds x 6 colours x 2 sizes x 5 places
            raise ValueError(f"the shapes world has only {len(seen)} distinct single shapes; asked for {count}")
    return out


def scale_accuracy(predicted_N: torch.Tensor, codes_N: torch.Tensor, scales: tuple[int, ...]
                   ) -> list[tuple[int, int]]:
    """(correct, total) per scale for one image's predicted and true codes, flat in scale order."""
    sizes = [size * size for size in scales]
    if predicted_N.numel() != sum(sizes) or codes_N.numel() != sum(sizes):
        raise ValueError(f"expected {sum(sizes)} codes for scales {scales}, got {predicted_N.numel()} and "
                         f"{codes_N.numel()}")
    return [(int((predicted == codes).sum()), predicted.numel())
            for predicted, codes in zip(predicted_N.split(sizes), codes_N.split(sizes))]


@torch.no_grad()
def teacher_forced_accuracy(model: UnifiedVLM, conversations: list[list[dict]], batch_size: int = 8) -> list[float]:
    """Share of codes the model's argmax gets right with the true earlier scales fed, per scale."""
    scales = model.image_tokenizer.config.scales
    totals = [[0, 0] for _ in scales]
    for start in range(0, len(conversations), batch_size):
        batch = model.processor(conversations[start:start + batch_size])
        for logits, codes in teacher_forced_code_logits(model, batch):
            for total, (correct, count) in zip(totals, scale_accuracy(logits.argmax(dim=-1), codes, scales)):
                total[0] += correct
                total[1] += count
    return [correct / count for correct, count in totals]


def reproduced(scene: list[Shape], image) -> bool:
    """The detector reads back exactly the asked scene (kind, colour, size and place)."""
    return image is not None and read_scene(image) == scene_key(scene)


@torch.no_grad()
def reproduction_ceilings(model: UnifiedVLM, cases: list[tuple[list[Shape], list[dict]]], residual_steps: int,
                          seed: int) -> dict[str, int]:
    """What limits reproduction besides the codes: drawings the detector passes after the
    tokenizer's round trip with the true residual and with none, and with the true codes plus
    the model's own residual head (on its teacher-forced conditions)."""
    tokenizer = model.image_tokenizer
    images = [messages[1]["content"][1]["image"] for _, messages in cases]
    tokens = tokenizer.encode(images)
    conditions, _, _ = teacher_forced_residuals(model, model.processor([messages for _, messages in cases]), tokens)
    side = tokenizer.config.scales[-1]
    sampled = model.residual_head.sample(conditions.flatten(0, 1), residual_steps, torch.Generator().manual_seed(seed))
    residual = sampled.view(len(cases), side, side, -1).permute(0, 3, 1, 2)
    own_head = tensor_to_pil(tokenizer.decode_latent(tokenizer.quantizer.codes_to_latent(tokens.codes) + residual))

    def passed(drawn):
        return sum(reproduced(scene, image) for (scene, _), image in zip(cases, drawn))

    return {"tokenizer_true_residual": passed(tokenizer.decode_to_images(tokens)),
            "tokenizer_no_residual": passed(tokenizer.decode_to_images(tokens, use_residual=False)),
            "true_codes_model_residual": passed(own_head)}


def run(args: argparse.Namespace, extra: list[str], work: Path) -> dict:
    started = time.time()
    cases = drawing_conversations(args.images, args.seed)
    with ConversationWriter(work, "drawings") as writer:
        for _, messages in cases:
            writer.add([dict(message) for message in messages])
    fresh = FreshRun(args.steps, args.batch_size, args.warmup_steps, args.seed, args.tokenizer, args.recipe, extra)
    train_seconds = fresh.train(writer.path, work / "run")
    log = read_log(work / "run" / "log.csv")
    model = UnifiedVLM.from_pretrained(work / "run" / "model", for_training=True)
    model.eval()  # adapters left unfolded: exactly the trained weights
    conversations = [messages for _, messages in cases]
    accuracy = teacher_forced_accuracy(model, conversations)
    config = GenerationConfig(max_images=1, max_new_tokens=24, temperature=0.0, cfg_scale=args.cfg,
                              image_temperature=args.image_temperature, residual_steps=args.residual_steps,
                              seed=args.seed)
    drawn_dir = work / "drawn"
    drawn_dir.mkdir(exist_ok=True)
    hits = []
    for index, (scene, messages) in enumerate(cases):
        reply = generate(model, [messages[0]], config)[0]
        image = reply.images[0] if reply.images else None
        if image is not None:
            image.save(drawn_dir / f"{index:03d}.png")
        hits.append(reproduced(scene, image))
    first, last = log[:10], log[-10:]
    return {
        "images": args.images, "steps": args.steps, "batch_size": args.batch_size, "recipe_overrides": extra,
        "tokenizer": args.tokenizer or "shipped", "scales": list(model.image_tokenizer.config.scales),
        "image_loss_per_step": [row.get("image") for row in log],
        "image_loss_first10": window_mean(first, "image"), "image_loss_last10": window_mean(last, "image"),
        "image_loss_per_scale_last10": [window_mean(last, f"image_scale_{index + 1}")
                                        for index in range(len(model.image_tokenizer.config.scales))],
        "teacher_forced_accuracy_per_scale": accuracy, "reproduced": sum(hits),
        "reproduced_with": reproduction_ceilings(model, cases, args.residual_steps, args.seed),
        "reproduced_per_image": hits, "train_seconds": train_seconds, "seconds": time.time() - started,
    }


def format_report(results: dict) -> str:
    scales = results["scales"]
    losses = results["image_loss_per_step"]
    marks = sorted({0, *range(9, len(losses), 10), len(losses) - 1})
    lines = [f"overfit: {results['images']} drawings, {results['steps']} steps of {results['batch_size']}, "
             f"recipe overrides {results['recipe_overrides'] or 'none'}, tokenizer {results['tokenizer']}", "",
             "| step | image loss |", "|---|---|"]
    lines += [f"| {index + 1} | {losses[index]:.3f} |" for index in marks if losses[index] is not None]
    lines += ["", "| scale | " + " | ".join(str(size) for size in scales) + " |",
              "|---|" + "---|" * len(scales),
              "| teacher-forced accuracy | " + " | ".join(f"{value:.2f}"
                                                        for value in results["teacher_forced_accuracy_per_scale"])
              + " |",
              "| image loss, last 10 steps | " + " | ".join(f"{value:.2f}"
                                                          for value in results["image_loss_per_scale_last10"])
              + " |", "",
              f"reproduced when asked (detector): {results['reproduced']} / {results['images']}",
              "for comparison, the detector passes (of {images}): {tokenizer_true_residual} after the tokenizer's "
              "round trip with the true residual, {tokenizer_no_residual} with none, {true_codes_model_residual} "
              "with the true codes and the model's residual head".format(images=results["images"],
                                                                          **results["reproduced_with"]),
              f"image loss: {results['image_loss_first10']:.2f} (steps 1-10) -> {results['image_loss_last10']:.2f} "
              f"(last 10 steps)",
              f"wall time: {results['train_seconds'] / 60:.1f} min training, {results['seconds'] / 60:.1f} min in all"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args, extra = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.images < 1 or args.steps < 1:
        raise SystemExit("--images and --steps must be at least 1")
    results = run_in_work_dir(args.work_dir, "overfit-", lambda work: run(args, extra, work))
    print(format_report(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
