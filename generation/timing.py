"""Where a generation's time goes: wall time per named stage, for `benchmarks.speed`'s breakdown.

The loop times its own stages (each scale's forward, the image head, sampling, the residual
head, decoding, the final block) when given a `StageTimer`, so the breakdown measures the
code that runs in the app rather than a copy of it. Without one, a stage costs a `nullcontext`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    """Seconds and calls per stage name, summed over every call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started
            self.calls[name] += 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
