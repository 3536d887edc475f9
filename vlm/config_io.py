"""Dataclass configs from saved dicts: one rule for every config the project writes.

A key that is not a field is refused with the unknown and the known keys named (a typo or
a file from another version should not be silently dropped), and a field whose type is a
dataclass is built from its nested dict. Model, tokenizer and trainer configs all go
through `config_from_dict`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

Config = TypeVar("Config")


class ConfigKeyError(ValueError):
    """A saved config has keys its dataclass does not know."""


def unknown_keys(config_class: type, values: dict[str, Any]) -> list[str]:
    known = {field.name for field in dataclasses.fields(config_class)}
    return sorted(str(key) for key in set(values) - known)


def config_from_dict(config_class: type[Config], values: dict[str, Any], source: str | None = None) -> Config:
    """`config_class(**values)`, refusing unknown keys (naming them, and `source` if given: the
    file they came from) and building nested dataclass fields from dicts."""
    where = f"{source}: " if source else ""
    if not isinstance(values, dict):
        raise ConfigKeyError(f"{where}expected a mapping of {config_class.__name__} fields, "
                             f"got {type(values).__name__}")
    unknown = unknown_keys(config_class, values)
    if unknown:
        known = sorted(field.name for field in dataclasses.fields(config_class))
        raise ConfigKeyError(f"{where}unknown {config_class.__name__} keys {unknown}; known keys are {known}")
    hints = typing.get_type_hints(config_class)
    built = {}
    for name, value in values.items():
        kind = hints.get(name)
        if isinstance(value, dict) and dataclasses.is_dataclass(kind):
            value = config_from_dict(kind, value, f"{where}{name}")
        built[name] = value
    return config_class(**built)
