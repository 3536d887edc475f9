"""Resume state (optimizer, scheduler, RNGs, step) without pickle: safetensors + JSON.

A pickle in a checkpoint folder runs code when it is loaded, so a checkpoint from someone
else could do anything. Here every tensor goes to a safetensors file and everything else to
JSON; nested containers keep their key types (optimizer state is keyed by int) through a
small tagged encoding.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TENSORS_NAME = "training_state.safetensors"
STRUCTURE_NAME = "training_state.json"
LEGACY_PICKLE_NAME = "training_state.pt"
# What `accelerate.Accelerator.save_state` writes (the tokenizer trainer used it): pickles too.
ACCELERATE_PICKLES = ("random_states_0.pkl", "custom_checkpoint_0.pkl", "optimizer.bin", "scheduler.bin")


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


def _legacy_pickles(directory: Path) -> list[Path]:
    return [directory / name for name in (LEGACY_PICKLE_NAME, *ACCELERATE_PICKLES) if (directory / name).is_file()]


def has_state(directory: Path) -> bool:
    return (directory / STRUCTURE_NAME).is_file() or bool(_legacy_pickles(directory))


def load_state(directory: Path) -> dict:
    pickles = _legacy_pickles(directory)
    if pickles and not (directory / STRUCTURE_NAME).is_file():
        raise StateError(f"'{pickles[0]}' is a pickle, which can run code when loaded, so it "
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


def rng_state(generator: torch.Generator | None = None) -> dict:
    """Python, numpy and torch RNG states (and `generator`'s), storable by `save_state`."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict, generator: torch.Generator | None = None) -> None:
    """Undo of `rng_state`: every RNG continues exactly where the saved run stopped."""
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if generator is not None:
        generator.set_state(state["generator"])
