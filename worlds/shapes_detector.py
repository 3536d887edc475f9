"""Read a shapes-world scene back from pixels: colour segmentation, then shape, size and place.

Deterministic and independent of any model, so it can score generated images. Each pixel
is assigned to the nearest palette colour (or to the white background); connected regions
of one colour above a minimum area are objects. The shape comes from simple geometry of the
region: how much of its bounding box it fills, how that fill splits between top and
bottom halves, and how many of its pixels lie near the box's corners.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from worlds.shapes import COLOURS, POSITIONS, SIZES, Shape

MIN_AREA_SHARE = 0.006  # regions smaller than this share of the image are noise


@dataclass(frozen=True)
class Detection:
    kind: str
    colour: str
    size: str
    position: str
    area: int

    def matches(self, shape: Shape) -> bool:
        from worlds.shapes import position_name

        return (self.kind, self.colour, self.size, self.position) == (
            shape.kind, shape.colour, shape.size, position_name(shape))


def colour_labels(pixels_HW3: np.ndarray, max_distance: float = 90.0) -> np.ndarray:
    """(H, W) index into COLOURS per pixel, -1 for background or unclear pixels."""
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    reference = np.concatenate([palette, np.array([[255, 255, 255]], dtype=np.float32)])
    distances = np.linalg.norm(pixels_HW3[:, :, None, :].astype(np.float32) - reference[None, None], axis=-1)
    nearest = distances.argmin(axis=-1)
    labels = np.where(nearest == len(palette), -1, nearest)
    return np.where(distances.min(axis=-1) <= max_distance, labels, -1)


def regions(mask_HW: np.ndarray) -> list[np.ndarray]:
    """Connected regions (4-neighbourhood) of a boolean mask, as arrays of (row, column)."""
    seen = np.zeros_like(mask_HW, dtype=bool)
    height, width = mask_HW.shape
    found = []
    for start in zip(*np.nonzero(mask_HW)):
        if seen[start]:
            continue
        queue, points = deque([start]), []
        seen[start] = True
        while queue:
            row, column = queue.popleft()
            points.append((row, column))
            for next_row, next_column in ((row + 1, column), (row - 1, column), (row, column + 1), (row, column - 1)):
                if 0 <= next_row < height and 0 <= next_column < width and mask_HW[next_row, next_column] \
                        and not seen[next_row, next_column]:
                    seen[next_row, next_column] = True
                    queue.append((next_row, next_column))
        found.append(np.array(points))
    return found


def classify(points: np.ndarray) -> str:
    rows, columns = points[:, 0], points[:, 1]
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    height, width = bottom - top, right - left
    fill = len(points) / (height * width)
    middle = top + height / 2
    top_share = (rows < middle).sum() / len(points)
    # Pixels in the four corner cells (a fifth of the box each way) tell a square from a circle.
    corner_h, corner_w = max(1, round(height / 5)), max(1, round(width / 5))
    in_corner = (((rows < top + corner_h) | (rows >= bottom - corner_h))
                 & ((columns < left + corner_w) | (columns >= right - corner_w))).sum() / len(points)
    if height / width > 1.15:  # a diamond is ~1.4, every other shape <= 1.0
        return "diamond"  # the only shape taller than wide
    if fill > 0.9:
        return "square"
    if top_share < 0.365:
        return "triangle"  # the only shape clearly heavier at the bottom
    if fill < 0.56:
        return "star"  # the sparsest in its box
    if top_share > 0.57:
        return "heart"  # the only shape heavier at the top
    return "circle" if in_corner < 0.06 else "square"


def detect(image: Image.Image) -> list[Detection]:
    """Every object in a shapes-world image, largest first."""
    pixels = np.asarray(image.convert("RGB"))
    side = pixels.shape[0]
    labels = colour_labels(pixels)
    names = list(COLOURS)
    found = []
    for index, colour in enumerate(names):
        for points in regions(labels == index):
            if len(points) < MIN_AREA_SHARE * side * side:
                continue
            rows, columns = points[:, 0], points[:, 1]
            extent = max(rows.max() - rows.min() + 1, columns.max() - columns.min() + 1) / side
            size = min(SIZES, key=lambda name: abs(SIZES[name] - extent))
            centre = ((columns.min() + columns.max() + 1) / 2 / side, (rows.min() + rows.max() + 1) / 2 / side)
            position = min(POSITIONS, key=lambda name: (POSITIONS[name][0] - centre[0]) ** 2
                           + (POSITIONS[name][1] - centre[1]) ** 2)
            found.append(Detection(classify(points), colour, size, position, len(points)))
    return sorted(found, key=lambda detection: -detection.area)


def scene_key(scene) -> list[tuple[str, str, str, str]]:
    """A scene as sorted (kind, colour, size, position) tuples: what `read_scene` returns for its render."""
    from worlds.shapes import position_name

    return sorted((shape.kind, shape.colour, shape.size, position_name(shape)) for shape in scene)


def read_scene(image: Image.Image) -> list[tuple[str, str, str, str]]:
    """The detected scene in `scene_key`'s form, so a render can be checked with one comparison."""
    return sorted((found.kind, found.colour, found.size, found.position) for found in detect(image))
