"""OpenMoji and image-folder datasets: names, a deterministic split by emoji, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from training.image_folder import ImageFolderDataset
from vlm.image_io import ImageLoadError
from worlds.openmoji import EmojiEntry, is_heldout, openmoji_entries, render_svg


def test_openmoji_entries_are_the_named_emoji():
    entries = openmoji_entries()
    assert len(entries) > 3500
    by_code = {entry.hexcode: entry for entry in entries}
    assert by_code["1F600"].name == "grinning face"
    assert all(entry.name and entry.svg_path.is_file() for entry in entries)


def test_split_is_deterministic_by_emoji_group_and_holds_out_at_least_300():
    entries = openmoji_entries()
    heldout = [entry for entry in entries if is_heldout(entry, 10.0)]
    assert len(heldout) >= 300
    assert heldout == [entry for entry in openmoji_entries() if is_heldout(entry, 10.0)]
    heldout_groups = {entry.group for entry in heldout}
    train_groups = {entry.group for entry in entries if not is_heldout(entry, 10.0)}
    assert not heldout_groups & train_groups


def test_skin_tone_variants_share_a_group():
    base = EmojiEntry("1F44D", "thumbs up", None)
    toned = EmojiEntry("1F44D-1F3FD", "thumbs up: medium skin tone", None)
    assert base.group == toned.group == "1F44D"


def test_svg_renders_to_rgb_at_the_requested_size():
    entry = next(entry for entry in openmoji_entries() if entry.hexcode == "1F600")
    image = render_svg(entry.svg_path, 48)
    assert image.mode == "RGB" and image.size == (48, 48)
    array = np.asarray(image)
    assert (array[0, 0] == 255).all()  # transparent corner composited on white
    assert array.std() > 20  # a face, not a blank tile


def test_image_folder_dataset_reads_nested_images(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (40, 20), "red").save(tmp_path / "a.png")
    Image.new("RGBA", (16, 16), (0, 0, 255, 255)).save(tmp_path / "sub" / "b.png")
    (tmp_path / "readme.txt").write_text("ignored: not an image suffix")
    dataset = ImageFolderDataset(tmp_path, image_size=16)
    assert len(dataset) == 2
    item = dataset[0]
    assert item["pixels"].shape == (3, 16, 16) and item["name"] == "a"
    assert item["pixels"][0].mean() > 0.9 and item["pixels"][1].mean() < -0.9  # red in [-1, 1]


def test_image_folder_dataset_reports_every_corrupt_file(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "fine.png")
    (tmp_path / "bad1.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "bad2.jpg").write_text("hello")
    with pytest.raises(ImageLoadError, match=r"2 unreadable image\(s\)(.|\n)*bad1.png(.|\n)*bad2.jpg"):
        ImageFolderDataset(tmp_path)


def test_image_folder_dataset_rejects_a_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no images"):
        ImageFolderDataset(tmp_path)
