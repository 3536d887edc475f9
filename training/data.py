"""The training data format: JSONL, one conversation a line, images as files beside it.

    {"messages": [{"role": "user", "content": [{"type": "text", "text": "Draw a cat."}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "Here:"},
                                                    {"type": "image", "path": "images/cat.png"}]}]}

Roles are system, user and assistant; content is a list of text and image parts (a plain
string is accepted as one text part); image paths are relative to the JSONL file (or
absolute). Only assistant text and assistant images are learned; user images are read.

    python -m training.data validate FILE [FILE ...]

reports every bad line with its number and reason (and a file with no conversation at all)
and exits non-zero if there was one.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vlm.files import PathEscapeError, confined_path
from vlm.messages import check_message


class DataError(ValueError):
    """A data file has bad lines; the message lists them as FILE:LINE: reason."""


@dataclass
class LineProblem:
    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def parse_conversation(record: object, base: Path, check_images: bool = True) -> list[dict]:
    """One decoded JSON line -> messages with absolute image paths; raises ValueError with the reason."""
    if not isinstance(record, dict) or "messages" not in record:
        raise ValueError('expected an object with a "messages" list')
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list')
    parsed = []
    for index, message in enumerate(messages):
        role, content = check_message(message, index, ("path",))  # the format every conversation shares
        parts = []
        for part_index, part in enumerate(content):
            if part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
                continue
            # A data file names its images by path, relative to the file, and they must be readable.
            part_where = f"message {index} part {part_index}"
            relative = part.get("path")
            if not isinstance(relative, str) or not relative:
                raise ValueError(f'{part_where}: an image part needs a "path" string')
            try:
                path = confined_path(base, relative)
            except PathEscapeError as error:
                raise ValueError(f"{part_where}: {error}") from None
            if not path.is_file():
                raise ValueError(f"{part_where}: image file {relative!r} not found (looked for {path})")
            if check_images:
                try:
                    with Image.open(path) as image:
                        image.verify()
                except (UnidentifiedImageError, OSError) as error:
                    raise ValueError(f"{part_where}: {relative!r} is not a readable image ({error})") from None
            parts.append({"type": "image", "path": str(path)})
        parsed.append({"role": role, "content": parts})
    if not any(message["role"] == "assistant" for message in parsed):
        raise ValueError("no assistant message: nothing to learn from this conversation")
    return parsed


# A conversation longer than any context the model reads is a mistake, not data; text this
# long would also make every batch it lands in enormous.
MAX_LINE_BYTES = 2**20


def read_jsonl(path: str | Path, check_images: bool = True) -> tuple[list[list[dict]], list[LineProblem]]:
    """Every good conversation of a file, and every problem (blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    conversations, problems = [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if len(raw) > MAX_LINE_BYTES:
                problems.append(LineProblem(path, number, f"the line is {len(raw) / 2**20:.1f} MB; lines over "
                                            f"{MAX_LINE_BYTES // 2**20} MB are refused (images go in files, "
                                            "named by path)"))
                continue
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                problems.append(LineProblem(path, number, f"not UTF-8 text (byte {error.start + 1})"))
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(LineProblem(path, number, f"not valid JSON ({error.msg} at column {error.colno})"))
                continue
            try:
                conversations.append(parse_conversation(record, path.parent, check_images))
            except ValueError as error:
                problems.append(LineProblem(path, number, str(error)))
    return conversations, problems


def load_jsonl(path: str | Path, check_images: bool = True) -> list[list[dict]]:
    """All conversations of a file; any bad line raises DataError listing every bad line."""
    conversations, problems = read_jsonl(path, check_images)
    if problems:
        shown = "\n".join(str(problem) for problem in problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"{len(problems)} bad line(s) in {path}:\n{shown}{more}\n"
                        f"(run `python -m training.data validate {path}` for the full list)")
    if not conversations:
        raise DataError(f"{path}: no conversations")
    return conversations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data",
                                     description="Check training data files (JSONL conversations).")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="report every bad line of each file by number and reason")
    validate.add_argument("files", nargs="+", type=Path, help="JSONL files to check")
    validate.add_argument("--no-image-check", action="store_true",
                          help="only check that image files exist, not that they decode")
    args = parser.parse_args(argv)
    bad = 0
    for path in args.files:
        try:
            conversations, problems = read_jsonl(path, check_images=not args.no_image_check)
        except DataError as error:
            print(error)
            bad += 1
            continue
        if not conversations and not problems:  # blank lines only: the trainer refuses it too
            print(f"{path}: no conversations")
            bad += 1
            continue
        for problem in problems:
            print(problem)
        images = sum(part["type"] == "image" for conversation in conversations
                     for message in conversation for part in message["content"])
        print(f"{path}: {len(conversations)} good conversation(s) with {images} image(s), {len(problems)} bad line(s)")
        bad += len(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
