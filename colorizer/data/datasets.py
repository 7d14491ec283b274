"""Data sets over image files: Kaggle sketch/color pairs and folders of color images.

The sample dict, sketch modes and determinism are those of ``colorizer.data.base``.

Bad files (corrupt, truncated, zero-byte, not an image, too small, a pair of the wrong shape):
files are listed by extension when the data set is built (nothing is decoded up front), so a bad
file shows up when its sample is read. It is then skipped for the next file in order (index + 1,
wrapping around), counted in ``"skipped"``, and reported once per process with a
``SkippedFileWarning`` naming the path. A data set whose every file fails raises DataError.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from colorizer.data.base import (
    DEFAULT_SIZE,
    SKETCH_MODES,
    AugmentedDataset,
    SkippedFileWarning,
    check_sketch_mode,
)
from colorizer.data.images import DEFAULT_MIN_SIZE, IMAGE_EXTENSIONS, find_images, load_image
from colorizer.errors import DataError, ImageError


def split_pair(image: np.ndarray, name: str = "<pair>", min_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split a side-by-side pair (H, 2H, 3) uint8 into (color = left half, sketch = right half as gray (H, H)).

    The sketch half is reduced to BT.601 luma (rounded), the model's one-channel line art. Raises
    ImageError naming ``name`` unless the width is exactly twice the height and each half is at
    least ``min_size`` px.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"{name}: expected an RGB pair image, got an array of shape {image.shape}")
    height, width = image.shape[:2]
    if height == 0 or width != 2 * height:
        raise ImageError(
            f"{name}: a pair image must be twice as wide as tall (color left, sketch right), got {width}x{height}"
        )
    if min_size is not None and height < min_size:
        raise ImageError(f"{name}: pair halves of {height}x{height} px are too small (needs at least {min_size} px)")
    color = np.ascontiguousarray(image[:, :height])
    right = image[:, height:].astype(np.float32)
    gray = right[:, :, 0] * 0.299 + right[:, :, 1] * 0.587 + right[:, :, 2] * 0.114
    sketch = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return color, sketch


class FileDataset(AugmentedDataset):
    """A data set over image files under ``root`` (found recursively by extension, sorted), with the
    skip-and-report policy for bad files (see the module docstring)."""

    needs_root = True

    def __init__(self, root, size, sketch, seed, augment, min_size, xdog_params):
        super().__init__(size, sketch, seed, augment, xdog_params)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such data folder")
        self.files = find_images(self.root)
        if not self.files:
            raise DataError(f"{self.root}: no image files found ({', '.join(IMAGE_EXTENSIONS)}, searched recursively)")
        self.min_size = min_size
        # Per process (each DataLoader worker has its own): file index -> reason it failed.
        self._bad: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.files)

    @classmethod
    def build(cls, root, size, sketch, seed, length, augment, **options) -> FileDataset:
        """``length`` does not apply to a folder of files."""
        kwargs = {"sketch": sketch} if sketch else {}
        return cls(root, size=size, seed=seed, augment=augment, **kwargs, **options)

    def _load(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray | None, int]:
        n = len(self.files)
        skipped = 0
        for attempt in range(n):
            position = (index + attempt) % n
            if position in self._bad:
                skipped += 1
                continue
            try:
                color, sketch = self._load(self.files[position])
            except ImageError as exc:
                self._bad[position] = str(exc)
                warnings.warn(f"skipping bad data file: {exc}", SkippedFileWarning, stacklevel=2)
                skipped += 1
                continue
            return color, sketch, skipped
        example = next(iter(self._bad.values()))
        raise DataError(f"{self.root}: all {n} image files failed to load (for example {example})")

    @property
    def bad_files(self) -> dict[str, str]:
        """Path -> reason for the files found bad so far in this process."""
        return {os.fspath(self.files[i]): reason for i, reason in sorted(self._bad.items())}


class PairDataset(FileDataset):
    """The Kaggle "Anime Sketch Colorization Pair" layout: images (e.g. 1024 x 512) holding the color
    picture on the left and its sketch on the right, anywhere under ``root`` (e.g. root/train/*.png).

    size: output side in px; sketch: "given" (the right half), "xdog" or "model"; seed, augment:
    see the module docstring; min_size: smallest accepted half, in px (smaller pairs are skipped
    as bad files); xdog_params: keyword arguments for ``xdog``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = DEFAULT_SIZE,
        sketch: str = "given",
        seed: int = 0,
        augment: bool = True,
        min_size: int | None = DEFAULT_MIN_SIZE,
        xdog_params: dict | None = None,
    ):
        check_sketch_mode(sketch, SKETCH_MODES, "PairDataset")
        super().__init__(root, size, sketch, seed, augment, min_size, xdog_params)

    def _load(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        image = load_image(path, min_size=None)
        return split_pair(image, os.fspath(path), self.min_size)


class ColorFolderDataset(FileDataset):
    """Any color images under ``root`` (recursively); sketches by XDoG or by a Color2Sketch model.

    Non-square pictures are cropped: RandomResizedCrop picks square-ish boxes, and without
    augmentation the largest centered square is used. Images smaller than ``min_size`` px on a
    side are skipped as bad files.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = DEFAULT_SIZE,
        sketch: str = "xdog",
        seed: int = 0,
        augment: bool = True,
        min_size: int | None = DEFAULT_MIN_SIZE,
        xdog_params: dict | None = None,
    ):
        check_sketch_mode(sketch, ("xdog", "model"), "ColorFolderDataset")
        super().__init__(root, size, sketch, seed, augment, min_size, xdog_params)

    def _load(self, path: Path) -> tuple[np.ndarray, None]:
        return load_image(path, min_size=self.min_size), None
