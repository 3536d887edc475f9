"""Which image sampling settings draw best for one model: shapes GenEval per setting.

    python -m benchmarks.sampling_sweep --model runs/default_model/model
    python -m benchmarks.sampling_sweep --model M --setting cfg=3 --setting cfg=5,top_p=0.8 --prompts 24

A half-trained model draws cleaner shapes from its more likely codes, so the settings that
score best move as a model trains: sweep them per model (every setting draws the same
prompts with the same seeds) and save the winner beside the weights with `--save`, where
chat, the app and `benchmarks.evaluate` take it as the model's default.
A setting is comma-separated `key=value` pairs over cfg, top_k, top_p and temperature (the
image code sampling of `GenerationConfig`), residual (the residual head's steps: 0 =
discrete only, 1 = the distilled head) and candidates (drawings per image, the one the model
finds likeliest kept); what a setting leaves out keeps the generation default (CFG 3, no
top-k, no top-p, temperature 1, one drawing) and `--residual-steps`. Temperature, top_k
and top_p also take one value per scale, coarsest first, joined by '/' (e.g.
`temperature=1/1/1/1/0.5/0.5` samples the two finest scales, where outlines live, nearer their
most likely codes, and leaves the layout to the coarse scales' full distribution).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.evaluation import geneval
from benchmarks.evaluation.common import EvalSettings
from chat.quiet import add_dtype_flag
from generation import GenerationConfig
from vlm import sampling_defaults
from vlm.backbone import resolve_dtype

logger = logging.getLogger(__name__)

# Short names a setting is written with -> GenerationConfig fields.
KEYS = {"cfg": "cfg_scale", "top_k": "image_top_k", "top_p": "image_top_p", "temperature": "image_temperature",
        "residual": "residual_steps", "candidates": "image_candidates"}
WHOLE_NUMBERS = ("top_k", "residual", "candidates")
PER_SCALE = ("top_k", "top_p", "temperature")
# Weaker guidance too: on the step-741 default run the evaluation's own CFG sweep (8 prompts per
# category) scored 0.146 at CFG 1 and 2 against 0.021 at 3.
# And the residual head off or in one step: on the step-1,600 model its residual loses ~2 dB PSNR on
# true-code drawings (benchmarks.residual_head), and whether that costs the detector reads is unsettled.
DEFAULT_SETTINGS = ("cfg=3", "cfg=1.5", "cfg=2", "cfg=5", "top_p=0.8", "cfg=2,top_p=0.8", "top_k=10", "residual=0",
                    "residual=1")


def parse_setting(text: str) -> dict[str, float | int | tuple]:
    """'cfg=5,top_p=0.8' -> {'cfg_scale': 5.0, 'image_top_p': 0.8}, checked by GenerationConfig;
    'temperature=1/1/0.5' -> {'image_temperature': (1.0, 1.0, 0.5)} (one value per scale)."""
    values: dict[str, float | int | tuple] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in KEYS:
            raise ValueError(f"setting {text!r}: {part.strip()!r} is not one of {', '.join(k + '=...' for k in KEYS)}")
        if "/" in value and key not in PER_SCALE:
            raise ValueError(f"setting {text!r}: {key} takes one number, not one per scale ({value!r})")
        kind = int if key in WHOLE_NUMBERS else float
        try:
            numbers = tuple(kind(item) for item in value.split("/"))
        except ValueError:
            raise ValueError(f"setting {text!r}: {key} takes a number (or N/N/... one per scale), "
                             f"got {value!r}") from None
        values[KEYS[key]] = numbers if len(numbers) > 1 else numbers[0]
    try:
        GenerationConfig(**values)
    except ValueError as error:
        raise ValueError(f"setting {text!r}: {error}") from None
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sampling_sweep", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", required=True, type=Path, help="the model folder to sweep (and --save into)")
    parser.add_argument("--setting", action="append", default=None,
                        help=f"one setting to draw with, e.g. cfg=5,top_p=0.8 (repeatable; default: "
                             f"{' '.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--prompts", type=int, default=12,
                        help="GenEval prompts per category and setting (6 categories; 24 is the evaluation's size)")
    parser.add_argument("--residual-steps", type=int, default=8,
                        help="residual head steps of every setting that does not set residual= (0 = discrete only)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed for prompts and sampling, the same for every setting (default 1: other prompts "
                             "than the evaluation's seed 0, so a setting is not chosen on the prompts it is scored on)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generation run")
    add_dtype_flag(parser)
    parser.add_argument("--json", type=Path, default=None, help="write the table here too")
    parser.add_argument("--save", action="store_true",
                        help="write the best setting (highest overall; ties go to the earlier one) to the model "
                             "folder's generation_config.json, the defaults chat, the app and evaluate use")
    args = parser.parse_args(argv)
    if args.prompts < 1:
        parser.error(f"--prompts must be >= 1, got {args.prompts}")
    try:
        args.settings = [(text, parse_setting(text)) for text in (args.setting or DEFAULT_SETTINGS)]
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from chat.session import load_chat_model

    model = load_chat_model(str(args.model), resolve_dtype(args.dtype), args.int8)
    scales = len(model.image_tokenizer.config.scales)
    for text, values in args.settings:  # checked before anything is drawn, not at the setting's turn
        wrong = [key for key, value in values.items() if isinstance(value, tuple) and len(value) != scales]
        if wrong:
            raise SystemExit(f"setting {text!r}: {', '.join(wrong)} has a value per scale, but the model's "
                             f"image tokenizer has {scales} scales ({model.image_tokenizer.config.scales})")
    base = EvalSettings(seed=args.seed, batch_size=args.batch_size, geneval_prompts=args.prompts,
                        cfg_scale=GenerationConfig.cfg_scale, image_temperature=GenerationConfig.image_temperature,
                        image_top_k=GenerationConfig.image_top_k, image_top_p=GenerationConfig.image_top_p)
    rows = []
    for text, values in args.settings:
        started = time.time()
        settings = replace(base, **{key: value for key, value in values.items() if key != "cfg_scale"})
        scores = geneval.run(model, settings, values.get("cfg_scale", base.cfg_scale),
                             values.get("residual_steps", args.residual_steps))
        rows.append({"setting": text, "values": values, "scores": scores, "seconds": time.time() - started})
    columns = [*geneval.CATEGORIES, "overall", "drew_image"]
    print(f"shapes GenEval ({args.residual_steps} residual steps unless a setting says), {args.prompts} prompts "
          f"per category, seed {args.seed}, model {args.model}\n")
    print("| setting | " + " | ".join(columns) + " | s |")
    print("|---" * (len(columns) + 2) + "|")
    for row in rows:
        print(f"| {row['setting']} | " + " | ".join(f"{row['scores'][c]:.3f}" for c in columns)
              + f" | {row['seconds']:.0f} |")
    best = max(rows, key=lambda row: row["scores"]["overall"])  # max keeps the first of equals
    print(f"\nbest: {best['setting']} (overall {best['scores']['overall']:.3f})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(args.model), "prompts": args.prompts, "seed": args.seed,
                                         "residual_steps": args.residual_steps, "rows": rows,
                                         "best": best["setting"]}, indent=2))
    if args.save:
        unset = {key: getattr(GenerationConfig, key) for key in sampling_defaults.KEYS} | {
            "residual_steps": args.residual_steps}
        chosen = {key: best["values"].get(key, unset[key]) for key in sampling_defaults.KEYS}
        path = sampling_defaults.write(args.model, chosen)
        print(f"saved {chosen} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
