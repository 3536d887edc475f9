"""Does the model know its good drawings? GenEval drawn N times per prompt, best of N picked by the model's own scores.

    python -m benchmarks.best_of_n                                  # the shipped model, 4 drawings per prompt
    python -m benchmarks.best_of_n --model runs/mine/model --candidates 4 --prompts 24 --json out.json

Every GenEval prompt of the evaluation (its prompts, sampling and per-batch seeds) is drawn N
times: drawing k uses the evaluation's seed + k * 1,000,000, so drawing 0 is the evaluation's own
(with the evaluation's batch size, 8: rows of a batch share one noise stream, so another
`--batch-size` changes every drawing). Each drawing is scored by the model that drew it, from
the logits it sampled its codes from (before temperature, top-k and top-p):

- `conditional`: log p(codes | conversation), summed over the image's codes (the conversation
  is the request and any words the reply wrote before the image);
- `guided`: the same under classifier-free guidance;
- `pmi`: log p(codes | conversation) - log p(codes | nothing), the pointwise mutual information
  of the drawing and the request, which guidance sharpens and which CLIP-style reranking scores
  with a second model; here the unconditional branch guidance runs anyway gives it for free;
- `readback`: the drawing read back, log p(its caption | the drawing, "Describe this picture."),
  where the caption is what the reply said it would draw (its last sentence before the image, less
  any lead up to a colon: "Here it is: a red circle on the left." -> "A red circle on the left.");
  the model captioning its own drawing, as a captioner reranks in CLIP-style pipelines, at one more
  forward per drawing. Missing (None) where the reply wrote no words before the image.

Per category it prints the first drawing's pass rate (the evaluation's number), the mean over
the N drawings (GenEval less bound to one seed), the pass rate when the best of N by each score
is kept, and the oracle (any of the N passes: what a perfect picker would reach). A score worth
shipping as a best-of-N default would have to land clearly above the mean.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from benchmarks.evaluation import geneval
from benchmarks.evaluation.common import EvalSettings, image_config
from benchmarks.evaluation.text import reply_nll
from chat.quiet import add_dtype_flag
from generation import GenerationConfig, ImageFinished, TextDelta, stream_generate
from generation.sampling import code_log_likelihood
from vlm.backbone import resolve_dtype
from vlm.unified_model import UnifiedVLM

logger = logging.getLogger(__name__)

SCORES = ("conditional", "guided", "pmi", "readback")
CODE_SCORES = SCORES[:3]  # summed from the logits the codes were sampled from
READBACK_QUESTION = "Describe this picture."  # one of the shapes captions' questions


class CodeScores:
    """Sums, per batch row, the log-probabilities of the codes a drawing sampled: pass `logits_hook`
    and `code_hook` to `stream_generate`. Needs guidance's unconditional branch (cfg_scale != 1)."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, float]] = {}
        self._logits: dict[str, torch.Tensor] = {}

    def logits_hook(self, kind: str, logits: torch.Tensor) -> None:
        if kind.startswith("image"):
            self._logits[kind] = logits.float()

    def code_hook(self, rows: list[int], scale_index: int, codes: torch.Tensor) -> torch.Tensor:
        if "image_unconditional" not in self._logits:
            raise ValueError("scoring a drawing needs guidance's unconditional branch: use a cfg_scale other than 1")
        log_probs = {kind: code_log_likelihood(self._logits[f"image{suffix}"], codes)
                     for kind, suffix in (("conditional", ""), ("unconditional", "_unconditional"),
                                          ("guided", "_guided"))}
        for position, row in enumerate(rows):
            totals = self.rows.setdefault(row, dict.fromkeys(CODE_SCORES, 0.0))
            totals["conditional"] += log_probs["conditional"][position].item()
            totals["guided"] += log_probs["guided"][position].item()
            totals["pmi"] += (log_probs["conditional"][position] - log_probs["unconditional"][position]).item()
        self._logits.clear()
        return codes


def caption_of(words: str) -> str | None:
    """What a reply said it would draw, as a caption: the last sentence of `words` (the reply
    before its image), less any lead up to a colon, capitalised; None where nothing is left."""
    sentence = words.strip().rstrip(".").rsplit(". ", 1)[-1].split(":", 1)[-1].strip()
    return f"{sentence[0].upper()}{sentence[1:]}." if sentence else None


@torch.no_grad()
def read_back(model: UnifiedVLM, image: Image.Image, caption: str) -> float:
    """log p(`caption` | `image`, READBACK_QUESTION): the model reading its drawing as an upload."""
    chat = [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": READBACK_QUESTION}]},
            {"role": "assistant", "content": caption}]
    batch = model.processor(chat)
    return -reply_nll(model(batch).text_logits, batch.text_labels)[0]


def scored_drawings(model: UnifiedVLM, prompts: list[str], config: GenerationConfig
                    ) -> list[tuple[Image.Image | None, dict[str, float]]]:
    """One generation run over `prompts`: each row's drawing and its scores (None and None scores
    where the row drew nothing). One image per reply, so the scores are that image's."""
    if config.max_images != 1:
        raise ValueError(f"scored drawings are one image per reply; max_images is {config.max_images}")
    if config.image_candidates != 1:
        raise ValueError(f"scored drawings are drawn once each (the candidates are this benchmark's own); "
                         f"image_candidates is {config.image_candidates}")
    scores = CodeScores()
    conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
    images: dict[int, Image.Image] = {}
    words: dict[int, str] = {}  # per row, the reply before its image
    for event in stream_generate(model, conversations, config, logits_hook=scores.logits_hook,
                                 code_hook=scores.code_hook):
        if isinstance(event, TextDelta) and event.sequence not in images:
            words[event.sequence] = words.get(event.sequence, "") + event.text
        elif isinstance(event, ImageFinished) and event.sequence not in images:
            images[event.sequence] = event.image
    scored = []
    for row in range(len(prompts)):
        if row not in images:
            scored.append((None, dict.fromkeys(SCORES)))
            continue
        caption = caption_of(words.get(row, ""))
        readback = None if caption is None else read_back(model, images[row], caption)
        scored.append((images[row], {**scores.rows[row], "readback": readback}))
    return scored


