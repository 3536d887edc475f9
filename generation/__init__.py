"""Sampling and the interleaved text/image generation loop (built on `vlm`; nothing about UI)."""

from generation.config import GenerationConfig
from generation.events import Done, Event, ImageFinished, ImageStarted, ScalePreview, TextDelta
from generation.loop import InterleavedGenerator, stream_generate
from generation.reply import Reply, collect, generate

__all__ = ["Done", "Event", "GenerationConfig", "ImageFinished", "ImageStarted", "InterleavedGenerator", "Reply",
           "ScalePreview", "TextDelta", "collect", "generate", "stream_generate"]
