"""Three example chats with a model, written to docs/ as markdown with their images.

    python -m benchmarks.example_chats [--model PATH] [--out docs/examples] [--seed N]

A text reply, an image requested mid-conversation (and a question about it afterwards),
and a step-by-step answer: the three things the default model is meant to do. Re-run it
after retraining so the examples show the model that ships.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chat.session import ChatSession, load_chat_model
from generation import GenerationConfig

CHATS = {
    "text_reply": [("What is a rainbow? Answer in two sentences.", {})],
    "image_mid_conversation": [("Hi! I'm making a poster for school.", {}),
                               ("Can you draw a red circle for it?", {}),
                               ("What colour is it?", {"max_images": 0})],
    "step_by_step": [("How do I draw a house? Show me step by step.", {})],
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.example_chats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--out", type=Path, default=Path("docs/examples"), help="folder for the markdown and PNGs")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")
    args = parser.parse_args(argv)
    model = load_chat_model(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# Example chats", "", f"Made with `python -m benchmarks.example_chats --seed {args.seed}` "
             f"({'model ' + str(args.model) if args.model else 'the shipped default model'}).", ""]
    for name, turns in CHATS.items():
        session = ChatSession(model, GenerationConfig(seed=args.seed, max_new_tokens=120, temperature=0.7))
        lines += [f"## {name.replace('_', ' ')}", ""]
        for text, overrides in turns:
            list(session.send(text, **overrides))
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
