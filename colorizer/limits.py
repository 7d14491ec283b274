"""The project's limits, in one place: the seed range, the size multiple and the largest picture side.

Every check of a seed or a picture size reads this module (the CLI commands, the runtime seam
``colorizer.runner``, the exported engines, the trainer, the service), so a number means the same thing
on every path. Errors name the parameter (``name="noise_seed"``, the ConfigError's ``option``);
``colorizer.errors.run_cli`` prints it as the command's flag (``--noise-seed``).

Seeds: ``0 <= seed <= MAX_SEED = 2**31 - 1``. An exported ONNX / TensorRT graph takes its seeds as an
int32 input (``colorizer.export.seeded_noise``), so 2**31 - 1 is the largest seed every path can honour.
A seed out of range is an error, never wrapped into another seed. Where a base seed gives one seed per
picture (``seed + i`` for picture i of a batch or of an evaluation set), ``seed_sequence`` is the one
rule, on every path: the values wrap past MAX_SEED to 0 (arithmetic modulo 2**31), so that a base near
the top still gives distinct, in-range seeds.

Sizes: the generator halves a picture seven times, so H and W are multiples of ``SIZE_MULTIPLE`` (128).
``MAX_SIDE`` bounds a side: the in-graph noise of an exported model needs H * W < 2**28.
"""

from __future__ import annotations

import math

import torch

from colorizer.errors import ConfigError

MAX_SEED = 2**31 - 1
SEED_MODULUS = MAX_SEED + 1  # seed_sequence wraps modulo 2**31
SEED_RANGE = f"0 <= seed <= {MAX_SEED} (2**31 - 1)"
SIZE_MULTIPLE = 128  # 2**7: the generator's seven halvings (colorizer.models.generator checks it)
MAX_SIDE = 16384  # 128 * 128; H * W < 2**28 for the in-graph noise (colorizer.export.seeded_noise)


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an int after checking it is an integer in [0, MAX_SEED]; ConfigError otherwise."""
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise ConfigError(f"{name} must be an integer in [0, {MAX_SEED}], got {seed!r}", option=name)
    value = int(seed.__index__())
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} must be in [0, {MAX_SEED}] (2**31 - 1), got {value}", option=name)
    return value


def check_seed_tensor(seed: torch.Tensor) -> None:
    """Raise ValueError unless seed is an integer (N,) tensor with values in [0, 2**31)."""
    if seed.dim() != 1 or seed.dtype.is_floating_point or seed.dtype == torch.bool:
        raise ValueError(f"seed must be a 1-D integer tensor (one per image), got {seed.dtype} {tuple(seed.shape)}")
    if seed.numel() and (int(seed.min()) < 0 or int(seed.max()) > MAX_SEED):
        raise ValueError(f"seed values must be in [0, {MAX_SEED}]")


def seed_sequence(base, count: int, name: str = "seed") -> list[int]:
    """The seeds of ``count`` pictures from one base seed: ``(base + i) mod 2**31`` for i < count.

    The one rule that turns a seed into per-picture seeds (a batch, an evaluation set, an engine called
    with one int). ``base`` is checked with ``check_seed``.
    """
    start = check_seed(base, name)
    return [(start + i) % SEED_MODULUS for i in range(int(count))]


def check_size(size, name: str = "size") -> int:
    """``size`` (a square side) if it is a multiple of SIZE_MULTIPLE in [SIZE_MULTIPLE, MAX_SIDE]; ConfigError."""
    if isinstance(size, bool) or not hasattr(size, "__index__"):
        raise ConfigError(f"{name} must be an integer, got {size!r}", option=name)
    value = int(size.__index__())
    if value % SIZE_MULTIPLE or not SIZE_MULTIPLE <= value <= MAX_SIDE:
        raise ConfigError(
            f"{name} must be a multiple of {SIZE_MULTIPLE} from {SIZE_MULTIPLE} to {MAX_SIDE}, got {value}", option=name
        )
    return value


def check_model_size(height: int, width: int, name: str = "picture") -> tuple[int, int]:
    """(height, width) of a model input if both are multiples of SIZE_MULTIPLE up to MAX_SIDE; ConfigError."""
    for side in (height, width):
        if side % SIZE_MULTIPLE or not SIZE_MULTIPLE <= side <= MAX_SIDE:
            raise ConfigError(
                f"{name} sides must be multiples of {SIZE_MULTIPLE} from {SIZE_MULTIPLE} to {MAX_SIDE}, "
                f"got {width}x{height}"
            )
    return int(height), int(width)


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The model size a (height, width) picture is padded to: each side up to the next multiple of 128.

    ConfigError when a side would exceed MAX_SIDE (the picture is larger than any model input).
    """
    if height < 1 or width < 1:
        raise ConfigError(f"a picture needs at least one pixel, got {width}x{height}")
    ph = max(SIZE_MULTIPLE, math.ceil(height / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    pw = max(SIZE_MULTIPLE, math.ceil(width / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    if max(ph, pw) > MAX_SIDE:
        raise ConfigError(
            f"a {width}x{height} picture is larger than the largest model input ({MAX_SIDE} px a side); "
            f"scale it down or use a size of at most {MAX_SIDE}"
        )
    return ph, pw
