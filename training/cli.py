"""The trainers' command lines: a config dataclass whose fields are the flags, and a file of the same keys.

`training.train` and `training.train_tokenizer` take their settings the same way: every
field of the trainer's config dataclass is a flag (`learning_rate` is `--learning-rate`),
a YAML or JSON file may set any of them by field name, flags override the file, and a key
that is not a field is refused with the known keys listed. `--help` explains every flag
with its default. A field's type gives its flag: `bool` is `--x`/`--no-x`, a `list[...]`
flag is given once per value, a `Literal[...]` takes one of its values, `X | None` parses
as X. A field's dataclass `metadata` goes to `add_argument` as is (e.g. `{"metavar": "N"}`),
as in transformers' `HfArgumentParser`.

Why not `HfArgumentParser` itself: the trainers' command lines predate this module and
scripts use them, and it would change them. It gives every flag a second `--snake_case`
spelling, makes a list one `nargs="+"` flag (the tokenizer trainer's `--extra-data` is
repeated, once per folder), has no `--no-x` for a boolean that defaults to False, and its
config files are either files of command-line arguments (`args_file_flag`) or a YAML/JSON
file read on its own (`parse_yaml_file`), not a YAML/JSON file that flags override.
accelerate has nothing for a trainer's own flags (its config files set up the launch).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from vlm.config_io import unknown_keys

Config = TypeVar("Config")

_FILE = "_config_file"  # the file option's dest: never a field's name


def read_config_file(config_class: type, path: Path) -> dict[str, Any]:
    """The values a YAML or JSON file (JSON is read as YAML) gives `config_class`'s fields.

    Raises ValueError for an unreadable file or a key that is not a field, naming the keys.
    """
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read training config {path}: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a training config maps flag names (with _ for -) to values")
    unknown = unknown_keys(config_class, values)
    if unknown:
        known = sorted(field.name for field in dataclasses.fields(config_class))
        raise ValueError(f"{path}: unknown keys {unknown}; known keys are {known}")
    return values


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _flag_type(annotation: Any) -> tuple[type, tuple | None, bool]:
    """(the type one value parses as, its choices or None, whether the flag repeats into a list)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # X | None
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), choices, False
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], None, True
    return annotation, None, False


def _from_file(value: Any, kind: type, repeated: bool, path: Path, key: str) -> Any:
    """A file's value as the flag would give it: text through the flag's type (YAML reads `1e-3`
    as text), a path as a Path, a single value of a repeated flag as a list of one."""
    if repeated:
        return [_from_file(item, kind, False, path, key) for item in (value if isinstance(value, list) else [value])]
    if not isinstance(value, str) or kind in (str, bool):
        return value
    try:
        return kind(value)
    except ValueError as error:
        raise ValueError(f"{path}: {key}: {error}") from error


def parse_config(config_class: type[Config], help_texts: dict[str, str], argv: list[str] | None = None, *,
                 prog: str, doc: str, file_flag: str = "--config", required: tuple[str, ...] = ()) -> Config:
    """Parse `argv` into a `config_class`, after the file given with `file_flag` if any.

    `help_texts` has one entry per field; `doc` (a module docstring) gives --help its
    description (the first paragraph) and epilog (the rest). `required` fields must be set,
    on the command line or in the file.
    """
    description, _, epilog = doc.strip().partition("\n\n")
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(file_flag, dest=_FILE, type=Path, default=None, metavar="FILE",
                        help="YAML or JSON file whose keys are the flags below (with _ for -); flags override it")
    hints = typing.get_type_hints(config_class)
    flag_types = {}
    for field in dataclasses.fields(config_class):
        flag_types[field.name] = kind, choices, repeated = _flag_type(hints[field.name])
        default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
        note = "required" if field.name in required else f"default: {default}"
        # default=None throughout: a flag left out must not override the file.
        options = {"default": None, "help": f"{help_texts[field.name]} ({note})", **field.metadata}
        if kind is bool:
            parser.add_argument(flag_name(field.name), action=argparse.BooleanOptionalAction, **options)
        else:
            parser.add_argument(flag_name(field.name), type=kind, choices=choices,
                                action="append" if repeated else "store", **options)
    args = vars(parser.parse_args(argv))
    path = args.pop(_FILE)
    values = read_config_file(config_class, path) if path else {}
    for key, value in values.items():
        kind, _, repeated = flag_types[key]
        values[key] = _from_file(value, kind, repeated, path, key)
    values |= {name: value for name, value in args.items() if value is not None}
    config = config_class(**values)
    missing = [flag_name(name) for name in required if getattr(config, name) in (None, "")]
    if missing:
        parser.error(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
                     f"(on the command line or in {file_flag})")
    for name, (_, choices, _) in flag_types.items():
        if choices is not None and getattr(config, name) not in choices:
            parser.error(f"{flag_name(name)} must be one of {list(choices)}, got {getattr(config, name)!r}")
    return config