def run(model: UnifiedVLM, settings: EvalSettings, config: GenerationConfig, candidates: int) -> list[dict]:
    """Per GenEval prompt: its category and, per drawing, whether it passed, whether it drew, its scores."""
    cases = geneval.prompts(settings)
    if config.seed is None or len(cases) >= geneval.DRAW_SEED_STRIDE:
        raise ValueError(f"drawings need a fixed seed and fewer than {geneval.DRAW_SEED_STRIDE} prompts "
                         f"(seed {config.seed}, {len(cases)} prompts)")
    results = []
    for first in tqdm(range(0, len(cases), settings.batch_size), desc="best of n", leave=False):
        batch = cases[first:first + settings.batch_size]
        prompts = [geneval.prompt_for(scene) for _, scene in batch]
        draws: list[list[dict]] = [[] for _ in batch]
        for k in range(candidates):
            drawing = geneval.drawing_config(config, k)
            seeded = replace(drawing, seed=drawing.seed + first)
            for row, ((category, scene), (image, scores)) in enumerate(zip(batch, scored_drawings(
                    model, prompts, seeded))):
                draws[row].append({"passed": geneval.check(category, scene, image), "drew": image is not None,
                                   **scores})
        results += [{"category": category, "prompt": prompt, "draws": row_draws}
                    for (category, _), prompt, row_draws in zip(batch, prompts, draws)]
    return results


def picked(draws: list[dict], score: str) -> bool:
    """Whether the drawing with the highest score passed (drawings that are missing, or have no
    such score, never win over one that has it)."""
    return max(draws, key=lambda draw: (draw["drew"] and draw[score] is not None,
                                        draw[score] if draw["drew"] and draw[score] is not None else 0.0))["passed"]


def summarise(results: list[dict]) -> dict[str, dict[str, float]]:
    """Per category and overall (the mean of the categories, as GenEval's overall)."""
    table = {}
    for category in geneval.CATEGORIES:
        rows = [result["draws"] for result in results if result["category"] == category]
        if not rows:
            continue
        table[category] = {
            "first": sum(draws[0]["passed"] for draws in rows) / len(rows),
            "mean": sum(sum(draw["passed"] for draw in draws) / len(draws) for draws in rows) / len(rows),
            **{f"best_{score}": sum(picked(draws, score) for draws in rows) / len(rows) for score in SCORES},
            "oracle": sum(any(draw["passed"] for draw in draws) for draws in rows) / len(rows),
        }
    columns = next(iter(table.values())).keys() if table else []
    table["overall"] = {column: sum(row[column] for row in table.values()) / len(table) for column in columns}
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.best_of_n", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--candidates", type=int, default=4, help="drawings per prompt (N >= 2)")
    parser.add_argument("--prompts", type=int, default=24, help="prompts per GenEval category (the evaluation's 24)")
    parser.add_argument("--seed", type=int, default=0, help="the evaluation's seed (prompts and drawing 0)")
    parser.add_argument("--cfg-scale", type=float, default=None,
                        help="guidance (default: the model's saved default); must not be 1, since the scores "
                             "need the unconditional branch")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="prompts per generation run (the evaluation's 8; another size changes every drawing)")
    add_dtype_flag(parser)
    parser.add_argument("--json", type=Path, default=None, help="write the table and every drawing's scores here")
    args = parser.parse_args(argv)
    for name, least in (("candidates", 2), ("prompts", 1), ("batch_size", 1)):
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be >= {least}, got {getattr(args, name)}")
    if args.cfg_scale is not None and (args.cfg_scale == 1.0 or args.cfg_scale < 0):
        parser.error(f"--cfg-scale must be >= 0 and not 1 (the scores need the unconditional branch), "
                     f"got {args.cfg_scale:g}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from chat.session import load_chat_model_and_source

    model, source = load_chat_model_and_source(args.model, resolve_dtype(args.dtype), args.int8)
    defaults = GenerationConfig.for_model(model, **({} if args.cfg_scale is None else {"cfg_scale": args.cfg_scale}))
    if defaults.cfg_scale == 1.0:
        raise SystemExit(f"{source} draws with cfg_scale 1 by default; give --cfg-scale (not 1): the scores need "
                         "the unconditional branch")
    settings = EvalSettings(seed=args.seed, batch_size=args.batch_size, geneval_prompts=args.prompts)
    config = image_config(settings, cfg_scale=defaults.cfg_scale, residual_steps=defaults.residual_steps,
                          image_temperature=defaults.image_temperature, image_top_k=defaults.image_top_k,
                          image_top_p=defaults.image_top_p)
    started = time.time()
    results = run(model, settings, config, args.candidates)
    table = summarise(results)
    seconds = time.time() - started
    print(f"GenEval drawn {args.candidates} times per prompt ({args.prompts} per category, seed {args.seed}, "
          f"cfg {config.cfg_scale:g}, {config.residual_steps} residual steps), {source}, {seconds:.0f} s\n")
    columns = list(table["overall"])
    print("| category | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for category, row in table.items():
        print(f"| {category} | " + " | ".join(f"{row[column]:.3f}" for column in columns) + " |")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": source, "candidates": args.candidates, "prompts": args.prompts,
                                         "seed": args.seed, "cfg_scale": config.cfg_scale,
                                         "residual_steps": config.residual_steps, "seconds": seconds,
                                         "table": table, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
