"""A conversation save that is killed halfway, or that runs out of disk, must leave the earlier
save whole and loadable (and say so, for the full disk). Each trial runs the save in a child
process: killed with SIGKILL at a seeded random moment, or with its file-size limit
(RLIMIT_FSIZE) set below what the save needs, which fails writes the way a full disk does.
Used by `python -m benchmarks.robustness` and `tests/test_chat.py`.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from chat.conversation import Conversation, Message

REPOSITORY = Path(__file__).resolve().parent.parent

# The child: save a larger conversation over `folder`, again and again (or once, under a file-size limit).
CHILD = """
import resource, signal, sys
import numpy as np
from PIL import Image
from chat.conversation import Conversation, ConversationFileError, Message
folder, limit = sys.argv[1], int(sys.argv[2])
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
rng = np.random.default_rng(1)
images = [Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for _ in range(6)]
conversation = Conversation(None, [Message("user", [{"type": "text", "text": "new"}]),
                                   Message("assistant", [{"type": "image", "image": image} for image in images])])
if not limit:
    print("saving", flush=True)  # imports done: the parent's kill lands in a save, not in an import
try:
    while True:
        conversation.save(folder)
        if limit:
            break
except ConversationFileError as error:
    print(error)
    sys.exit(3)
"""


def earlier_save(folder: Path) -> Conversation:
    conversation = Conversation(None, [Message("user", [{"type": "text", "text": "first save"}]),
                                       Message("assistant", [{"type": "image", "image": Image.fromarray(
                                           np.full((16, 16, 3), 200, dtype=np.uint8))}])])
    conversation.save(folder)
    return conversation


def _child(folder: Path, limit: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(limit)], cwd=REPOSITORY,
                            env={**os.environ, "PYTHONPATH": str(REPOSITORY)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _intact(folder: Path) -> bool:
    """The folder loads, as the earlier save or as a complete new one."""
    loaded = Conversation.load(folder)
    texts = [message.text for message in loaded.messages]
    return texts == ["first save", ""] or (texts == ["new", ""] and len(loaded.messages[1].images) == 6)


def killed_saves(work: Path, trials: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    intact = 0
    for trial in range(trials):
        folder = work / f"killed-{trial}"
        earlier_save(folder)
        child = _child(folder, 0)
        ready, _, _ = select.select([child.stdout], [], [], 120)  # under load, its imports take seconds
        if not ready or child.stdout.readline().strip() != "saving":
            child.kill()
            raise RuntimeError(f"the saving child did not start: {child.communicate()[1][-2000:]}")
        time.sleep(rng.uniform(0.05, 0.6))  # a few saves in: the kill lands in one of them
        child.send_signal(signal.SIGKILL)
        child.communicate()  # reaps it and closes its pipes
        intact += _intact(folder)
    return {"save_kills_tried": trials, "save_kills_intact": intact}


def full_disk_save(work: Path) -> dict:
    folder = work / "full-disk"
    earlier = earlier_save(folder)
    before = json.loads((folder / "conversation.json").read_text())
    child = _child(folder, 20_000)
    out, _ = child.communicate(timeout=120)
    unchanged = json.loads((folder / "conversation.json").read_text()) == before and \
        [message.text for message in Conversation.load(folder).messages] == [m.text for m in earlier.messages]
    clear = child.returncode == 3 and "could not save the conversation" in out and "unchanged" in out
    return {"full_disk_save_clear_error": clear, "full_disk_earlier_save_intact": unchanged,
            "full_disk_message": out.strip()}
