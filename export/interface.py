"""The exported graph's interface, shared by every format and by the parity gates.

Inputs in order (``input_names``): ``sketch`` (N, 3, H, W) float32 in [-1, 1]; ``palette`` (N, 9, 3) float32
in [-1, 1]; then by noise mode ``seed`` (N,) int32 (``seeded``), nothing (``zero``) or the eight maps
``noise7`` .. ``noise0`` (``input``). Output ``image`` (N, 3, H, W) float32 in [-1, 1].
``graph_signature`` gives each tensor's type and shape; ``example_inputs`` deterministic inputs for a gate.

A leaf of ``colorizer.export``: the builders (``onnx_export``, ``tensorrt``, ``openvino``), the runners
(``runtime``) and the gates (``verify``) import it, and it imports none of them.
"""

from __future__ import annotations

import torch

from colorizer.errors import ConfigError
from colorizer.limits import seed_sequence
from colorizer.models.generator import NUM_NOISE

PALETTE_SIZE = 9
GENERATOR_IN_CHANNELS = 3 + 3 * PALETTE_SIZE  # 30
NOISE_MODES = ("seeded", "zero", "input")
OUTPUT_NAME = "image"
NOISE_INPUT_NAMES = tuple(f"noise{k}" for k in range(NUM_NOISE - 1, -1, -1))  # noise7 .. noise0
FORMAT_NAME = "colorizer-sketch2color-onnx"
FORMAT_VERSION = "1"
# Engine precisions and the torch dtype an eager reference runs them in (TensorRT's --precision choices).
PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def input_names(noise: str) -> list[str]:
    """The graph's input names for a noise mode, in order."""
    check_noise_mode(noise)
    return ["sketch", "palette"] + {"seeded": ["seed"], "zero": [], "input": list(NOISE_INPUT_NAMES)}[noise]


def graph_signature(noise: str) -> dict[str, tuple[str, tuple[int | None, ...]]]:
    """name -> (element type, shape) of every input (in order) and of the output of our exported
    graph; None marks a dynamic dimension. The engine runners compare a file against it
    (``runtime.check_signature``), so a foreign network with look-alike names is refused."""
    spec: dict[str, tuple[str, tuple[int | None, ...]]] = {
        "sketch": ("float32", (None, 3, None, None)),
        "palette": ("float32", (None, PALETTE_SIZE, 3)),
    }
    if noise == "seeded":
        spec["seed"] = ("int32", (None,))
    elif noise == "input":
        spec.update({name: ("float32", (None, 1, None, None)) for name in NOISE_INPUT_NAMES})
    spec[OUTPUT_NAME] = ("float32", (None, 3, None, None))
    return spec


def check_noise_mode(noise: str) -> None:
    if noise not in NOISE_MODES:
        raise ConfigError(f"noise mode must be one of {', '.join(NOISE_MODES)}, got {noise!r}")


def generator_input(sketch: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """cat(sketch, palette planes): (N, 3, H, W) and (N, 9, 3) -> (N, 30, H, W), same dtype.

    Plane 3j + c (after the sketch's 3 channels) is palette[:, j, c] broadcast over H x W, the layout
    of ``colorizer.palette.palette_planes``.
    """
    n, _, h, w = sketch.shape
    planes = palette.to(sketch.dtype).reshape(n, -1, 1, 1).expand(n, palette.shape[1] * 3, h, w)
    return torch.cat([sketch, planes], dim=1)


def split_generator_input(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``generator_input`` for constant palette planes: (N, 30, H, W) -> sketch, palette.

    The palette is read from pixel (0, 0) of each plane, so the planes must be constant (as
    ``palette_planes`` makes them).
    """
    if x.dim() != 4 or x.shape[1] != GENERATOR_IN_CHANNELS:
        raise ValueError(f"expected the generator input (N, {GENERATOR_IN_CHANNELS}, H, W), got {tuple(x.shape)}")
    return x[:, :3], x[:, 3:, 0, 0].reshape(x.shape[0], PALETTE_SIZE, 3)


def example_inputs(noise: str, batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Deterministic float32 inputs for the exported graph, in ``input_names(noise)`` order.

    sketch and palette uniform in [-1, 1]; seed (seeded mode) ``seed_sequence(seed, N)`` (``seed + i`` for
    sample i); noise maps (input mode) standard normal. Drawn from a CPU generator seeded with ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    sketch = torch.rand(batch, 3, height, width, generator=gen) * 2 - 1
    palette = torch.rand(batch, PALETTE_SIZE, 3, generator=gen) * 2 - 1
    if noise == "seeded":
        return sketch, palette, torch.tensor(seed_sequence(seed, batch), dtype=torch.int32)
    if noise == "input":
        shapes = [(batch, 1, height >> s, width >> s) for s in (7, 6, 5, 4, 3, 2, 1, 0)]
        return (sketch, palette, *(torch.randn(s, generator=gen) for s in shapes))
    return sketch, palette
