"""A user's own folder of images, for tokenizer training (`--data path/to/images`)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from vlm.image_io import ImageLoadError, load_image, pil_to_tensor, resize_and_center_crop

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class ImageFolderDataset(Dataset):
    """Every image under a folder (recursively), resized and centre-cropped to `image_size`.

    All files are checked when the dataset is made, so a corrupt file is reported before
    training starts, together with every other bad file, rather than hours into a run.
    """

    def __init__(self, root: str | Path, image_size: int = 64):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder '{root}' does not exist or is not a folder")
        self.paths = sorted(path for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise FileNotFoundError(f"'{root}' holds no images with suffixes {sorted(IMAGE_SUFFIXES)}")
        bad = []
        for path in self.paths:
            try:
                with Image.open(path) as opened:
                    opened.verify()
            except Exception as error:  # PIL raises many types for broken files; report them all
                bad.append(f"{path}: {type(error).__name__}: {error}")
        if bad:
            raise ImageLoadError(f"{len(bad)} unreadable image(s) in '{root}':\n  " + "\n  ".join(bad))
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        pixels = pil_to_tensor(resize_and_center_crop(load_image(path), self.image_size))
        return {"pixels": pixels, "name": path.stem, "hexcode": ""}
