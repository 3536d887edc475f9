"""Sampling and the interleaved text/image generation loop (built on `vlm`; nothing about UI)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlm.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "GenerationConfig": "generation.config",
    "Done": "generation.events",
    "Event": "generation.events",
    "ImageFinished": "generation.events",
    "ImageStarted": "generation.events",
    "ScalePreview": "generation.events",
    "TextDelta": "generation.events",
    "InterleavedGenerator": "generation.loop",
    "stream_generate": "generation.loop",
    "Reply": "generation.reply",
    "collect": "generation.reply",
    "generate": "generation.reply",
})

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on first use
    from generation.config import GenerationConfig  # noqa: F401
    from generation.events import Done, Event, ImageFinished, ImageStarted, ScalePreview, TextDelta  # noqa: F401
    from generation.loop import InterleavedGenerator, stream_generate  # noqa: F401
    from generation.reply import Reply, collect, generate  # noqa: F401
