"""Image input: every supported kind of input, and clear errors for bad ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlm.image_io import ImageLoadError, images_to_tensor, load_image, resize_and_center_crop, tensor_to_pil


def test_transparent_pixels_are_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 255, 255))
    rgb = load_image(image)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((1, 1)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (0, 0, 255)


def test_paths_arrays_and_tensors_give_the_same_pixels(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(array).save(path)
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    for source in (path, str(path), Image.fromarray(array), array, array.astype(np.float32) / 255, tensor):
        np.testing.assert_array_equal(np.asarray(load_image(source)), array)


def test_any_size_is_resized_and_centre_cropped_without_distortion():
    wide = Image.new("RGB", (300, 100), "white")
    wide.paste((255, 0, 0), (0, 0, 100, 100))  # a red left third, cut off by the centre crop
    cropped = resize_and_center_crop(wide, 64)
    assert cropped.size == (64, 64)
    assert cropped.getpixel((8, 32)) == (255, 255, 255)
    pixels = images_to_tensor([wide, Image.new("L", (10, 40))], 64)
    assert pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1


def test_model_pixels_round_trip_through_pil():
    pixels = images_to_tensor(np.full((16, 16, 3), 200, dtype=np.uint8), 16)
    assert np.asarray(tensor_to_pil(pixels)[0]).max() == 200


def test_corrupt_file_error_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32), "red").save(good)
    path.write_bytes(good.read_bytes()[:40])  # a truncated PNG
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_image(path)


def test_non_image_file_error_names_the_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with pytest.raises(ImageLoadError, match="notes.txt.*not a readable image"):
        load_image(path)


def test_missing_file_error_names_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match="missing.png.*does not exist"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize(
    "source, message",
    [
        (np.zeros((4, 4, 5), dtype=np.uint8), "expected an array of shape"),
        (np.full((4, 4, 3), 2.0, dtype=np.float32), r"must lie in \[0, 1\]"),
        (np.full((4, 4, 3), np.nan, dtype=np.float32), "NaN"),
        (torch.zeros(7, 4, 4), "1, 3 or 4 channels"),
        (42, "cannot read an image from a int"),
        ([], "no images were given"),
    ],
)
def test_bad_inputs_raise_clear_errors(source, message):
    with pytest.raises(ImageLoadError, match=message):
        images_to_tensor(source, 8)
