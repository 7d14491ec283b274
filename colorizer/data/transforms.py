"""Paired augmentation: the same RandomResizedCrop + horizontal flip on a color image and its sketch.

torchvision is not a dependency, so RandomResizedCrop is implemented here with torchvision's
semantics (``transforms.RandomResizedCrop.get_params``): up to 10 tries of an area fraction drawn
uniformly from ``scale`` and an aspect ratio drawn log-uniformly from ``ratio``, then the fallback
center crop clamped to ``ratio``. The crop is resized with PIL's bilinear filter, which is
antialiased when shrinking (like torchvision's ``antialias=True``). All randomness comes from a
numpy Generator the caller passes in, so a sample's augmentation is a pure function of that
generator's seed (the data sets use ``numpy.random.default_rng([seed, epoch, index])``).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
FLIP_PROBABILITY = 0.5


def random_resized_crop_params(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = DEFAULT_SCALE,
    ratio: tuple[float, float] = DEFAULT_RATIO,
) -> tuple[int, int, int, int]:
    """Crop box (top, left, crop_height, crop_width) in pixels, torchvision's algorithm.

    The draws, in order per try: area fraction ~ U(scale), log aspect ~ U(log ratio), and when the
    box fits, top ~ U{0..height-h}, left ~ U{0..width-w}.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image must be non-empty, got {height}x{width}")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # Fallback: the whole image, trimmed to the nearest allowed aspect ratio, centered.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def center_square_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, side, side) of the largest centered square: the non-augmented view."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def resized_crop(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop uint8 (H, W, 3) or (H, W) to box = (top, left, h, w) and resize to (size, size), bilinear."""
    top, left, h, w = box
    pil = Image.fromarray(np.ascontiguousarray(image))
    if (top, left, h, w) == (0, 0, image.shape[0], image.shape[1]) and h == size and w == size:
        return np.asarray(pil).copy()
    out = pil.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    return np.array(out)


def augment_pair(
    color: np.ndarray,
    sketch: np.ndarray | None,
    size: int,
    rng: np.random.Generator | None,
    scale: tuple[float, float] = DEFAULT_SCALE,
    ratio: tuple[float, float] = DEFAULT_RATIO,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply one crop box and one flip decision to both images; returns (color, sketch) at size x size.

    color: uint8 (H, W, 3); sketch: uint8 (H, W, 3), (H, W) or None, same H and W as color.
    rng None means no augmentation: the largest centered square, resized to ``size`` (a plain
    resize for square images). With an rng: RandomResizedCrop(size, scale, ratio), then a
    horizontal flip with probability 0.5 (one more ``rng.random()`` draw after the crop's).
    """
    height, width = color.shape[:2]
    if sketch is not None and sketch.shape[:2] != (height, width):
        raise ValueError(f"color {color.shape[:2]} and sketch {sketch.shape[:2]} differ in size")
    if rng is None:
        box = center_square_box(height, width)
        flip = False
    else:
        box = random_resized_crop_params(rng, height, width, scale, ratio)
        flip = bool(rng.random() < FLIP_PROBABILITY)
    color = resized_crop(color, box, size)
    if sketch is not None:
        sketch = resized_crop(sketch, box, size)
    if flip:
        color = np.ascontiguousarray(color[:, ::-1])
        if sketch is not None:
            sketch = np.ascontiguousarray(sketch[:, ::-1])
    return color, sketch
