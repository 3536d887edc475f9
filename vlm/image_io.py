"""Turning whatever a user hands us (paths, PIL images, arrays, tensors) into model pixels.

Every entry point of the project that takes an image goes through `load_image`, so a bad
file fails in one place with one kind of message: `ImageLoadError`, naming the source.
Pixels inside the model are float tensors in [-1, 1]; tensors a user passes in are
expected in [0, 1] (the torchvision convention), uint8 arrays in 0..255.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


class ImageLoadError(ValueError):
    """An input could not be read as an image; the message names the input and why.

    `reason` says why in words for a person at a chat window: no file path, no exception
    class (the app shows it; the message itself keeps the detail for a developer).
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return f"{type(source).__name__} of shape {tuple(source.shape)}"
    return type(source).__name__


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Transparent pixels become white, as emoji and icons are drawn to be seen on white.
    High-bit-depth grey (16-bit PNGs, 32-bit int or float) is scaled to 8 bits first:
    PIL's own conversion clips it, so a 16-bit photo would come out white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _open_path(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file '{path}' does not exist or is not a file", "the file does not exist")
    try:
        with Image.open(path) as opened:
            opened.load()  # decode now, so a truncated file fails here and not later
            return opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = "it is not an image this app can read (PNG, JPEG, WebP, GIF or BMP)" \
            if isinstance(error, UnidentifiedImageError) else "the image file is damaged or incomplete"
        raise ImageLoadError(
            f"'{path}' is not a readable image ({type(error).__name__}: {error}); "
            "pass a PNG, JPEG, WebP, GIF or BMP file", reason
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageLoadError(f"'{path}' is too large to load safely: {error}",
                             "the image has too many pixels to load safely") from error


def _array_to_pil(array: np.ndarray, source: object) -> Image.Image:
    """HWC or HW arrays; uint8 in 0..255 or float in [0, 1]."""
    if array.ndim == 2:
        array = array[:, :, None].repeat(3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageLoadError(
            f"{_describe(source)}: expected an array of shape (H, W), (H, W, 3) or (H, W, 4)"
        )
    if array.shape[2] == 1:
        array = array.repeat(3, axis=2)
    if array.dtype != np.uint8:
        array = np.asarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{_describe(source)}: contains NaN or infinite values")
        if array.min() < 0.0 or array.max() > 1.0:
            raise ImageLoadError(
                f"{_describe(source)}: float pixels must lie in [0, 1], "
                f"got [{array.min():.3g}, {array.max():.3g}]"
            )
        array = np.round(array * 255.0).astype(np.uint8)
    mode = "RGBA" if array.shape[2] == 4 else "RGB"
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def load_image(source: ImageInput) -> Image.Image:
    """Any supported input as an RGB PIL image, transparency composited on white.

    Tensors are CHW (or HW) floats in [0, 1]; arrays are HWC (or HW).
    """
    if isinstance(source, (str, os.PathLike)):
        image = _open_path(source)
    elif isinstance(source, Image.Image):
        image = source
    elif isinstance(source, torch.Tensor):
        if source.ndim == 3:
            if source.shape[0] not in (1, 3, 4):
                raise ImageLoadError(
                    f"{_describe(source)}: expected a (C, H, W) tensor with 1, 3 or 4 channels"
                )
            array = source.detach().float().cpu().permute(1, 2, 0).numpy()
        elif source.ndim == 2:
            array = source.detach().float().cpu().numpy()
        else:
            raise ImageLoadError(f"{_describe(source)}: expected a (C, H, W) or (H, W) tensor")
        image = _array_to_pil(array, source)
    elif isinstance(source, np.ndarray):
        image = _array_to_pil(source, source)
    else:
        raise ImageLoadError(
            f"cannot read an image from a {type(source).__name__}; "
            "pass a file path, a PIL image, a numpy array or a torch tensor"
        )
    if image.width == 0 or image.height == 0:
        raise ImageLoadError(f"{_describe(source)}: the image is empty ({image.width}x{image.height})",
                             "the image is empty (no pixels)")
    return _composite_on_white(image)


def resize_and_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to `size`, then cut the centre square: no distortion."""
    scale = size / min(image.width, image.height)
    width = max(size, round(image.width * scale))
    height = max(size, round(image.height * scale))
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left = (width - size) // 2
    top = (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float tensor in [-1, 1], the model's pixel space."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def images_to_tensor(images: ImageInput | Sequence[ImageInput], size: int) -> torch.Tensor:
    """One or many inputs -> (B, 3, size, size) float tensor in [-1, 1].

    A 4-D tensor is taken as an already batched (B, C, H, W) input in [0, 1].
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) == 0:
        raise ImageLoadError("no images were given")
    pixels = [pil_to_tensor(resize_and_center_crop(load_image(item), size)) for item in images]
    return torch.stack(pixels)


def tensor_to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) or (3, H, W) tensor in [-1, 1] -> RGB PIL images."""
    if pixels.ndim == 3:
        pixels = pixels[None]
    array = ((pixels.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(item.permute(1, 2, 0).numpy(), mode="RGB") for item in array]
