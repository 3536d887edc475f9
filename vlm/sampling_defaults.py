"""A model's own image sampling defaults: `generation_config.json` beside its weights.

Which CFG scale and code sampling draw best depends on the model (a half-trained one draws
cleaner shapes from its more likely codes), and so does whether its residual head helps (a
head that adds noise is better left off: `residual_steps` 0), so a model folder may carry the settings
`benchmarks.sampling_sweep --save` measured best for it, as a Hugging Face model carries its
generation config. Chat, the app and `benchmarks.evaluate` start from them; a setting the
user gives wins. Only the image sampling keys are kept here: text sampling, reply lengths
and seeds are the caller's business. Values are checked where they become a
`GenerationConfig`; this module checks the file's shape.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from vlm.tokenizer import CheckpointError

FILE_NAME = "generation_config.json"
KEYS = ("cfg_scale", "image_temperature", "image_top_k", "image_top_p", "residual_steps", "image_candidates")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check(values: object, source: str) -> dict:
    """The mapping, if it holds only known keys with a number (or one number per scale) each."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{source}: expected a mapping of {', '.join(KEYS)}, got {type(values).__name__}")
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise CheckpointError(f"{source}: unknown keys {unknown}; known keys are {list(KEYS)}")
    for key, least in (("residual_steps", 0), ("image_candidates", 1)):
        value = values.get(key, least)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise CheckpointError(f"{source}: {key} must be a whole number >= {least}, got {value!r}")
    for key, value in values.items():
        per_scale = isinstance(value, Sequence) and not isinstance(value, str)
        if not (_is_number(value) or (per_scale and value and all(_is_number(item) for item in value))):
            raise CheckpointError(f"{source}: {key} must be a number or a list of numbers, got {value!r}")
    if "cfg_scale" in values and isinstance(values["cfg_scale"], Sequence):
        raise CheckpointError(f"{source}: cfg_scale must be one number, got {values['cfg_scale']!r}")
    return dict(values)


def read(folder: str | Path) -> dict:
    """The folder's sampling defaults ({} when it has none)."""
    path = Path(folder) / FILE_NAME
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"'{path}' is not valid JSON: {error}") from error
    return check(values, f"'{path}'")


def write(folder: str | Path, values: dict) -> Path:
    """Replace the folder's sampling defaults (written whole: a crash leaves the old file)."""
    path = Path(folder) / FILE_NAME
    values = check(values, "sampling defaults")
    staging = path.with_name(path.name + ".new")
    staging.write_text(json.dumps(values, indent=2) + "\n")
    os.replace(staging, path)
    return path
