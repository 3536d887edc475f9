"""Package exports imported on first use (PEP 562), for the packages' `__init__`s.

A light command (saving a conversation, `--help`, a child process in a robustness check)
should not pay for torch, transformers and peft because it imported one small module of a
package whose `__init__` re-exports the model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]],
                                                                  list[str]]:
    """(`__getattr__`, `__dir__`, `__all__`) for `package`, whose `exports` map a name to the
    module that defines it."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value  # later lookups find it directly
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__, sorted(exports)
