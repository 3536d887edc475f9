"""A chat conversation (system prompt + messages of text and image parts) and its folder format.

On disk a conversation is a folder: `conversation.json` (with a schema version) and the
images as PNGs in `images/`. Saving writes a temporary folder and swaps it in, so a crash
never leaves half a conversation where a good one was.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vlm.files import PathEscapeError, confined_path, recover, swap_in
from vlm.image_io import ImageLoadError, load_image
from vlm.messages import ConversationError, Message, check_message

SCHEMA_VERSION = 1
FILE_NAME = "conversation.json"

class ConversationFileError(ValueError):
    """A saved conversation cannot be read; the message names the file and the problem."""

@dataclass
class Conversation:
    system_prompt: str | None = None
    messages: list[Message] = field(default_factory=list)

    def for_model(self) -> list[dict]:
        """The messages in the processor's format, system prompt first."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return messages + [message.as_dict() for message in self.messages]

    def save(self, directory: str | Path) -> Path:
        """Write conversation.json + images/ to `directory`, replacing an earlier save of a
        conversation there. Written beside it and swapped in at the end: a crash or a full
        disk leaves the earlier save as it was."""
        directory = Path(directory)
        recover(directory)
        if directory.exists() and not (directory / FILE_NAME).is_file():
            raise ConversationFileError(f"'{directory}' exists and is not a saved conversation; not overwriting it")
        staging = directory.with_name(directory.name + ".saving")
        try:
            if staging.exists():
                shutil.rmtree(staging)
            (staging / "images").mkdir(parents=True)
            stored, count = [], 0
            for message in self.messages:
                parts = []
                for part in message.parts:
                    if part["type"] == "image":
                        name = f"images/{count:04d}.png"
                        part["image"].save(staging / name)
                        parts.append({"type": "image", "path": name})
                        count += 1
                    else:
                        parts.append({"type": "text", "text": part["text"]})
                stored.append({"role": message.role, "content": parts})
            record = {"schema_version": SCHEMA_VERSION, "system_prompt": self.system_prompt, "messages": stored}
            (staging / FILE_NAME).write_text(json.dumps(record, indent=2, ensure_ascii=False))
            swap_in(staging, directory)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise ConversationFileError(f"could not save the conversation to '{directory}': "
                                        f"{error.strerror or error}; an earlier save there is unchanged") from error
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Conversation:
        directory = Path(directory)
        recover(directory)
        path = directory / FILE_NAME
        if not path.is_file():
            raise ConversationFileError(f"'{directory}' is not a saved conversation (no {FILE_NAME})")
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ConversationFileError(f"'{path}' is not valid JSON: {error}") from error
        version = record.get("schema_version") if isinstance(record, dict) else None
        if version != SCHEMA_VERSION:
            raise ConversationFileError(f"'{path}' has schema_version {version!r}; this version reads {SCHEMA_VERSION}")
        messages = []
        for index, message in enumerate(record.get("messages", [])):
            try:
                role, content = check_message(message, index, ("path",))
            except ConversationError as error:
                raise ConversationFileError(f"'{path}': {error}") from error
            if role == "system":
                raise ConversationFileError(f"'{path}': message {index} has role 'system' (it is the system_prompt)")
            parts = []
            for part in content:
                if part["type"] == "text":
                    parts.append({"type": "text", "text": part["text"]})
                    continue
                if not isinstance(part.get("path"), str):
                    raise ConversationFileError(f"'{path}': message {index} has an image part without a path")
                try:
                    image = load_image(confined_path(directory, part["path"]))
                except (ImageLoadError, PathEscapeError) as error:
                    raise ConversationFileError(f"'{path}': message {index}: {error}") from error
                parts.append({"type": "image", "image": image})
            messages.append(Message(role, parts))
        return cls(record.get("system_prompt"), messages)
