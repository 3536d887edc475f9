"""A seeded catalogue of bad inputs for every entry point, and the judge of how each ends.

Each case builds its input in an empty folder, calls one entry point (image loading,
saved conversations, checkpoints, chat messages, generation settings) and must end as a
person would want: a clear error (one of the project's error types, whose message names
what is wrong and where) or, for inputs that are merely unusual (an animated GIF, a CMYK
JPEG, a 16-bit PNG), a correctly loaded image. Bad training data is checked as a person
checks it, with `python -m training.data validate FILE ...` (the trainer reads data through
the same checks): one run for every data case, which must report each file by line and
reason (or refuse it) and exit non-zero. Either way nothing on disk may change.
`tests/test_bad_inputs.py` runs the catalogue on a tiny model; `python -m
benchmarks.robustness` on the default model.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from chat.conversation import SCHEMA_VERSION, Conversation, ConversationFileError
from chat.session import ChatSession, EmptyMessageError, MessageTooLongError, load_upload
from generation import GenerationConfig
from vlm.image_io import ImageLoadError
from vlm.messages import ConversationError
from vlm.tokenizer import CheckpointError, HybridTokenizer
from vlm.unified_model import UnifiedVLM

# What counts as a clear error: the project's own kinds, each with a message written for
# the person who made the mistake (never a KeyError or a UnicodeDecodeError from deep inside).
CLEAR_ERRORS = (ImageLoadError, ConversationFileError, CheckpointError, EmptyMessageError, MessageTooLongError,
                ConversationError)
REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass
class Case:
    group: str
    name: str
    # Builds the input in the folder and returns the call to make; `expect` is a substring the
    # error must contain (what is wrong / where), or None when the call must succeed and
    # `check` (if given) must accept its result.
    build: Callable[[Path], Callable[[], object] | Path]
    expect: str | None
    check: Callable[[object], bool] | None = None
    needs_model: bool = False
    # A data case: `build` returns a training data file instead of a call, which
    # `python -m training.data validate` must refuse saying `expect` (or, with `expect` None,
    # accept); `run_cases` checks every data case's file in one validator run.
    data_file: bool = False


@dataclass
class Outcome:
    case: Case
    ok: bool
    detail: str


def _png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` with no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def _sample(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))


def _rgb(result: object) -> bool:
    return isinstance(result, Image.Image) and result.mode == "RGB" and result.width > 0


# ----- images (every upload and data image goes through load_upload / load_image) -----

def _image_case(name: str, data: Callable[[], bytes | str], expect: str | None,
                check: Callable[[object], bool] | None = None, filename: str = "upload.png") -> Case:
    def build(folder: Path):
        path = _write(folder, filename, data())
        return lambda: load_upload(path)
    return Case("image", name, build, expect, check)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(buffer, format="JPEG")  # red in CMYK
    return buffer.getvalue()


def _png16() -> bytes:
    gradient = np.tile(np.linspace(0, 65535, 32, dtype=np.uint16), (32, 1))
    return _png_bytes(Image.fromarray(gradient))


def _palette_transparent() -> bytes:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 8, 16))
    return _png_bytes(image, transparency=0)


def _is_mid_grey_ramp(result: object) -> bool:
    """A 16-bit ramp must stay a ramp (dark to light), not clip to white."""
    if not _rgb(result):
        return False
    row = np.asarray(result)[0, :, 0].astype(int)
    return row[0] < 20 and row[-1] > 235 and 100 < row[len(row) // 2] < 160


def _is_red(result: object) -> bool:
    return _rgb(result) and tuple(np.asarray(result).reshape(-1, 3).mean(axis=0).round()) > (200, -1, -1) \
        and np.asarray(result)[..., 1:].mean() < 60


def _transparent_is_white(result: object) -> bool:
    pixels = np.asarray(result)
    return _rgb(result) and tuple(pixels[0, 0]) == (0, 0, 255) and tuple(pixels[0, -1]) == (255, 255, 255)


def image_cases() -> list[Case]:
    valid = _png_bytes(_sample())
    jpeg = _jpeg_bytes(_sample())
    return [
        _image_case("zero bytes", lambda: b"", "upload.png' is not a readable image"),
        _image_case("truncated PNG", lambda: valid[:len(valid) // 2], "damaged or incomplete"),
        _image_case("truncated JPEG", lambda: jpeg[:len(jpeg) // 3], "photo.jpg' is not a readable image",
                    filename="photo.jpg"),
        _image_case("PNG signature only", lambda: valid[:8], "upload.png' is not a readable image"),
        _image_case("SVG", lambda: '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
                    "not an image this app can read", filename="drawing.svg"),
        _image_case("text renamed .png", lambda: "just some notes", "not an image this app can read"),
        _image_case("HTML renamed .jpg", lambda: "<html><body>hi</body></html>", "not an image this app can read",
                    filename="photo.jpg"),
        _image_case("random bytes", lambda: random.Random(0).randbytes(4096), "not an image this app can read",
                    filename="x.webp"),
        _image_case("20000x20000 header", lambda: _png_header_only(20000, 20000), "too many pixels"),
        _image_case("5000x5000 image (over the upload limit)",
                    lambda: _png_bytes(Image.new("RGB", (5000, 5000), "white")), "the limit is 4096x4096"),
        _image_case("11 MB file (over the upload limit)",
                    lambda: _png_bytes(_sample()) + b"\0" * (11 * 2**20), "the limit is 10 MB"),
        _image_case("animated GIF (first frame)", _animated_gif, None, _is_red, filename="anim.gif"),
        _image_case("CMYK JPEG", _cmyk_jpeg, None, _is_red, filename="cmyk.jpg"),
        _image_case("16-bit PNG", _png16, None, _is_mid_grey_ramp),
        _image_case("palette with transparency", _palette_transparent, None, _transparent_is_white),
        _image_case("1x1 image", lambda: _png_bytes(Image.new("RGB", (1, 1), "red")), None, _is_red),
        _image_case("greyscale with alpha", lambda: _png_bytes(Image.new("LA", (8, 8), (0, 0))), None,
                    lambda image: _rgb(image) and np.asarray(image).min() == 255),
        Case("image", "a folder named like an image",
             lambda folder: (folder / "dir.png").mkdir() or (lambda: load_upload(folder / "dir.png")),
             "does not exist or is not a file"),
        Case("image", "missing file", lambda folder: lambda: load_upload(folder / "gone.png"), "does not exist"),
    ]


# ----- JSONL training data -----

def _conversation(content: object = "hello", role: str = "user") -> dict:
    return {"messages": [{"role": role, "content": content}, {"role": "assistant", "content": "hi"}]}


def _jsonl_case(name: str, lines: Callable[[Path], list[str | bytes]], expect: str) -> Case:
    def build(folder: Path):
        _write(folder, "good.png", _png_bytes(_sample()))
        _write(folder, "notes.png", "not an image")
        rows = lines(folder)
        data = b"".join((row if isinstance(row, bytes) else row.encode()) + b"\n" for row in rows)
        return _write(folder, "data.jsonl", data)
    return Case("jsonl", name, build, expect, data_file=True)


def jsonl_cases() -> list[Case]:
    good = json.dumps(_conversation())
    image = lambda path: json.dumps(_conversation([{"type": "image", "path": path}, {"type": "text", "text": "?"}]))  # noqa: E731
    return [
        _jsonl_case("broken JSON", lambda _: [good, '{"messages": [', good], "data.jsonl:2: not valid JSON"),
        _jsonl_case("not an object", lambda _: ["[1, 2, 3]"], "data.jsonl:1: expected an object"),
        _jsonl_case("messages not a list", lambda _: ['{"messages": "hi"}'], "must be a non-empty list"),
        _jsonl_case("wrong role", lambda _: [json.dumps(_conversation(role="robot"))], "role 'robot'"),
        _jsonl_case("no assistant", lambda _: [json.dumps({"messages": [{"role": "user", "content": "x"}]})],
                    "no assistant message"),
        _jsonl_case("empty content", lambda _: [json.dumps(_conversation(content=[]))], "has no content parts"),
        _jsonl_case("unknown part type", lambda _: [json.dumps(_conversation([{"type": "video"}]))],
                    "type must be 'text' or 'image'"),
        _jsonl_case("text not a string", lambda _: [json.dumps(_conversation([{"type": "text", "text": 3}]))],
                    "needs a 'text' string"),
        _jsonl_case("image without path", lambda _: [json.dumps(_conversation([{"type": "image"}]))],
                    "needs 'path'"),
        _jsonl_case("missing image", lambda _: [image("nowhere.png")], "'nowhere.png' not found"),
        _jsonl_case("unreadable image", lambda _: [image("notes.png")], "not a readable image"),
        _jsonl_case("image path with ..", lambda _: [image("../outside.png")], "leads outside"),
        _jsonl_case("absolute image path", lambda folder: [image(str(folder / "good.png"))], "is absolute"),
        _jsonl_case("image tokens typed in text",
                    lambda _: [json.dumps(_conversation("look: <|image_start|> ha"))], "may not contain the image"),
        _jsonl_case("10 MB line", lambda _: [json.dumps(_conversation("x" * (10 * 2**20)))], "lines over 1 MB"),
        _jsonl_case("not UTF-8", lambda _: [good, b'{"messages": "\xff\xfe"}'], "data.jsonl:2: not UTF-8"),
        _jsonl_case("only blank lines", lambda _: ["", "   "], "no conversations"),
        Case("jsonl", "no such file", lambda folder: folder / "missing.jsonl", "no such file", data_file=True),
    ]


# ----- saved conversations -----

def _saved(folder: Path) -> Path:
    conversation = Conversation(None, [])
    from chat.conversation import Message
    conversation.messages = [Message("user", [{"type": "image", "image": _sample()}, {"type": "text", "text": "hi"}]),
                             Message("assistant", [{"type": "text", "text": "hello"}])]
    return conversation.save(folder / "saved")


def _edited(change: Callable[[dict, Path], None]) -> Callable[[Path], Callable[[], object]]:
    def build(folder: Path):
        saved = _saved(folder)
        record = json.loads((saved / "conversation.json").read_text())
        change(record, saved)
        (saved / "conversation.json").write_text(json.dumps(record))
        return lambda: Conversation.load(saved)
    return build


def _first_image_part(record: dict) -> dict:
    return next(part for message in record["messages"] for part in message["content"] if part["type"] == "image")


def conversation_cases() -> list[Case]:
    def broken_json(folder: Path):
        saved = _saved(folder)
        (saved / "conversation.json").write_text('{"schema_version": 1, "messages": [')
        return lambda: Conversation.load(saved)

    def missing_png(folder: Path):
        saved = _saved(folder)
        (saved / _first_image_part(json.loads((saved / "conversation.json").read_text()))["path"]).unlink()
        return lambda: Conversation.load(saved)

    def no_json(folder: Path):
        (folder / "empty").mkdir()
        return lambda: Conversation.load(folder / "empty")

    return [
        Case("conversation", "edited into broken JSON", broken_json, "not valid JSON"),
        Case("conversation", "missing PNG", missing_png, "does not exist"),
        Case("conversation", "wrong schema version", _edited(lambda r, _: r.update(schema_version=SCHEMA_VERSION + 7)),
             f"schema_version {SCHEMA_VERSION + 7}"),
        Case("conversation", "system role in messages",
             _edited(lambda r, _: r["messages"][0].update(role="system")), "role 'system'"),
        Case("conversation", "malformed part", _edited(lambda r, _: r["messages"][1]["content"].append({"x": 1})),
             "type must be 'text' or 'image'"),
        Case("conversation", "image path escaping the folder",
             _edited(lambda r, _: _first_image_part(r).update(path="../../etc/passwd")), "leads outside"),
        Case("conversation", "PNG replaced by text",
             _edited(lambda r, saved: (saved / _first_image_part(r)["path"]).write_text("no")), "not a readable"),
        Case("conversation", "no conversation.json", no_json, "not a saved conversation"),
    ]


# ----- checkpoints -----

def _tokenizer_copy(folder: Path, tokenizer: HybridTokenizer) -> Path:
    tokenizer.save_pretrained(folder / "tok")
    return folder / "tok"


def checkpoint_cases(tokenizer: HybridTokenizer) -> list[Case]:
    def changed(edit: Callable[[Path], None]):
        def build(folder: Path):
            path = _tokenizer_copy(folder, tokenizer)
            edit(path)
            return lambda: HybridTokenizer.from_pretrained(path)
        return build

    def config_edit(change: Callable[[dict], None]):
        def edit(path: Path):
            config = json.loads((path / "config.json").read_text())
            change(config)
            (path / "config.json").write_text(json.dumps(config))
        return edit

    def file_not_folder(folder: Path):
        path = _write(folder, "tok.json", "{}")
        return lambda: HybridTokenizer.from_pretrained(path)

    def truncate(path: Path):
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])

    return [
        Case("checkpoint", "tokenizer: no weights file", changed(lambda p: (p / "model.safetensors").unlink()),
             "has no model.safetensors"),
        Case("checkpoint", "tokenizer: no config", changed(lambda p: (p / "config.json").unlink()),
             "has no config.json"),
        Case("checkpoint", "tokenizer: truncated weights", changed(truncate), "not a readable safetensors"),
        Case("checkpoint", "tokenizer: config not JSON", changed(lambda p: (p / "config.json").write_text("{")),
             "not a valid tokenizer config"),
        Case("checkpoint", "tokenizer: wrong codebook size",
             changed(config_edit(lambda c: c.update(codebook_size=c["codebook_size"] * 2))), "codebook"),
        Case("checkpoint", "tokenizer: unknown config key",
             changed(config_edit(lambda c: c.update(colour_space="lab"))), "colour_space"),
        Case("checkpoint", "tokenizer: wrong channels",
             changed(config_edit(lambda c: c.update(latent_channels=c["latent_channels"] + 1))), "does not match"),
        Case("checkpoint", "tokenizer: a file, not a folder", file_not_folder, "has no config.json"),
    ]


def model_checkpoint_cases(model: UnifiedVLM) -> list[Case]:
    def changed(edit: Callable[[Path], None]):
        def build(folder: Path):
            model.save_pretrained(folder / "model")
            edit(folder / "model")
            return lambda: UnifiedVLM.from_pretrained(folder / "model")
        return build

    def json_edit(name: str, change: Callable[[dict], None]):
        def edit(path: Path):
            values = json.loads((path / name).read_text())
            change(values)
            (path / name).write_text(json.dumps(values))
        return edit

    def other_tokenizer(path: Path):
        tokenizer_dir = next(child for child in path.iterdir() if child.is_dir() and
                             (child / "model.safetensors").is_file() and (child / "config.json").is_file())
        weights = HybridTokenizer.from_pretrained(tokenizer_dir)
        with_noise = {name: value + 0.01 for name, value in weights.state_dict().items() if value.is_floating_point()}
        weights.load_state_dict(with_noise, strict=False)
        weights.save_pretrained(tokenizer_dir)

    def truncate_largest(path: Path):
        largest = max((child for child in path.iterdir() if child.suffix == ".safetensors"),
                      key=lambda child: child.stat().st_size)
        largest.write_bytes(largest.read_bytes()[:2000])

    def remove(pattern: str):
        return lambda path: [child.unlink() for child in path.glob(pattern)]

    return [
        Case("checkpoint", "model: a different image tokenizer", changed(other_tokenizer), "tokenizer",
             needs_model=True),
        Case("checkpoint", "model: truncated weights", changed(truncate_largest), "safetensors", needs_model=True),
        Case("checkpoint", "model: config missing", changed(remove("vlm_config.json")), "vlm_config.json",
             needs_model=True),
        Case("checkpoint", "model: wrong vocabulary size",
             changed(json_edit("vlm_config.json", lambda c: c.update(vocab_size=c["vocab_size"] + 5))), "tokens",
             needs_model=True),
        Case("checkpoint", "model: config not JSON", changed(lambda p: (p / "vlm_config.json").write_text("{")),
             "not valid JSON", needs_model=True),
        Case("checkpoint", "model: unknown config key",
             changed(json_edit("vlm_config.json", lambda c: c.update(colour_space="lab"))), "colour_space",
             needs_model=True),
        Case("checkpoint", "model: no such folder", lambda folder: lambda: UnifiedVLM.from_pretrained(folder / "no"),
             "no", needs_model=True),
    ]


# ----- chat messages and generation settings -----

def message_cases(model: UnifiedVLM) -> list[Case]:
    def send(text: str, images=()):
        def build(folder: Path):
            session = ChatSession(model, GenerationConfig(max_new_tokens=4, max_images=0))
            return lambda: (list(session.send(text, images)), session)[1]
        return build

    return [
        Case("message", "empty prompt", send(""), "the message is empty", needs_model=True),
        Case("message", "whitespace prompt", send(" \n\t "), "the message is empty", needs_model=True),
        Case("message", "100k-character prompt", send("word " * 20_000), "this model reads at most", needs_model=True),
        Case("message", "bad image with a prompt",
             lambda folder: send("what is it?", [_write(folder, "a.png", "text")])(folder), "not a readable",
             needs_model=True),
    ]


def settings_cases() -> list[Case]:
    def config(**values):
        return lambda folder: lambda: GenerationConfig(**values)
    bad = [("temperature", -1.0), ("top_p", 1.5), ("top_k", -3), ("cfg_scale", -1.0), ("max_images", -1),
           ("max_new_tokens", -5), ("residual_steps", -2), ("repetition_penalty", 0.0), ("num_sequences", 0),
           ("image_temperature", -0.5), ("image_top_p", (1.0, 2.0)), ("image_top_k", 2.5)]
    return [Case("settings", f"{name}={value}", config(**{name: value}), name) for name, value in bad]


def catalogue(model: UnifiedVLM | None = None) -> list[Case]:
    """Every case; those that need a model only when one is given."""
    cases = image_cases() + jsonl_cases() + conversation_cases() + settings_cases()
    cases += checkpoint_cases(model.image_tokenizer if model is not None else HybridTokenizer.from_pretrained())
    if model is not None:
        cases += model_checkpoint_cases(model) + message_cases(model)
    return cases


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            for path in sorted(folder.rglob("*"))}


def run_cases(cases: list[Case]) -> list[Outcome]:
    """Every case's outcome, in order; the data cases are judged by one validator run."""
    data = [case for case in cases if case.data_file]
    judged = dict(zip(map(id, data), validate_data_cases(data)))
    return [judged[id(case)] if case.data_file else run_case(case) for case in cases]


