"""The training data set kinds by name, and ``build_dataset``.

A new kind is a subclass of ``colorizer.data.base.AugmentedDataset`` in its own module and one line
in ``DATASET_KINDS``; the trainer's ``--data`` choices are these names.
"""

from __future__ import annotations

import os

from colorizer.data.base import DEFAULT_SIZE, AugmentedDataset
from colorizer.data.datasets import ColorFolderDataset, PairDataset
from colorizer.data.synthetic import SyntheticDataset
from colorizer.errors import ConfigError

DATASET_KINDS: dict[str, type[AugmentedDataset]] = {
    "pair": PairDataset,  # the Kaggle 1024x512 color|sketch PNGs
    "folder": ColorFolderDataset,  # any color images; sketches by XDoG or a model
    "synthetic": SyntheticDataset,  # drawn on the fly, no download
}


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
    cls = DATASET_KINDS.get(kind)
    if cls is None:
        names = list(DATASET_KINDS)
        raise ConfigError(f"unknown data set kind {kind!r}; choose {', '.join(names[:-1])} or {names[-1]}")
    if cls.needs_root and root is None:
        raise ConfigError(f"the {kind} data set needs a data folder (root)")
    return cls.build(root=root, size=size, sketch=sketch, seed=seed, length=length, augment=augment, **options)
