"""A chat session: the history, one streamed reply at a time, regenerate / undo / reset.

Earlier images, drawn or uploaded, go back into the model as their final block (the
processor does this for generation prompts). A bad upload raises before anything is
added to the history, so the session stays as it was.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from chat.conversation import Conversation, Message
from generation import Done, Event, GenerationConfig, Reply, stream_generate
from vlm.image_io import ImageInput, ImageLoadError, load_image
from vlm.int8_weights import quantize_linears_int8
from vlm.tokenizer import CheckpointError
from vlm.unified_model import UnifiedVLM

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 10 * 2**20
MAX_UPLOAD_PIXELS = 4096 * 4096


class EmptyMessageError(ValueError):
    """A message with neither text nor an image."""


class MessageTooLongError(ValueError):
    """A message that, with the history, would not fit in what the model can read."""


def load_chat_model(path: str | Path | None = None, dtype: torch.dtype = torch.float32,
                    int8: bool = False) -> UnifiedVLM:
    """The model at `path`, or the shipped default model; without one, the default architecture
    with untrained image layers (it chats, but its images are noise) and a warning. `dtype` is
    the backbone's weight dtype (`vlm.backbone.resolve_dtype`: bfloat16 halves the bytes each
    token reads, the limit on a CPU); `int8` adds an int8 copy of the decoder's weights for
    one-token steps (`vlm.int8_weights`, not exact); bfloat16 with int8 is the fastest pair on a
    CPU with AMX (README: Speed)."""
    return load_chat_model_and_source(path, dtype, int8)[0]


def load_chat_model_and_source(path: str | Path | None = None, dtype: torch.dtype = torch.float32,
                               int8: bool = False) -> tuple[UnifiedVLM, str]:
    """load_chat_model's model and a line saying which one it is (for benchmarks' reports)."""
    if path is not None:
        model, source = UnifiedVLM.from_pretrained(path, dtype=dtype), str(path)
    else:
        try:
            model, source = UnifiedVLM.from_pretrained(dtype=dtype), "shipped default model"
        except CheckpointError:
            logger.warning("no trained default model is shipped in this install: using the default backbone with "
                           "untrained image layers (text works, drawn images are noise)")
            model = UnifiedVLM.from_backbone(dtype=dtype).eval().fold_adapters()
            source = "default architecture, untrained image layers (none shipped yet)"
    if int8:
        quantize_linears_int8(model.language_model)
        source += ", int8 decoder weights"
    return model, source


def load_upload(source: ImageInput) -> Image.Image:
    """An uploaded image, checked against the size limits; ImageLoadError names what is wrong."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_file() and path.stat().st_size > MAX_UPLOAD_BYTES:
            size = f"it is {path.stat().st_size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB"
            raise ImageLoadError(f"'{path.name}': {size}", size)
    image = load_image(source)
    if image.width * image.height > MAX_UPLOAD_PIXELS:
        pixels = f"it is {image.width}x{image.height} pixels; the limit is 4096x4096"
        raise ImageLoadError(f"the image {pixels}", pixels)
    return image


class ChatSession:
    def __init__(self, model: UnifiedVLM, config: GenerationConfig | None = None, system_prompt: str | None = None):
        self.model = model
        self.config = config or GenerationConfig.for_model(model)
        self.conversation = Conversation(system_prompt)
        self._cancel = threading.Event()
        self._lock = threading.Lock()  # one reply at a time per session

    # ----- the history -----

    def reset(self) -> None:
        self.conversation = Conversation(self.conversation.system_prompt)

    def undo(self) -> bool:
        """Drop the last exchange (the assistant's reply and the message it answered)."""
        messages = self.conversation.messages
        if not messages:
            return False
        if messages[-1].role == "assistant":
            messages.pop()
        if messages and messages[-1].role == "user":
            messages.pop()
        return True

    def cancel(self) -> None:
        """Stop the reply being generated (from any thread) within one forward."""
        self._cancel.set()

    # ----- replies -----

    def send(self, text: str = "", images: Sequence[ImageInput] = (), **overrides) -> Iterator[Event]:
        """Add a user message (text and/or images) and stream the reply; overrides are
        GenerationConfig fields for this reply only (e.g. force_image=True, seed=3)."""
        loaded = [load_upload(image) for image in images]  # raises before the history changes
        if not text.strip() and not loaded:
            raise EmptyMessageError("the message is empty: write something or attach an image")
        parts = [{"type": "image", "image": image} for image in loaded]
        if text.strip():
            parts.append({"type": "text", "text": text.strip()})
        self._check_length(Message("user", parts))
        self.conversation.messages.append(Message("user", parts))
        yield from self._reply(overrides)

    def check_fits(self, text: str, images: Sequence[Image.Image] = ()) -> None:
        """Raise MessageTooLongError if this message would not fit with the history (nothing changes)."""
        parts = [{"type": "image", "image": image} for image in images]
        if text.strip():
            parts.append({"type": "text", "text": text.strip()})
        self._check_length(Message("user", parts))

    def _check_length(self, message: Message) -> None:
        """Refuse (before the history changes) a message the model could not read with the history."""
        limit = self.model.context_length
        text_tokens = len(self.model.processor.tokenizer(message.text).input_ids)
        if text_tokens >= limit:  # no need to lay out the whole history to know
            raise MessageTooLongError(f"the message is {text_tokens} tokens; this model reads at most {limit}")
        conversation = Conversation(self.conversation.system_prompt, [*self.conversation.messages, message])
        length = self.model.processor(conversation.for_model(), add_generation_prompt=True).input_ids.shape[1]
        if length >= limit:
            raise MessageTooLongError(f"with the history the conversation would be {length} tokens; this model "
                                      f"reads at most {limit}: start a new conversation (Clear) or shorten it")

    def regenerate(self, **overrides) -> Iterator[Event]:
        """Replace the last reply with a new one (a different seed unless one is given)."""
        messages = self.conversation.messages
        if messages and messages[-1].role == "assistant":
            messages.pop()
        if not messages or messages[-1].role != "user":
            raise EmptyMessageError("there is no message to answer again")
        yield from self._reply(overrides)

    def _reply(self, overrides: dict) -> Iterator[Event]:
        config = replace(self.config, **overrides)
        with self._lock:
            self._cancel.clear()
            reply = Reply()
            self.conversation.messages.append(reply)
            history = self.conversation.for_model()[:-1]  # everything before this reply
            for event in stream_generate(self.model, history, config, self._cancel):
                reply.add(event)
                yield event
                if isinstance(event, Done):
                    logger.info("reply ended: %s", event.reason)
