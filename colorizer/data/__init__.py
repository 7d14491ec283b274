"""Images and data sets: loading and converting pictures, paired augmentation, the training sets.

- ``load_image`` / ``decode_image``: any image file -> (H, W, 3) uint8 RGB, or one-line ImageError.
- ``to_tensor`` / ``to_uint8``: uint8 HWC <-> float32 CHW in [-1, 1]; ``save_image``: atomic write.
- ``base``: the sample dict every data set returns, ``AugmentedDataset``, ``collate``.
- ``PairDataset``, ``ColorFolderDataset`` (``datasets``), ``SyntheticDataset`` (``synthetic``).
- ``registry``: ``DATASET_KINDS`` (name -> class; a new kind is one module and one line there) and
  ``build_dataset``.
"""

from colorizer.data.base import SKETCH_MODES, AugmentedDataset, SkippedFileWarning, collate, sample_rng
from colorizer.data.datasets import ColorFolderDataset, PairDataset, split_pair
from colorizer.data.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIZE,
    IMAGE_EXTENSIONS,
    decode_image,
    find_images,
    load_image,
    save_image,
    to_tensor,
    to_uint8,
)
from colorizer.data.registry import DATASET_KINDS, build_dataset
from colorizer.data.synthetic import BASE_SIZE, SyntheticDataset, render_drawing
from colorizer.data.transforms import augment_pair, random_resized_crop_params

__all__ = [
    "BASE_SIZE",
    "DEFAULT_MAX_PIXELS",
    "DATASET_KINDS",
    "DEFAULT_MIN_SIZE",
    "IMAGE_EXTENSIONS",
    "SKETCH_MODES",
    "AugmentedDataset",
    "ColorFolderDataset",
    "PairDataset",
    "SkippedFileWarning",
    "SyntheticDataset",
    "augment_pair",
    "build_dataset",
    "collate",
    "decode_image",
    "find_images",
    "load_image",
    "random_resized_crop_params",
    "render_drawing",
    "sample_rng",
    "save_image",
    "split_pair",
    "to_tensor",
    "to_uint8",
]
