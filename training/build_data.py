"""Build training conversations (JSONL + PNGs), seeded.

    python -m training.build_data KIND --out DIR [--count N] [--seed S]
    python -m training.build_data default --out data/default      # every kind, and mix.yaml for training

KIND is one of: emoji (draw an emoji / name an emoji), shapes (draw, caption and answer
questions about shape scenes), singles (requests to draw one shape), pairs (requests to draw
two shapes), followups (a drawing, then a new unrelated one in the next turn), readings
(captions of and questions about pictures of two or three shapes, some asking what is at a
place, answers restating what was asked about), steps
(step-by-step drawing instructions), chats
(multi-turn chats with an image requested mid-way), edits
(change an uploaded or drawn image: shapes-world edits and chains, emoji
bigger/smaller/moved/doubled), edit_words (a scene told in words, edits of it, and the edited
scene told back, text only), text (text-only chats answered by the backbone), or default
(all of them with the counts and weights of the default model's mix, plus a held-out set of
24 per kind in validation/, drawn apart from the training conversations).
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from training.builders.chats import chat_conversations
from training.builders.edits import edit_conversations, edit_word_conversations
from training.builders.emoji import emoji_conversations
from training.builders.shapes_chat import follow_up_drawings, shape_drawings, shape_readings, shapes_conversations
from training.builders.steps import steps_conversations
from worlds.conversation_writer import ConversationWriter
from worlds.text_chats import text_conversations

logger = logging.getLogger(__name__)

BUILDERS = {
    "emoji": lambda rng, count, args: emoji_conversations(rng, count, args.split, args.image_size),
    "shapes": lambda rng, count, args: shapes_conversations(rng, count, args.image_size),
    "singles": lambda rng, count, args: shape_drawings(rng, count, 1, args.image_size),
    "pairs": lambda rng, count, args: shape_drawings(rng, count, 2, args.image_size),
    "followups": lambda rng, count, args: follow_up_drawings(rng, count, args.image_size),
    "readings": lambda rng, count, args: shape_readings(rng, count, args.image_size),
    "steps": lambda rng, count, args: steps_conversations(rng, count, args.image_size),
    "chats": lambda rng, count, args: chat_conversations(rng, count, args.image_size, args.split),
    "edits": lambda rng, count, args: edit_conversations(rng, count, args.image_size, args.split),
    "edit_words": lambda rng, count, args: edit_word_conversations(rng, count),
    "text": lambda rng, count, args: text_conversations(rng, count, args.backbone),
}
# The default model's mix: conversations built per kind, and sampling weights in training. Shapes
# first (6; was 3) and emoji at 1 (was 3): in the last run the held-out emoji loss sat at 4.2-4.3 nats
# from step 640 to 1,280 while a quarter of the drawings were emoji (docs/default_model).
# Single-shape drawings at 6 beside them (2026-12-05): the shipped model was trained on from its
# predecessor with them at 6, then 12, and GenEval rose from 0.243 to 0.375 (docs/default_model).
# Singles at 12 and steps at 2 (2026-12-05): the weights of the shipped model's last leg (steps
# consistency had fallen with each singles leg; doubling steps turned it back up), so a run on
# this mix continues the shipped recipe.
# Two-shape drawings at 8 (2026-12-06): the shipped model's last two legs; against the same anneal
# without them every shapes-world held-out loss but the step drawings' fell, steps took 12% less
# time, and two-shape scenes were drawn for the first time (docs/default_model).
# Follow-up drawings at 2 (2026-12-06): the shipped model's last three legs; every other drawing
# after an image in the mix was an edit or a next step, and the model before took a new request
# for an edit (docs/default_model).
# Shapes conversations at 12 (2026-12-06): the shipped model's last leg; against the same leg at 6
# (same start and seed) single-shape drawings passed 0.73 of GenEval's against 0.63, reading equal.
# Drawing replies that name what they draw (2026-12-07): the shapes, singles, pairs, followups and
# edits builders; a leg from the shipped model trained on them (leg f8d) drew two-shape scenes right
# three times as often as the same leg without them and got the first edits right (6 of 48 against 1;
# docs/default_model). Leg f8d is the shipped model. The chats builder's one shapes drawing says it too
# (2026-12-07, after leg f8d, which trained on chats that answered "Here it is:"), and the first edit of
# an upload says what the upload shows before the edited scene (2026-12-07, after leg f9; not yet trained).
DEFAULT_MIX = {"emoji": (4000, 1.0), "shapes": (4000, 12.0), "singles": (2000, 12.0), "pairs": (2000, 8.0),
               "steps": (1000, 2.0), "chats": (1500, 1.0), "edits": (3000, 2.0), "text": (800, 3.0),
               "followups": (2000, 2.0)}

# Held-out conversations per kind for the training's validation losses (`validation/` beside the mix).
VALIDATION_COUNT = 24


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    title, _, kinds = __doc__.split("\n\n")[:3]  # the usage lines are argparse's own
    parser = argparse.ArgumentParser(prog="python -m training.build_data", description=f"{title} {kinds}",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("kind", choices=[*BUILDERS, "default"], help="what to build (see above)")
    parser.add_argument("--out", type=Path, required=True, help="folder for KIND.jsonl and images/KIND/")
    parser.add_argument("--count", type=int, default=None,
                        help="conversations to build (default: the default mix's count for that kind; "
                             "required for a kind outside it)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed builds the same data")
    parser.add_argument("--image-size", type=int, default=64, help="side of every image in pixels")
    parser.add_argument("--split", choices=("train", "heldout"), default="train",
                        help="OpenMoji split the emoji come from (evaluation uses heldout)")
    parser.add_argument("--backbone", default=None, help="model that writes the text-only replies (default backbone)")
    return parser.parse_args(argv)


def build(kind: str, out: Path, count: int, seed: int, args: argparse.Namespace, stream: str = "") -> Path:
    # One RNG per kind, derived from the seed, so building one kind alone gives the same file;
    # the validation set draws from its own stream of the same seed.
    rng = random.Random(f"{seed}-{kind}{stream}")
    with ConversationWriter(out, kind) as writer:
        for conversation in tqdm(BUILDERS[kind](rng, count, args), total=count, desc=kind):
            writer.add(conversation)
    logger.info("wrote %d conversations to %s", writer.count, writer.path)
    return writer.path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    kinds = list(DEFAULT_MIX) if args.kind == "default" else [args.kind]
    if args.count is None and args.kind not in (*DEFAULT_MIX, "default"):
        raise SystemExit(f"{args.kind} is not in the default mix, so it has no default count: pass --count N")
    sources = []
    for kind in kinds:
        count = args.count if args.count is not None else DEFAULT_MIX[kind][0]
        path = build(kind, args.out, count, args.seed, args)
        if args.kind == "default":
            sources.append({"path": path.name, "weight": DEFAULT_MIX[kind][1]})
    if args.kind == "default":
        mix = args.out / "mix.yaml"
        mix.write_text(yaml.safe_dump({"sources": sources}, sort_keys=False))
        validation = args.out / "validation"
        validation.mkdir(exist_ok=True)
        count = min(VALIDATION_COUNT, args.count) if args.count is not None else VALIDATION_COUNT
        held_out = [{"path": build(kind, validation, count, args.seed, args, "-validation").name} for kind in kinds]
        (validation / "mix.yaml").write_text(yaml.safe_dump({"sources": held_out}, sort_keys=False))
        print(f"wrote {mix} and {validation / 'mix.yaml'}; train with: python -m training.train --data {mix} "
              f"--validation-data {validation / 'mix.yaml'}")


if __name__ == "__main__":
    main()
