"""What every training data set shares: the sample dict, sketch modes, per-sample randomness.

Every data set returns a dict per sample:

- ``"color"``: float32 (3, S, S) in [-1, 1], the color picture;
- ``"sketch"``: float32 (3, S, S) in [-1, 1], gray line art repeated to 3 channels (white paper
  +1); left out when the sketch mode is ``"model"`` (the trainer then makes it on its device with
  ``colorizer.sketch.SketchModel``, as the reference regenerates every sketch with Color2Sketch);
- ``"index"``: int, the index asked for;
- ``"skipped"``: int, how many bad files were passed over to produce this sample.

Sketch modes: ``"given"`` (the data set's own line art: a pair file's right half, the synthetic
set's exact strokes), ``"xdog"`` (``colorizer.sketch.xdog`` of the augmented color picture, so it
lines up by construction), ``"model"`` (see above).

Determinism: the augmentation of sample i is drawn from ``numpy.random.default_rng([seed, epoch,
i])``, a pure function of (seed, epoch, i), whatever the DataLoader's workers, batch size or
order; call ``dataset.set_epoch(epoch)`` before each epoch. With ``persistent_workers=True`` the
workers keep their own copy of the data set and miss ``set_epoch``; ask for ``dataset[(epoch, i)]``
instead (a sampler may yield such tuples), which overrides the stored epoch.

A data set kind is a subclass of ``AugmentedDataset`` (``__len__``, ``_read`` and the ``build``
classmethod) in its own module, plus one line in ``colorizer.data.registry``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from colorizer.data.images import to_tensor
from colorizer.data.transforms import augment_pair
from colorizer.errors import ConfigError

SKETCH_MODES = ("given", "xdog", "model")
DEFAULT_SIZE = 256


class SkippedFileWarning(UserWarning):
    """A data set file that cannot be used and is skipped (the message names it)."""


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for the augmentation of sample ``index`` in ``epoch``: default_rng([seed, epoch, index])."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def check_sketch_mode(sketch: str, allowed: tuple[str, ...], what: str) -> str:
    if sketch not in allowed:
        raise ConfigError(f"{what}: sketch must be one of {', '.join(allowed)}, got {sketch!r}")
    return sketch


class AugmentedDataset(Dataset):
    """Shared machinery: epoch handling, the per-sample generator, augmentation and the sample dict.

    Subclasses implement ``__len__``, ``_read(position) -> (color uint8 (H, W, 3), sketch uint8
    (H, W) or None, skipped)`` and ``build``; ``needs_root``: the kind reads a data folder.
    """

    needs_root = False

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

    @classmethod
    def build(
        cls, root, size: int, sketch: str | None, seed: int, length: int | None, augment: bool, **options
    ) -> AugmentedDataset:
        """The data set from ``build_dataset``'s arguments (sketch None: the kind's default); each
        kind takes the arguments it uses and ignores the others."""
        raise NotImplementedError

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray | None, int]:
        raise NotImplementedError


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
