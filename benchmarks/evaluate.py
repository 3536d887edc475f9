"""Evaluate a model with one command: a markdown table, docs/RESULTS.md with plots, and JSON.

    python -m benchmarks.evaluate [--model PATH] [--json PATH] [--out docs] [--quick]

Runs, on the default model (or --model):

- GenEval-style text-to-image on the shapes world (per category, hybrid and discrete-only
  decoding, and a CFG sweep; and one shape asked for in other words than training's, alone
  or mid-chat), scored by the colour-segmentation detector;
- emoji text-to-image, scored top-1/top-5 by an independent emoji classifier;
- shapes-world VQA, and emoji naming (with the emoji task);
- step-by-step consistency (does each step's image hold the parts named so far);
- edits (one edit, and chains of three) checked by the detector;
- perplexity of held-out text-only chats, stock backbone vs model;
- and the speed and tokenizer tables from their benchmarks' JSON in docs/.

Everything is seeded: the same model and flags give the same numbers. --quick runs a few
cases of each, to check the pipeline (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

from PIL import Image, ImageDraw

from benchmarks.evaluation import geneval
from benchmarks.evaluation.common import EvalSettings
from benchmarks.evaluation.edits import edit_accuracy
from benchmarks.evaluation.emoji_classifier import ClassifierConfig, EmojiClassifier
from benchmarks.evaluation.emoji_drawing import emoji_drawing
from benchmarks.evaluation.steps import steps_consistency
from benchmarks.evaluation.text import text_perplexities
from benchmarks.evaluation.understanding import (
    accuracy_by_kind,
    accuracy_by_shapes,
    emoji_naming_accuracy,
    vqa_accuracy,
)
from chat.quiet import add_dtype_flag
from generation import GenerationConfig
from vlm.backbone import resolve_dtype
from worlds.shapes import DRAW_REQUESTS

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parent.parent
TASKS = ("geneval", "emoji", "vqa", "steps", "edits", "text")


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    add_dtype_flag(parser)
    parser.add_argument("--json", type=Path, default=None, help="write every number here too")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs",
                        help="folder for RESULTS.md and results/*.png")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="run only these tasks")
    parser.add_argument("--quick", action="store_true", help="a few cases per task: checks the pipeline only")
    parser.add_argument("--seed", type=int, default=0, help="seed for prompts and sampling")
    parser.add_argument("--cfg-scale", type=float, default=None,
                        help="CFG scale of every drawn image but the sweep (default: the model's own, from its "
                             "generation_config.json, else 3)")
    parser.add_argument("--residual-steps", type=int, default=None,
                        help="residual head steps for hybrid images (default: the model's own, from its "
                             "generation_config.json, else 8)")
    parser.add_argument("--image-temperature", type=float, nargs="+", default=None,
                        help="image code sampling temperature: one value, or one per scale (default: the "
                             "model's own, else 1)")
    parser.add_argument("--image-top-k", type=int, nargs="+", default=None,
                        help="sample image codes from the k most likely only: one value, or one per scale "
                             "(default: the model's own, else 0 = off)")
    parser.add_argument("--image-top-p", type=float, nargs="+", default=None,
                        help="nucleus sampling of image codes: one value, or one per scale (default: the "
                             "model's own, else 1 = off)")
    parser.add_argument("--image-candidates", type=_at_least_one, default=None,
                        help="drawings per image, the one the model finds likeliest kept (default: the model's "
                             "own, else 1); N costs up to N times the drawing time")
    parser.add_argument("--batch-size", type=int, default=None, help="conversations per generation run")
    parser.add_argument("--geneval-draws", type=_at_least_one, default=None,
                        help=f"drawings of each GenEval prompt behind the headline hybrid score, which is their "
                             f"mean (default {EvalSettings.geneval_draws}; 1 is quicker and noisier; drawing 0 "
                             "is the same whatever N)")
    parser.add_argument("--vqa-questions", type=_at_least_one, default=None,
                        help=f"shapes VQA questions (default {EvalSettings.vqa_questions}); a seed's first N "
                             "are the same questions whatever N, so a shorter run is the start of a longer one")
    parser.add_argument("--classifier-steps", type=int, default=ClassifierConfig.steps,
                        help="training steps of the emoji classifier (trained once, then cached)")
    return parser.parse_args(argv)


def _grid(images: list[Image.Image | None], labels: list[str], columns: int = 8, side: int = 96) -> Image.Image:
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * side, rows * (side + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (image, label) in enumerate(zip(images, labels)):
        x, y = index % columns * side, index // columns * (side + 14)
        if image is None:
            draw.text((x + 8, y + side // 2), "no image", fill=(160, 0, 0))
        else:
            sheet.paste(image.convert("RGB").resize((side, side), Image.Resampling.NEAREST), (x, y))
        draw.text((x + 2, y + side), label[:16], fill=(0, 0, 0))
    return sheet


def _plot_geneval(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, sweep) = plt.subplots(1, 2, figsize=(11, 3.8))
    categories = [*geneval.CATEGORIES, "overall"]
    width = 0.4
    for offset, (name, label) in enumerate((("hybrid", "hybrid"), ("discrete", "discrete only"))):
        values = [results["geneval"][name][category] for category in categories]
        bars.bar([index + (offset - 0.5) * width for index in range(len(categories))], values, width, label=label)
    bars.set_xticks(range(len(categories)), [category.replace("_", "\n") for category in categories], fontsize=8)
    bars.set_ylim(0, 1)
    bars.set_ylabel("accuracy")
    bars.set_title(f"shapes GenEval (CFG {results['settings']['cfg_scale']:g})")
    bars.legend()
    scales = sorted(results["geneval"]["cfg_sweep"], key=float)
    sweep.plot([float(scale) for scale in scales], [results["geneval"]["cfg_sweep"][scale]["overall"]
                                                    for scale in scales], marker="o")
    sweep.set_xlabel("CFG scale")
    sweep.set_ylabel("overall accuracy")
    sweep.set_ylim(0, 1)
    sweep.set_title("CFG sweep (hybrid)")
    sweep.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def evaluate(args: argparse.Namespace) -> dict:
    from chat.session import load_chat_model

    settings = EvalSettings.quick() if args.quick else EvalSettings()
    settings.seed = args.seed
    if args.batch_size:
        settings.batch_size = args.batch_size
    if args.vqa_questions:
        settings.vqa_questions = args.vqa_questions
    if args.geneval_draws:
        settings.geneval_draws = args.geneval_draws
    given = {} if args.cfg_scale is None else {"cfg_scale": args.cfg_scale}
    if args.residual_steps is not None:
        given["residual_steps"] = args.residual_steps
    if args.image_candidates is not None:
        given["image_candidates"] = args.image_candidates
    for name in ("image_temperature", "image_top_k", "image_top_p"):
        values = getattr(args, name)
        if values is not None:
            given[name] = values[0] if len(values) == 1 else tuple(values)
    GenerationConfig(**given)  # a bad value fails here, before the model loads
    model = load_chat_model(args.model, resolve_dtype(args.dtype), args.int8)
    sampling = GenerationConfig.for_model(model, **given)  # the model's own defaults where nothing was given
    for name in ("cfg_scale", "image_temperature", "image_top_k", "image_top_p", "residual_steps", "image_candidates"):
        setattr(settings, name, getattr(sampling, name))
    figures = args.out / "results"
    figures.mkdir(parents=True, exist_ok=True)
    results: dict = {"model": args.model or "default", "settings": asdict(settings), "seconds": {}}
    started = time.time()

    if "geneval" in args.tasks:
        samples: list = []
        hybrid = geneval.run(model, settings, settings.cfg_scale, settings.residual_steps,
                             on_image=lambda category, index, image: samples.append((category, image)),
                             draws=settings.geneval_draws)
        discrete = geneval.run(model, settings, settings.cfg_scale, 0)
        sweep_settings = replace(settings, geneval_prompts=settings.cfg_sweep_prompts)
        sweep = {f"{scale:g}": geneval.run(model, sweep_settings, scale, settings.residual_steps)
                 for scale in settings.cfg_sweep}
        other_words = geneval.other_words(model, settings, settings.cfg_scale, settings.residual_steps)
        results["geneval"] = {"hybrid": hybrid, "discrete": discrete, "cfg_sweep": sweep, "other_words": other_words,
                              "ceiling_hybrid": geneval.ceiling(model.image_tokenizer, settings, use_residual=True),
                              "ceiling_discrete": geneval.ceiling(model.image_tokenizer, settings, use_residual=False)}
        results["geneval_overall"] = hybrid["overall"]
        if "first_draw" in hybrid:
            results["geneval_first_draw_overall"] = hybrid["first_draw"]["overall"]
        results["geneval_discrete_overall"] = discrete["overall"]
        results["geneval_other_words"] = other_words["overall"]
        _plot_geneval(results, figures / "geneval.png")
        _grid([image for _, image in samples], [category for category, _ in samples]).save(
            figures / "geneval_samples.png")
        results["seconds"]["geneval"] = time.time() - started

    if "emoji" in args.tasks:
        mark = time.time()
        classifier = EmojiClassifier.load_or_train(ClassifierConfig(steps=args.classifier_steps))
        heldout, samples = emoji_drawing(model, settings, classifier, "heldout")
        seen, _ = emoji_drawing(model, settings, classifier, "train")
        results["emoji"] = {"heldout": heldout, "seen": seen}
        results["emoji_top1"], results["emoji_top5"] = heldout["top1"], heldout["top5"]
        results["emoji_seen_top1"], results["emoji_seen_top5"] = seen["top1"], seen["top5"]
        _grid([image for _, image in samples[:32]], [name for name, _ in samples[:32]]).save(
            figures / "emoji_samples.png")
        results["emoji_naming_accuracy"], naming_records = emoji_naming_accuracy(model, settings)
        results["emoji_naming_examples"] = naming_records[:8]
        results["seconds"]["emoji"] = time.time() - mark

    if "vqa" in args.tasks:
        mark = time.time()
        results["vqa_accuracy"], vqa_records = vqa_accuracy(model, settings)
        results["vqa_by_kind"] = accuracy_by_kind(vqa_records)
        results["vqa_by_shapes"] = accuracy_by_shapes(vqa_records)
        results["vqa_examples"] = vqa_records[:8]
        results["seconds"]["vqa"] = time.time() - mark

    if "steps" in args.tasks:
        mark = time.time()
        results["steps_consistency"], step_records = steps_consistency(model, settings)
        results["steps_examples"] = step_records[:6]
        results["seconds"]["steps"] = time.time() - mark

    if "edits" in args.tasks:
        mark = time.time()
        results |= edit_accuracy(model, settings)
        results["seconds"]["edits"] = time.time() - mark

    if "text" in args.tasks:
        mark = time.time()
        results["text_ppl_base"], results["text_ppl_model"], results["text_chats"] = text_perplexities(model, settings)
        results["seconds"]["text"] = time.time() - mark

    for name in ("speed", "tokenizer"):
        path = REPOSITORY / "docs" / f"{name}_benchmark.json"
        if path.is_file():
            results[name] = json.loads(path.read_text())
    results["seconds"]["total"] = time.time() - started
    return results


HEADLINE = [
    ("geneval_overall", "shapes GenEval overall, hybrid (detector; the mean over the drawings of each prompt)"),
    ("geneval_first_draw_overall", "shapes GenEval overall, hybrid, drawing 0 alone (the one-drawing number)"),
    ("geneval_discrete_overall", "shapes GenEval overall, discrete only"),
    ("geneval_other_words", "one shape asked for in other words than training's, alone or mid-chat (hybrid)"),
    ("emoji_top1", "emoji text-to-image top-1, held-out emoji (classifier)"),
    ("emoji_top5", "emoji text-to-image top-5, held-out emoji"),
    ("emoji_seen_top1", "emoji text-to-image top-1, training-split emoji"),
    ("emoji_seen_top5", "emoji text-to-image top-5, training-split emoji"),
    ("vqa_accuracy", "shapes VQA accuracy"),
    ("emoji_naming_accuracy", "emoji naming accuracy (training-split emoji)"),
    ("steps_consistency", "step-by-step consistency"),
    ("edit_accuracy", "edit accuracy, single edits"),
    ("edit_said_right", "single edits whose reply names the edited scene in words"),
    ("edit_words_said_right", "the same edits told in words (no picture): reply names the edited scene"),
    ("edit_chain_accuracy", "edit accuracy, chains of three (all three right)"),
    ("edit_chain_step_accuracy", "edit accuracy, each step of the chains"),
    ("text_ppl_base", "text perplexity, stock backbone"),
    ("text_ppl_model", "text perplexity, this model"),
]


def _cell(text: str, limit: int = 120) -> str:
    """Text fit for one markdown table cell."""
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table(results: dict) -> str:
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {label} (`{key}`) | {_number(results[key])} |" for key, label in HEADLINE if key in results]
    return "\n".join(lines)


def _sampling_line(settings: dict) -> str:
    """How images were drawn: the model's own defaults (generation_config.json) or the flags."""
    return (f"Images drawn with CFG {settings['cfg_scale']:g}, code temperature {settings['image_temperature']}, "
            f"top-k {settings['image_top_k']}, top-p {settings['image_top_p']}, "
            f"{settings['residual_steps']} residual steps"
            + (f", the likeliest of {settings['image_candidates']} drawings kept per image."
               if settings.get("image_candidates", 1) > 1 else "."))