def run_case(case: Case) -> Outcome:
    """Build the case in a fresh folder, run it, and judge the ending and the disk."""
    if case.data_file:
        return validate_data_cases([case])[0]
    with tempfile.TemporaryDirectory(prefix="bad-input-") as name:
        folder = Path(name)
        call = case.build(folder)
        before = _snapshot(folder)
        try:
            result = call()
        except CLEAR_ERRORS as error:
            message = f"{error} ({error.reason})" if getattr(error, "reason", str(error)) != str(error) else str(error)
            if case.expect is None:
                return Outcome(case, False, f"refused a usable input: {message}")
            if case.expect.lower() not in message.lower():
                return Outcome(case, False, f"error does not say {case.expect!r}: {message[:200]}")
            outcome = Outcome(case, True, message[:200])
        except ValueError as error:  # a plain ValueError is clear only for settings (GenerationConfig)
            message = str(error)
            ok = case.group == "settings" and case.expect in message
            outcome = Outcome(case, ok, message[:200] if ok else f"unclear ValueError: {message[:200]}")
        except Exception as error:  # noqa: BLE001  (the point: anything else is a failure to report)
            return Outcome(case, False, f"{type(error).__name__}: {str(error)[:200]}")
        else:
            if case.expect is not None:
                return Outcome(case, False, f"accepted (expected an error saying {case.expect!r})")
            ok = case.check is None or bool(case.check(result))
            outcome = Outcome(case, ok, "loaded correctly" if ok else "loaded, but wrongly")
        if _snapshot(folder) != before:
            return Outcome(case, False, "the folder changed")
        return outcome


