"""Chat with the model in a terminal, or answer one prompt for a script.

    python -m chat [--model PATH]                        # interactive; /help lists the commands
    python -m chat --prompt "Draw a cat" --out images/   # one answer: prints the text and image paths, exits

Images the model draws are saved as PNGs in --out and their paths printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from chat import inline_image
from chat.conversation import Conversation, ConversationFileError
from chat.quiet import add_dtype_flag, add_verbose_flag, check_model_folder, quiet
from chat.session import ChatSession, EmptyMessageError, MessageTooLongError, load_chat_model, load_upload
from generation import Done, GenerationConfig, ImageFinished, ImageStarted, TextDelta
from vlm.backbone import resolve_dtype
from vlm.image_io import ImageLoadError

COMMANDS = """commands:
  /image TEXT    answer TEXT with an image (forces one at the start of the reply)
  /attach PATH   show the model an image with your next message
  /regen         answer the last message again
  /undo          forget the last exchange
  /reset         start over
  /save DIR      save the conversation (JSON + PNGs) to DIR
  /load DIR      load a saved conversation
  /help          this list
  /quit          leave (Ctrl-D works too)"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chat", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--prompt", default=None, help="answer this one message and exit (one-shot mode)")
    parser.add_argument("--image", action="append", default=[], type=Path,
                        help="an image to show the model with --prompt (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("chat_images"), help="folder for the images the model draws")
    parser.add_argument("--seed", type=int, default=None, help="seed: the same seed and settings repeat a reply")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--temperature", type=float, default=0.7, help="text sampling temperature (0 = greedy)")
    parser.add_argument("--cfg-scale", type=float, default=None,
                        help="classifier-free guidance for images (1 = off; default: the model's own, from its "
                             "generation_config.json, else 3)")
    parser.add_argument("--residual-steps", type=int, default=None,
                        help="residual head: 0 = discrete-only, 1 = the distilled one-step head (where the model "
                             "has one), N = N diffusion steps (default: the model's own, from its "
                             "generation_config.json, else 8)")
    parser.add_argument("--image-candidates", type=int, default=None,
                        help="draw each image this many times in one batched run and keep the one the model finds "
                             "likeliest given the conversation (costs up to that many times the drawing time; "
                             "default: the model's own, from its generation_config.json, else 1)")
    parser.add_argument("--max-images", type=int, default=4, help="images per answer at most (0 = text only)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="text tokens per answer at most")
    parser.add_argument("--preview", choices=["auto", "none", *inline_image.PROTOCOLS], default="auto",
                        help="show drawn images inline: auto = what this terminal is known to support (kitty, "
                             "iTerm2/WezTerm, sixel terminals) when printing to a terminal, else none")
    add_verbose_flag(parser)
    add_dtype_flag(parser)
    args = parser.parse_args(argv)
    check_model_folder(parser, args.model)
    return args


class Printer:
    """Streams events to stdout and saves images as they finish; with a `preview` protocol,
    also shows each image inline under its path."""

    def __init__(self, out: Path, preview: str | None = None):
        self.out = out
        self.count = 0
        self.preview = preview

    def show(self, events) -> str | None:
        reason = None
        for event in events:
            if isinstance(event, TextDelta):
                print(event.text, end="", flush=True)
            elif isinstance(event, ImageStarted):
                print("\n[drawing...]", end="", flush=True)
            elif isinstance(event, ImageFinished):
                self.out.mkdir(parents=True, exist_ok=True)
                path = self.out / f"image_{self.count:03d}.png"
                while path.exists():  # never overwrite what the user already has
                    self.count += 1
                    path = self.out / f"image_{self.count:03d}.png"
                event.image.save(path)
                self.count += 1
                print(f"\r[image: {path}]", flush=True)
                if self.preview:
                    print(inline_image.render(event.image, self.preview), flush=True)
            elif isinstance(event, Done):
                reason = event.reason
        print()
        return reason


def interactive(session: ChatSession, printer: Printer) -> None:
    print("hybrid-vlm chat. /help for commands.")
    attached: list[Path] = []
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not line:
            continue
        command, _, rest = line.partition(" ")
        try:
            if command == "/quit":
                return
            elif command == "/help":
                print(COMMANDS)
            elif command == "/attach":
                attached.append(Path(rest.strip()))
                print(f"attached {rest.strip()} to your next message")
            elif command == "/reset":
                session.reset()
                print("started over")
            elif command == "/undo":
                print("forgot the last exchange" if session.undo() else "nothing to undo")
            elif command == "/save":
                print(f"saved to {session.conversation.save(rest.strip())}")
            elif command == "/load":
                session.conversation = Conversation.load(rest.strip())
                print(f"loaded {len(session.conversation.messages)} messages")
            elif command == "/regen":
                print("model> ", end="")
                printer.show(session.regenerate(seed=None))
            elif command.startswith("/") and command != "/image":
                print(f"unknown command {command}; /help lists them")
            else:
                force = command == "/image"
                text = rest if force else line
                images, attached = attached, []
                print("model> ", end="")
                printer.show(session.send(text, images, force_image=force))
        except (EmptyMessageError, MessageTooLongError, ImageLoadError, ConversationFileError, OSError) as error:
            print(f"error: {error}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet(args.verbose)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    given = dict(temperature=args.temperature, max_images=args.max_images, max_new_tokens=args.max_new_tokens,
                 seed=args.seed)
    for name in ("cfg_scale", "residual_steps", "image_candidates"):
        if getattr(args, name) is not None:
            given[name] = getattr(args, name)
    try:  # a bad value fails here, before the model loads
        GenerationConfig(**given)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.prompt is not None and not args.prompt.strip() and not args.image:
        print("error: --prompt is empty", file=sys.stderr)
        return 2
    try:  # checked before the model loads (seconds), so a typo fails at once
        images = [load_upload(path) for path in args.image]
    except ImageLoadError as error:
        print(f"error: --image: {error}", file=sys.stderr)
        return 2
    model = load_chat_model(args.model, resolve_dtype(args.dtype), args.int8)
    try:
        config = GenerationConfig.for_model(model, **given)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    session = ChatSession(model, config, args.system)
    preview = None if args.preview == "none" else \
        (inline_image.detect() if sys.stdout.isatty() else None) if args.preview == "auto" else args.preview
    printer = Printer(args.out, preview)
    if args.prompt is None:
        interactive(session, printer)
        return 0
    try:
        printer.show(session.send(args.prompt, images))
    except (EmptyMessageError, MessageTooLongError, ImageLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