def _other_words_lines(results: dict) -> list[str]:
    values = results["geneval"].get("other_words")
    if values is None:
        return []
    return [f"One shape of the asked kind and colour ({results['settings']['geneval_prompts']} shapes, hybrid), "
            f"asked for in the training phrasing "
            f"(`{DRAW_REQUESTS[0]}`, ...; the control) and in other words than the training data's "
            f"(`{geneval.OTHER_WORDINGS[0]}`, ...), alone (direct) or after a chat opener (mid-chat, "
            f"`{geneval.CHAT_REQUESTS[0]}`): trained phrasing {values['trained']:.2f}, direct "
            f"{values['direct']:.2f}, mid-chat {values['mid_chat']:.2f}; in the training phrasing "
            f"again as the next request after drawing another shape (a new drawing, not an edit) "
            f"{values.get('after_drawing', float('nan')):.2f}; drew an image {values['drew_image']:.2f}.", ""]


def report(results: dict, command: str) -> str:
    parts = ["# Evaluation results", "",
             f"Model: `{results['model']}`. Made by `{command}` in {results['seconds']['total'] / 60:.1f} min "
             "on this machine's CPU. Every number is seeded and reproducible; what each measures is in "
             "`benchmarks/evaluation/`.", "", _sampling_line(results["settings"]), "", table(results), ""]
    if "geneval" in results:
        categories = [*geneval.CATEGORIES, "overall", "drew_image"]
        head = "| setting | " + " | ".join(categories) + " |"
        rows = [head, "|" + "---|" * (len(categories) + 1)]
        hybrid = results["geneval"]["hybrid"]
        draws = hybrid.get("draws", 1)
        settings = [(f"hybrid, mean of {draws} drawings" if draws > 1 else "hybrid", hybrid),
                    *([("hybrid, drawing 0 alone (paired with the rows below)", hybrid["first_draw"])]
                      if draws > 1 else []),
                    ("discrete only", results["geneval"]["discrete"]),
                    *[(f"hybrid, CFG {scale}", values) for scale, values in results["geneval"]["cfg_sweep"].items()],
                    ("ceiling: tokenizer reconstructions of the true renders, hybrid",
                     results["geneval"]["ceiling_hybrid"]),
                    ("ceiling: the same, discrete only", results["geneval"]["ceiling_discrete"])]
        for name, values in settings:
            rows.append(f"| {name} | " + " | ".join(f"{values[category]:.2f}" for category in categories) + " |")
        parts += ["## Shapes GenEval", "", f"{results['settings']['geneval_prompts']} prompts per category "
                  f"({results['settings'].get('cfg_sweep_prompts', results['settings']['geneval_prompts'])} "
                  "per category and scale in the CFG sweep)"
                  + (f"; the headline hybrid row draws each prompt {draws} times (drawing k with the seed + "
                     f"k x {geneval.DRAW_SEED_STRIDE:,}) and is their mean, the other rows draw once "
                     f"(overall per drawing: {', '.join(f'{value:.3f}' for value in hybrid['overall_per_draw'])})"
                     if draws > 1 else "") + ".", "",
                  *rows, "", "![GenEval by category and CFG sweep](results/geneval.png)", "",
                  *_other_words_lines(results), "Samples (hybrid, one per prompt, labelled by category):", "",
                  "![GenEval samples](results/geneval_samples.png)", ""]
    if "emoji" in results:
        parts += ["## Emoji text-to-image", "", "| emoji | top-1 | top-5 | drew an image | classifier top-1 / top-5 "
                  "on the true renders (ceiling) |", "|---|---|---|---|---|"]
        for split, values in results["emoji"].items():
            parts.append(f"| {split} | {values['top1']:.3f} | {values['top5']:.3f} | {values['drew_image']:.2f} | "
                         f"{values['classifier_top1_on_renders']:.2f} / {values['classifier_top5_on_renders']:.2f} |")
        parts += ["", "![emoji samples, held-out prompts](results/emoji_samples.png)", ""]
    if "vqa_by_kind" in results:
        parts += ["## Shapes VQA by kind of answer", "", "| asks for | accuracy | questions | a guess's |",
                  "|---|---|---|---|",
                  *[f"| {kind} | {values['accuracy']:.2f} | {values['questions']} | {values['chance']:.2f} |"
                    for kind, values in results["vqa_by_kind"].items()], ""]
    if "vqa_by_shapes" in results:
        parts += ["## Shapes VQA by number of shapes in the picture", "",
                  "| shapes | accuracy | questions | answered with another shape's colour, kind or place |",
                  "|---|---|---|---|",
                  *[f"| {count} | {values['accuracy']:.2f} | {values['questions']} | {values['another_shape_s']:.2f} |"
                    for count, values in results["vqa_by_shapes"].items()], ""]
    if "vqa_examples" in results:
        parts += ["## Shapes VQA: example answers", "", "| question | expected | reply | right |", "|---|---|---|---|"]
        for record in results["vqa_examples"]:
            parts.append(f"| {record['question']} | {record['expected']} | {_cell(record['reply'])} | "
                         f"{'yes' if record['correct'] else 'no'} |")
        parts.append("")
    if "emoji_naming_examples" in results:
        parts += ["## Emoji naming: example answers", "", "| emoji | reply | right |", "|---|---|---|"]
        for record in results["emoji_naming_examples"]:
            parts.append(f"| {record['name']} | {_cell(record['reply'])} | {'yes' if record['correct'] else 'no'} |")
        parts.append("")
    if "steps_examples" in results:
        parts += ["## Step-by-step: example replies", "", "| request | images | consistent steps | reply |",
                  "|---|---|---|---|"]
        for record in results["steps_examples"]:
            parts.append(f"| {record['request']} | {record['images']} | {record['consistent']}/{record['steps']} | "
                         f"{_cell(record['reply'])} |")
        parts.append("")
    if "edit_accuracy" in results:
        kinds = {key: value for key, value in results.items() if key.startswith("edit_") and key not in
                 ("edit_accuracy", "edit_said_right", "edit_words_said_right", "edit_chain_accuracy",
                  "edit_chain_step_accuracy", "edit_by_shapes")}
        parts += ["## Edits by kind (single edits)", "", "| kind | accuracy |", "|---|---|",
                  *[f"| {key.removeprefix('edit_')} | {value:.2f} |" for key, value in kinds.items()], ""]
    if "edit_by_shapes" in results:
        parts += ["## Edits by number of shapes in the upload (single edits)", "",
                  "| shapes | edits | drawn right | reply names the edited scene | told in words: names it |",
                  "|---|---|---|---|---|",
                  *[f"| {count} | {values['edits']} | {values['accuracy']:.2f} | {values['said_right']:.2f} | "
                    f"{values['said_in_words']:.2f} |" for count, values in results["edit_by_shapes"].items()], ""]
    if "speed" in results:
        parts += ["## Speed (docs/speed_benchmark.json, `python -m benchmarks.speed`)", "", "| measure | value |",
                  "|---|---|", *[f"| {key} | {_number(value)} |" for key, value in results["speed"].items()
                                 if not isinstance(value, (dict, list))], ""]
    if "tokenizer" in results:
        parts += ["## Tokenizer (docs/tokenizer_benchmark.json, `python -m benchmarks.tokenizer`)", "",
                  "| measure | value |", "|---|---|",
                  *[f"| {key} | {_number(value)} |" for key, value in results["tokenizer"].items()], ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = evaluate(args)
    command = "python -m benchmarks.evaluate" + (f" --model {args.model}" if args.model else "") + \
        (" --quick" if args.quick else "")
    if args.seed:
        command += f" --seed {args.seed}"
    if args.vqa_questions:
        command += f" --vqa-questions {args.vqa_questions}"
    if args.geneval_draws:
        command += f" --geneval-draws {args.geneval_draws}"
    if args.cfg_scale is not None:
        command += f" --cfg-scale {args.cfg_scale:g}"
    for name in ("image_temperature", "image_top_k", "image_top_p"):
        values = getattr(args, name)
        if values is not None:
            command += f" --{name.replace('_', '-')} " + " ".join(f"{value:g}" for value in values)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "RESULTS.md").write_text(report(results, command))
    print(table(results))
    print(f"\nwrote {args.out / 'RESULTS.md'} and {args.out / 'results'}/")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
