"""Resume state (optimizer, scheduler, RNGs, step) without pickle: safetensors + JSON.

A pickle in a checkpoint folder runs code when it is loaded, so a checkpoint from someone
else could do anything. Here every tensor goes to a safetensors file and everything else to
JSON; nested containers keep their key types (optimizer state is keyed by int) through a
small tagged encoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TENSORS_NAME = "training_state.safetensors"
STRUCTURE_NAME = "training_state.json"
LEGACY_PICKLE_NAME = "training_state.pt"


class StateError(ValueError):
    """A resume state that is missing, unreadable or of an unsafe kind."""


def _encode(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {"__dict__": [[_encode(key, tensors), _encode(item, tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(item, tensors) for item in value]}
    if isinstance(value, list):
        return [_encode(item, tensors) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy arrays and scalars (numpy's RNG state)
        return _encode(torch.as_tensor(value), tensors)
    raise TypeError(f"cannot store a {type(value).__name__} in a resume state")


def _decode(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__dict__" in value:
            return {_decode(key, tensors): _decode(item, tensors) for key, item in value["__dict__"]}
        if "__tuple__" in value:
            return tuple(_decode(item, tensors) for item in value["__tuple__"])
        raise StateError(f"unknown entry {sorted(value)} in a resume state")
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    return value


def save_state(directory: Path, state: dict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, tensors)
    save_file(tensors, str(directory / TENSORS_NAME))
    (directory / STRUCTURE_NAME).write_text(json.dumps(structure))


def has_state(directory: Path) -> bool:
    return (directory / STRUCTURE_NAME).is_file() or (directory / LEGACY_PICKLE_NAME).is_file()


def load_state(directory: Path) -> dict:
    if (directory / LEGACY_PICKLE_NAME).is_file() and not (directory / STRUCTURE_NAME).is_file():
        raise StateError(f"'{directory / LEGACY_PICKLE_NAME}' is a pickle, which can run code when loaded, so it "
                         f"is not read. Resume states are now {STRUCTURE_NAME} + {TENSORS_NAME}; start the run "
                         "again from its model (--init) or from scratch")
    try:
        structure = json.loads((directory / STRUCTURE_NAME).read_text())
        tensors = load_file(str(directory / TENSORS_NAME))
    except (OSError, json.JSONDecodeError) as error:
        raise StateError(f"cannot read the resume state in '{directory}': {error}") from error
    except Exception as error:  # safetensors raises its own types for corrupt files
        raise StateError(f"'{directory / TENSORS_NAME}' is not a readable safetensors file: {error}") from error
    return _decode(structure, tensors)
