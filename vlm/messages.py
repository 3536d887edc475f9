"""The conversation format, checked in one place, and the message type replies and histories share.

A conversation is a list of messages `{"role": ..., "content": [parts]}`; a part is
`{"type": "text", "text": ...}` or `{"type": "image", "image": <PIL/array/tensor>}` /
`{"type": "image", "path": ...}`; a plain string content is one text part. The processor,
the training data loader and saved chat conversations all check messages with
`check_message`; each then adds only what its own source needs (the loader: image files
that exist inside the data folder; a saved chat: no system messages).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

IMAGE_START = "<|image_start|>"
IMAGE_END = "<|image_end|>"
IMAGE_SLOT = "<|image|>"
SPECIAL_TOKENS = (IMAGE_START, IMAGE_END, IMAGE_SLOT)
ROLES = ("system", "user", "assistant")


class ConversationError(ValueError):
    """A conversation is malformed; the message names the message and part."""


def check_message(message: object, index: int, image_keys: tuple[str, ...] = ("image", "path")
                  ) -> tuple[str, list[dict]]:
    """(role, content parts) of a well-formed message; ConversationError naming message `index`
    (and the part) otherwise. A string content becomes one text part. An image part needs one
    of `image_keys` (a file format takes only "path")."""
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
        raise ConversationError(f"message {index} must be a dict with 'role' and 'content', got {message!r:.80}")
    role = message["role"]
    if role not in ROLES:
        raise ConversationError(f"message {index} has role {role!r}; expected one of {', '.join(ROLES)}")
    content = message["content"]
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise ConversationError(f"message {index} ({role}) has no content parts")
    for part_index, part in enumerate(content):
        where = f"message {index} part {part_index}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise ConversationError(f"{where}: a text part needs a 'text' string")
            if any(token in part["text"] for token in SPECIAL_TOKENS):
                raise ConversationError(f"{where}: text may not contain the image tokens {', '.join(SPECIAL_TOKENS)}")
        elif kind == "image":
            if all(part.get(key) is None for key in image_keys):
                raise ConversationError(f"{where}: an image part needs {' or '.join(map(repr, image_keys))}")
        else:
            raise ConversationError(f"{where}: type must be 'text' or 'image', got {kind!r}")
    return role, content


@dataclass
class Message:
    """One turn as the chat keeps it: a role and its parts in order. A generated reply
    (`generation.Reply`) is a Message too, so it goes into the history as it is."""

    role: str
    parts: list[dict] = field(default_factory=list)  # {"type": "text", "text"} | {"type": "image", "image", ...}

    @property
    def text(self) -> str:
        return "".join(part["text"] for part in self.parts if part["type"] == "text")

    @property
    def images(self) -> list[Image.Image]:
        return [part["image"] for part in self.parts if part["type"] == "image"]

    def as_dict(self) -> dict:
        """The message in the processor's format (an empty message reads as empty text)."""
        content = [{"type": "text", "text": part["text"]} if part["type"] == "text"
                   else {"type": "image", "image": part["image"]} for part in self.parts]
        return {"role": self.role, "content": content or [{"type": "text", "text": ""}]}
