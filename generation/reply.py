"""Replies assembled from the event stream, for callers that want the whole answer at once."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from generation.config import GenerationConfig
from generation.events import Done, Event, ImageFinished, TextDelta
from generation.loop import CodeHook, stream_generate
from vlm.messages import Message
from vlm.tokenizer import HybridTokens
from vlm.unified_model import UnifiedVLM


@dataclass
class Reply(Message):
    """One answer: text and image parts in the order they were generated (image parts also
    carry their codes as "tokens"). A Message with role "assistant", so a chat history takes it as is."""

    role: str = "assistant"
    reason: str | None = None  # why it ended (generation.events: END_OF_TURN, MAX_TOKENS, ...)

    @property
    def image_tokens(self) -> list[HybridTokens]:
        return [part["tokens"] for part in self.parts if part["type"] == "image"]

    def add(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            if not event.text:
                return
            if self.parts and self.parts[-1]["type"] == "text":
                self.parts[-1]["text"] += event.text
            else:
                self.parts.append({"type": "text", "text": event.text})
        elif isinstance(event, ImageFinished):
            self.parts.append({"type": "image", "image": event.image, "tokens": event.tokens})
        elif isinstance(event, Done):
            self.reason = event.reason


def collect(events: Iterable[Event]) -> list[Reply]:
    """Fold a stream into one Reply per sequence."""
    replies: dict[int, Reply] = {}
    for event in events:
        replies.setdefault(event.sequence, Reply()).add(event)
    return [replies[index] for index in sorted(replies)]


def generate(model: UnifiedVLM, conversation: list | Sequence[list], config: GenerationConfig | None = None,
             cancel: threading.Event | None = None, code_hook: CodeHook | None = None) -> list[Reply]:
    """The whole replies at once (see `stream_generate` for streaming and `code_hook`)."""
    return collect(stream_generate(model, conversation, config, cancel, code_hook=code_hook))
