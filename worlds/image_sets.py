"""More images than OpenMoji, for the tokenizer's training and benchmark: renders and photographs.

A tokenizer trained on emoji alone reconstructs a user's photo at ~11 dB and fails the
project's own shapes detector on a quarter of its renders. These datasets fill both gaps:

- `SyntheticRenders`: shapes-world scenes, step-by-step drawings (every prefix of a
  procedure) and blank canvases, exactly what the chat model is trained to draw.
- `PhotoCrops`: random crops at random scales of the photographs that ship inside
  installed wheels (scikit-image's sample images, gradio's and matplotlib's sample data), split by
  source photo so held-out crops come from photos training never saw.

Both are seeded per item: item i is the same image on every machine and every run, so a
resumed training run sees the same data and held-out scores are comparable. Items are dicts
in `OpenMojiDataset`'s form (`pixels`, `name`, `hexcode`); `stack_pixels` stacks them.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from vlm.image_io import load_image, pil_to_tensor
from worlds.shapes import random_scene, render
from worlds.step_drawings import PROCEDURES, step_images

# Colour and grey photographs bundled in scikit-image's wheel (no download); the held-out
# ones are whole photos kept out of training. motorcycle_right is left out: it is nearly
# motorcycle_left, which trains.
SKIMAGE_TRAIN = ("astronaut.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png",
                 "retina.jpg", "camera.png", "coins.png", "moon.png", "brick.png", "grass.png", "gravel.png",
                 "clock_motion.png", "page.png")
SKIMAGE_HELDOUT = ("chelsea.png", "rocket.jpg")
MATPLOTLIB_HELDOUT = ("grace_hopper.jpg",)
# Six more photographs from gradio's wheel (a dependency of the app), for training only: 14
# scikit-image pictures taught the decoder those pictures more than photographs in general
# (a longer decoder run gained on drawings and lost on the held-out photos). Paths are
# relative to the installed gradio package; cheetah1-copy.jpg is cheetah1.jpg byte for byte.
GRADIO_TRAIN = ("media_assets/images/cheetah1.jpg", "media_assets/images/cheetah.jpg",
                "media_assets/images/groot.jpeg", "media_assets/images/lion.jpg",
                "media_assets/images/tower.jpg", "test_data/cheetah2.jpg")
PHOTO_SPLITS = ("train", "heldout")


def photo_paths(split: str) -> list[Path]:
    """The bundled photographs of a split, from the installed scikit-image, gradio and matplotlib wheels."""
    if split not in PHOTO_SPLITS:
        raise ValueError(f"split must be one of {PHOTO_SPLITS}, got {split!r}")
    try:
        import skimage.data
    except ImportError as error:
        raise ImportError("photographs for the tokenizer come from scikit-image: pip install scikit-image") from error
    import matplotlib

    skimage_dir = Path(skimage.data.__file__).parent
    paths = [skimage_dir / name for name in (SKIMAGE_TRAIN if split == "train" else SKIMAGE_HELDOUT)]
    if split == "train":
        # Found, not imported: importing gradio takes seconds and the folder is all that is needed.
        gradio = importlib.util.find_spec("gradio")
        if gradio is None or not gradio.submodule_search_locations:
            raise ImportError("six of the tokenizer's training photographs come from gradio: pip install gradio")
        paths += [Path(gradio.submodule_search_locations[0]) / name for name in GRADIO_TRAIN]
    else:
        paths += [Path(matplotlib.get_data_path()) / "sample_data" / name for name in MATPLOTLIB_HELDOUT]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"bundled sample photographs are missing (a different package version?): {missing}")
    return paths


class PhotoCrops(Dataset):
    """`count` square crops of bundled photographs, each a random place and scale, resized to
    `image_size`. Crop sides run from `image_size` pixels to the photo's shorter side, so a
    crop may be a whole photo shrunk or a patch at nearly full resolution."""

    def __init__(self, split: str, count: int, image_size: int = 64, seed: int = 0):
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.photos = [load_image(path) for path in photo_paths(split)]
        self.count, self.image_size, self.seed, self.split = count, image_size, seed, split

    def __len__(self) -> int:
        return self.count

    def image(self, index: int) -> Image.Image:
        rng = random.Random(f"photo-{self.split}-{self.seed}-{index}")
        photo = self.photos[rng.randrange(len(self.photos))]
        shorter = min(photo.size)
        side = round(min(shorter, self.image_size) * (max(shorter, self.image_size) / min(shorter, self.image_size))
                     ** rng.random())  # log-uniform between image_size and the shorter side
        left, top = rng.randint(0, photo.width - side), rng.randint(0, photo.height - side)
        crop = photo.crop((left, top, left + side, top + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return crop.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS)

    def __getitem__(self, index: int) -> dict:
        return {"pixels": pil_to_tensor(self.image(index)), "name": f"photo-{index}", "hexcode": ""}


class SyntheticRenders(Dataset):
    """`count` renders: 60% shapes scenes (1-3 shapes), 35% a step of a step-by-step drawing,
    5% a blank white canvas (what every drawing starts from)."""

    def __init__(self, count: int, image_size: int = 64, seed: int = 0):
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.count, self.image_size, self.seed = count, image_size, seed

    def __len__(self) -> int:
        return self.count

    def image(self, index: int) -> Image.Image:
        rng = random.Random(f"render-{self.seed}-{index}")
        kind = rng.random()
        if kind < 0.6:
            return render(random_scene(rng), self.image_size)
        if kind < 0.95:
            steps = PROCEDURES[rng.choice(sorted(PROCEDURES))](rng)
            return rng.choice(step_images(steps, self.image_size))
        return Image.new("RGB", (self.image_size, self.image_size), "white")

    def __getitem__(self, index: int) -> dict:
        return {"pixels": pil_to_tensor(self.image(index)), "name": f"render-{index}", "hexcode": ""}


def stack_pixels(dataset: Dataset, limit: int | None = None) -> torch.Tensor:
    """(N, 3, S, S) pixels of a dataset's first `limit` items."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    return torch.stack([dataset[index]["pixels"] for index in range(count)])