def validate_data_cases(cases: list[Case]) -> list[Outcome]:
    """Build each data case in its own folder, run `python -m training.data validate` once on
    all their files (from the repository root), and judge each file's report and folder."""
    if not cases:
        return []
    with tempfile.TemporaryDirectory(prefix="bad-input-data-") as name:
        folders = [Path(name) / f"{index:03d}" for index in range(len(cases))]
        paths, before = [], []
        for case, folder in zip(cases, folders):
            folder.mkdir()
            paths.append(Path(case.build(folder)))
            before.append(_snapshot(folder))
        command = [sys.executable, "-m", "training.data", "validate", *map(str, paths)]
        finished = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=600)
        outcomes = []
        for case, folder, path, snapshot in zip(cases, folders, paths, before):
            outcome = _judge_report(case, path, finished)
            if outcome.ok and _snapshot(folder) != snapshot:
                outcome = Outcome(case, False, "the folder changed")
            outcomes.append(outcome)
        return outcomes


def _judge_report(case: Case, path: Path, finished: subprocess.CompletedProcess) -> Outcome:
    """What the validator printed about `path` (every line it starts with the file's name)."""
    if "Traceback" in finished.stderr:
        return Outcome(case, False, f"the validator crashed: {finished.stderr.strip().splitlines()[-1][:200]}")
    lines = [line for line in finished.stdout.splitlines() if line.startswith(f"{path}:")]
    if not lines:
        return Outcome(case, False, f"the validator said nothing about the file (exit code {finished.returncode})")
    report = " / ".join(lines)
    accepted = re.fullmatch(re.escape(str(path)) + r": \d+ good conversation\(s\) with \d+ image\(s\), 0 bad line\(s\)",
                            lines[-1]) is not None
    if accepted:
        if case.expect is not None:
            return Outcome(case, False, f"accepted (expected an error saying {case.expect!r})")
        return Outcome(case, True, "accepted")
    if case.expect is None:
        return Outcome(case, False, f"refused a usable input: {report[:200]}")
    if case.expect.lower() not in report.lower():
        return Outcome(case, False, f"error does not say {case.expect!r}: {report[:200]}")
    if finished.returncode == 0:
        return Outcome(case, False, f"reported, but the validator exited 0: {report[:200]}")
    return Outcome(case, True, report[:200])
