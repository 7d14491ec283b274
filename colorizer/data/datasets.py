"""Training data sets: Kaggle sketch/color pairs, folders of color images, and the synthetic set.

Every data set returns a dict per sample:

- ``"color"``: float32 (3, S, S) in [-1, 1], the color picture;
- ``"sketch"``: float32 (3, S, S) in [-1, 1], gray line art repeated to 3 channels (white paper
  +1); left out when the sketch mode is ``"model"`` (the trainer then makes it on its device with
  ``colorizer.sketch.SketchModel``, as the reference regenerates every sketch with Color2Sketch);
- ``"index"``: int, the index asked for;
- ``"skipped"``: int, how many bad files were passed over to produce this sample.

Sketch modes: ``"given"`` (the pair file's right half; for the synthetic set its exact line art),
``"xdog"`` (``colorizer.sketch.xdog`` of the augmented color picture, so it lines up by
construction), ``"model"`` (see above).

Determinism: the augmentation of sample i is drawn from ``numpy.random.default_rng([seed, epoch,
i])``, a pure function of (seed, epoch, i), whatever the DataLoader's workers, batch size or
order; call ``dataset.set_epoch(epoch)`` before each epoch. With ``persistent_workers=True`` the
workers keep their own copy of the data set and miss ``set_epoch``; ask for ``dataset[(epoch, i)]``
instead (a sampler may yield such tuples), which overrides the stored epoch.

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
import torch
from torch.utils.data import Dataset

from colorizer.data.images import DEFAULT_MIN_SIZE, IMAGE_EXTENSIONS, find_images, load_image, to_tensor
from colorizer.data.transforms import augment_pair
from colorizer.errors import ConfigError, DataError, ImageError

SKETCH_MODES = ("given", "xdog", "model")
DEFAULT_SIZE = 256


class SkippedFileWarning(UserWarning):
    """A data set file that cannot be used and is skipped (the message names it)."""


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for the augmentation of sample ``index`` in ``epoch``: default_rng([seed, epoch, index])."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


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


def _check_mode(sketch: str, allowed: tuple[str, ...], what: str) -> str:
    if sketch not in allowed:
        raise ConfigError(f"{what}: sketch must be one of {', '.join(allowed)}, got {sketch!r}")
    return sketch


class AugmentedDataset(Dataset):
    """Shared machinery: epoch handling, the per-sample generator, augmentation and the sample dict.

    Subclasses implement ``__len__`` and ``_read(position) -> (color uint8 (H, W, 3), sketch uint8
    (H, W) or None, skipped)``.
    """

    def __init__(self, size: int, sketch: str, seed: int, augment: bool, xdog_params: dict | None = None):
        if int(size) <= 0:
            raise ConfigError(f"size must be a positive number of pixels, got {size}")
        self.size = int(size)
        self.sketch = sketch
        self.seed = int(seed)
        self.augment = bool(augment)
        self.epoch = 0
        self.xdog_params = dict(xdog_params or {})

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation ``__getitem__`` draws (see the module docstring)."""
        self.epoch = int(epoch)

    def _resolve(self, key) -> tuple[int, int]:
        if isinstance(key, tuple):
            epoch, index = key
        else:
            epoch, index = self.epoch, key
        index = int(index)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {key} out of range for a data set of {n} samples")
        return int(epoch), index

    def __getitem__(self, key) -> dict:
        epoch, index = self._resolve(key)
        color, sketch, skipped = self._read(index)
        rng = sample_rng(self.seed, epoch, index) if self.augment else None
        if self.sketch != "given":
            sketch = None
        color, sketch = augment_pair(color, sketch, self.size, rng)
        color_t = to_tensor(color)
        sample = {"color": color_t, "index": index, "skipped": skipped}
        if self.sketch == "given":
            sample["sketch"] = to_tensor(sketch)
        elif self.sketch == "xdog":
            from colorizer.sketch import xdog

            sample["sketch"] = xdog(color_t, **self.xdog_params)
        return sample

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray | None, int]:
        raise NotImplementedError


class FileDataset(AugmentedDataset):
    """A data set over image files under ``root`` (found recursively by extension, sorted), with the
    skip-and-report policy for bad files (see the module docstring)."""

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
        _check_mode(sketch, SKETCH_MODES, "PairDataset")
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
        _check_mode(sketch, ("xdog", "model"), "ColorFolderDataset")
        super().__init__(root, size, sketch, seed, augment, min_size, xdog_params)

    def _load(self, path: Path) -> tuple[np.ndarray, None]:
        return load_image(path, min_size=self.min_size), None


def collate(samples: list[dict]) -> dict:
    """Batch sample dicts: tensors stacked to (N, 3, S, S), "index" and "skipped" to int64 (N,).

    Raises ValueError when the samples do not share the same keys (mixed sketch modes).
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    keys = list(samples[0])
    for s in samples[1:]:
        if list(s) != keys:
            raise ValueError(f"samples have different keys: {keys} and {list(s)}")
    batch = {}
    for key in keys:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = torch.tensor(values, dtype=torch.int64)
    return batch


def build_dataset(
    kind: str,
    root: str | os.PathLike | None = None,
    size: int = DEFAULT_SIZE,
    sketch: str | None = None,
    seed: int = 0,
    length: int | None = None,
    augment: bool = True,
    **options,
) -> AugmentedDataset:
    """Make a data set by name: "pair" (PairDataset), "folder" (ColorFolderDataset) or "synthetic".

    sketch None picks the kind's default ("given" for pair and synthetic, "xdog" for folder).
    root is required for pair and folder; length only applies to synthetic (None: its default).
    Extra keyword options go to the data set's constructor. Raises ConfigError for a bad choice.
    """
    if kind == "synthetic":
        from colorizer.data.synthetic import DEFAULT_LENGTH, SyntheticDataset

        return SyntheticDataset(
            length=DEFAULT_LENGTH if length is None else length,
            size=size,
            seed=seed,
            augment=augment,
            sketch=sketch or "given",
            **options,
        )
    if kind not in ("pair", "folder"):
        raise ConfigError(f"unknown data set kind {kind!r}; choose pair, folder or synthetic")
    if root is None:
        raise ConfigError(f"the {kind} data set needs a data folder (root)")
    if kind == "pair":
        return PairDataset(root, size=size, sketch=sketch or "given", seed=seed, augment=augment, **options)
    return ColorFolderDataset(root, size=size, sketch=sketch or "xdog", seed=seed, augment=augment, **options)
