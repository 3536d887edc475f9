"""Three example chats with a model, written to docs/ as markdown with their images.

    python -m benchmarks.example_chats [--model PATH] [--out docs/examples] [--seed N]

A text reply, an image requested mid-conversation (and a question about it afterwards),
a step-by-step answer, and three edits (an uploaded shapes scene recoloured, an uploaded
emoji made smaller, and the model's own drawing changed twice). Re-run it after retraining
so the examples show the model that ships; the uploaded sources are docs/examples/edit_*.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chat.session import ChatSession, load_chat_model
from generation import GenerationConfig

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
SHAPES_SOURCE = EXAMPLES / "edit_source_shapes.png"
EMOJI_SOURCE = EXAMPLES / "edit_source_emoji.png"
# Each turn: (text, generation overrides, uploaded image paths).
CHATS = {
    "text_reply": [("What is a rainbow? Answer in two sentences.", {}, [])],
    "image_mid_conversation": [("Hi! I'm making a poster for school.", {}, []),
                               ("Can you draw a red circle for it?", {}, []),
                               ("What colour is it?", {"max_images": 0}, [])],
    "step_by_step": [("How do I draw a house? Show me step by step.", {}, [])],
    "edit_upload_recolour": [("Make the circle green.", {"max_images": 1}, [SHAPES_SOURCE])],
    "edit_upload_emoji": [("Make it smaller.", {"max_images": 1}, [EMOJI_SOURCE])],
    "edit_own_drawing": [("Draw a large blue square on the left and a small red heart on the right.",
                          {"max_images": 1}, []),
                         ("Now make the square yellow.", {"max_images": 1}, []),
                         ("Remove the heart.", {"max_images": 1}, [])],
}


def write_edit_sources() -> None:
    """The uploaded images of the edit examples (made once; committed beside the examples)."""
    from PIL import Image

    from worlds.openmoji import OpenMojiDataset
    from worlds.shapes import POSITIONS, Shape, render

    if not SHAPES_SOURCE.is_file():
        left, right = POSITIONS["on the left"], POSITIONS["on the right"]
        render([Shape("circle", "red", "large", *left), Shape("triangle", "blue", "small", *right)]).save(SHAPES_SOURCE)
    if not EMOJI_SOURCE.is_file():
        emoji = OpenMojiDataset(split="train", image_size=64)
        index = next(i for i, entry in enumerate(emoji.entries) if entry.name == "red apple")
        Image.fromarray(emoji.images_NHWC[index]).save(EMOJI_SOURCE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.example_chats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--out", type=Path, default=Path("docs/examples"), help="folder for the markdown and PNGs")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")
    args = parser.parse_args(argv)
    model = load_chat_model(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    write_edit_sources()
    lines = ["# Example chats", "", f"Made with `python -m benchmarks.example_chats --seed {args.seed}` "
             f"({'model ' + str(args.model) if args.model else 'the shipped default model'}).", ""]
    for name, turns in CHATS.items():
        # The model's own image sampling (its generation_config.json), as the chat and the app draw.
        session = ChatSession(model, GenerationConfig.for_model(model, seed=args.seed, max_new_tokens=120,
                                                                temperature=0.7))
        lines += [f"## {name.replace('_', ' ')}", ""]
        for text, overrides, uploads in turns:
            list(session.send(text, [str(path) for path in uploads], **overrides))
        count = 0
        for message in session.conversation.messages:
            lines.append(f"**{message.role}:**")
            for part in message.parts:
                if part["type"] == "text":
                    lines.append(part["text"].strip() or "(empty)")
                else:
                    path = args.out / f"{name}_{count}.png"
                    part["image"].resize((128, 128)).save(path)
                    lines.append(f"![{name} image {count}]({path.name})")
                    count += 1
            lines.append("")
        print(f"{name}: {count} image(s)")
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'README.md'}")


if __name__ == "__main__":
    main()
