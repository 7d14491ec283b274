"""The one seed range of the project: 0 <= seed < 2**31.

Why this range: an exported ONNX / TensorRT graph takes its seed as an int32 input
(``colorizer.export.seeded_noise``), so 2**31 - 1 is the largest seed every path can honour. The
same range is checked everywhere a seed enters (``colorizer colorize``, exported engines, the
trainer's ``--seed``, ``colorizer palette``), so a seed means the same thing on every path and is
never wrapped or truncated: two different seeds in range give different noise on each path, and a
seed out of range is a one-line error instead of silently equalling another seed.
"""

from __future__ import annotations

from colorizer.errors import ConfigError

MAX_SEED = 2**31 - 1
SEED_RANGE = f"0 <= seed <= {MAX_SEED} (2**31 - 1)"


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an int after checking it is an integer in [0, MAX_SEED]; ConfigError otherwise."""
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise ConfigError(f"{name} must be an integer in [0, {MAX_SEED}], got {seed!r}")
    value = int(seed.__index__())
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} must be in [0, {MAX_SEED}] (2**31 - 1), got {value}")
    return value
