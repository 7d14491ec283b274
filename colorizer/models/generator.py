"""U-Net generators: Sketch2Color (30 input channels) and Color2Sketch (3).

Reference: delta6189/Anime-Sketch-Colorizer ``mymodels.py``; design note in shared/seeds. Encoder of
seven down-sampling residual blocks, decoder of attention-gated, noise-injected residual blocks
(SPEC.md, "Generator"). Parameter names match the reference checkpoint.

Noise (the ``noise`` argument of ``forward``), eight maps drawn in the order noise7 .. noise0:
- ``None`` or ``"random"``: fresh draws from torch's global RNG on the input's device, in the same
  order and shapes as the reference, so ``torch.manual_seed`` reproduces the reference's output.
- an ``int`` seed: drawn from a CPU ``torch.Generator`` seeded with it, then moved to the input's
  device and dtype. Identical on every device: reproducible inference.
- ``"zero"``: no noise (the injection is skipped).
- a sequence of eight tensors (N, 1, h, w) in the order noise7 .. noise0 (see ``noise_shapes``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from colorizer.errors import CheckpointError
from colorizer.limits import SIZE_MULTIPLE, check_model_size
from colorizer.models.layers import (
    GROUPS,
    AttentionGate,
    NoiseInjection,
    ResidualBlock,
    WSConv2d,
    init_weights,
    set_kernels,
)
from colorizer.models.state import state_shape
from colorizer.ops import OpSet

REFERENCE_CHANNELS = (64, 128, 256, 512)
NUM_LEVELS = 7
NUM_NOISE = 8
assert SIZE_MULTIPLE == 2**NUM_LEVELS, "colorizer.limits.SIZE_MULTIPLE is the generator's 7 halvings"


def level_channels(channels: Sequence[int]) -> list[int]:
    """Channels of encoder levels 1..7 from the first four; later levels repeat the last."""
    channels = list(channels)
    if not 1 <= len(channels) <= NUM_LEVELS:
        raise ValueError(f"channels needs 1 to {NUM_LEVELS} entries, got {channels}")
    return channels + [channels[-1]] * (NUM_LEVELS - len(channels))


def noise_shapes(batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Shapes of the eight noise maps, noise7 .. noise0, for an input of (batch, *, height, width)."""
    return [(batch, 1, height >> s, width >> s) for s in (7, 6, 5, 4, 3, 2, 1, 0)]


def make_noise(noise, batch: int, height: int, width: int, device, dtype) -> list[torch.Tensor | None] | None:
    """Resolve a ``noise`` argument (see the module docstring) to eight maps, or None for random."""
    if noise is None or (isinstance(noise, str) and noise == "random"):
        return None
    shapes = noise_shapes(batch, height, width)
    if isinstance(noise, str):
        if noise == "zero":
            return [None] * NUM_NOISE
        raise ValueError(f"noise must be 'random', 'zero', an int seed or {NUM_NOISE} tensors, got {noise!r}")
    if isinstance(noise, int) and not isinstance(noise, bool):
        gen = torch.Generator(device="cpu").manual_seed(noise)
        return [torch.randn(s, generator=gen).to(device=device, dtype=dtype) for s in shapes]
    noise = list(noise)
    if len(noise) != NUM_NOISE:
        raise ValueError(f"expected {NUM_NOISE} noise maps (noise7 .. noise0), got {len(noise)}")
    for i, (n, s) in enumerate(zip(noise, shapes)):
        if n is not None and tuple(n.shape) != s:
            raise ValueError(f"noise{7 - i} has shape {tuple(n.shape)}, expected {s}")
    return noise


class Encoder(nn.Module):
    def __init__(self, in_channels: int, channels: list[int], groups: int = GROUPS):
        super().__init__()
        prev = in_channels
        for level, c in enumerate(channels, start=1):
            self.add_module(f"layer{level}", ResidualBlock(prev, c, sample="down", groups=groups))
            prev = c

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for level in range(1, NUM_LEVELS + 1):
            x = getattr(self, f"layer{level}")(x)
            skips.append(x)
        return skips


class Decoder(nn.Module):
    def __init__(self, channels: list[int], out_channels: int = 3, groups: int = GROUPS):
        super().__init__()
        c = [channels[0] // 2] + channels  # c[k] = channels of skip level k; c[0] = last up width
        self.noise7 = NoiseInjection(c[7])
        self.layer7_up = ResidualBlock(c[7], c[7], sample="up", groups=groups)
        for k in range(6, 0, -1):
            f = c[k]
            setattr(self, f"Att{k}", AttentionGate(F_g=f, F_l=f, F_int=f // 2, groups=groups))
            setattr(self, f"layer{k}", ResidualBlock(2 * f, f, groups=groups))
            setattr(self, f"noise{k}", NoiseInjection(f))
            setattr(self, f"layer{k}_up", ResidualBlock(f, c[k - 1], sample="up", groups=groups))
        self.noise0 = NoiseInjection(c[0])
        self.layer0 = WSConv2d(c[0], out_channels, 3, padding=1, bias=True)

    def forward(self, skips: list[torch.Tensor], noise: list[torch.Tensor | None] | None) -> torch.Tensor:
        x7 = skips[6]
        if noise is None:  # random: drawn lazily, in the reference's order and shapes

            def draw(x):
                return torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)

        x = self.noise7(x7, draw(x7) if noise is None else noise[0])
        x = self.layer7_up(x)
        for k in range(6, 0, -1):
            s = getattr(self, f"Att{k}")(g=x, x=skips[k - 1])
            block = getattr(self, f"layer{k}")
            n = draw(x) if noise is None else noise[7 - k]
            x = block(torch.cat((x, s), dim=1), getattr(self, f"noise{k}").weight if n is not None else None, n)
            x = getattr(self, f"layer{k}_up")(x)
        x = self.noise0(x, draw(x) if noise is None else noise[7])
        return torch.tanh(self.layer0(x))


class UNetGenerator(nn.Module):
    """Encoder-decoder generator. Input (N, in_channels, H, W) in [-1, 1], H and W multiples of 128;
    output (N, 3, H, W) in [-1, 1] (tanh).

    channels: widths of encoder levels 1..4 (5..7 repeat the last); every width and its half must be
    a multiple of 32 (GroupNorm(32)). The reference is (64, 128, 256, 512). kernels: the op backend,
    ``eager`` | ``triton`` | ``native``; it changes no parameter. norm_groups: the groups of every
    GroupNorm, a divisor of 32 (the reference's 32). Fewer groups is an option for narrow models,
    where 32 groups leave one or two channels per group (docs/bundled_gpu_recipe.md); it changes no
    parameter's shape, so checkpoints record it and ``load_generator`` rebuilds it.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = REFERENCE_CHANNELS,
        kernels: str | OpSet = "eager",
        out_channels: int = 3,
        norm_groups: int = GROUPS,
    ):
        super().__init__()
        levels = level_channels(channels)
        bad = [c for c in levels if c % 64]
        if bad:
            raise ValueError(f"channel widths must be multiples of 64 (their halves feed GroupNorm(32)), got {levels}")
        if isinstance(norm_groups, bool) or not isinstance(norm_groups, int) or norm_groups < 1 or GROUPS % norm_groups:
            raise ValueError(f"norm_groups must be a divisor of {GROUPS} (1, 2, 4, 8, 16, 32), got {norm_groups!r}")
        self.in_channels = in_channels
        self.channels = tuple(channels)
        self.norm_groups = norm_groups
        self.encoder = Encoder(in_channels, levels, norm_groups)
        self.decoder = Decoder(levels, out_channels, norm_groups)
        init_weights(self)
        self.kernels = "eager"
        self.set_kernels(kernels)

    def set_kernels(self, kernels: str | OpSet) -> UNetGenerator:
        set_kernels(self, kernels)
        self.kernels = kernels if isinstance(kernels, str) else kernels.name
        return self

    def forward(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        check_model_size(x.shape[2], x.shape[3], "input")
        maps = make_noise(noise, x.shape[0], x.shape[2], x.shape[3], x.device, x.dtype)
        return self.decoder(self.encoder(x), maps)


class Sketch2Color(UNetGenerator):
    """Colorizer: input cat(sketch (3 ch), 9 palette planes (27 ch)) = 30 channels."""

    def __init__(
        self, in_channels: int = 30, channels: Sequence[int] = REFERENCE_CHANNELS, kernels="eager", norm_groups=GROUPS
    ):
        super().__init__(in_channels, channels, kernels, norm_groups=norm_groups)


class Color2Sketch(UNetGenerator):
    """Line extractor: color image (3 ch) -> sketch (3 ch)."""

    def __init__(
        self, in_channels: int = 3, channels: Sequence[int] = REFERENCE_CHANNELS, kernels="eager", norm_groups=GROUPS
    ):
        super().__init__(in_channels, channels, kernels, norm_groups=norm_groups)


def generator_architecture(state: dict, source: str = "checkpoint", metadata: dict | None = None) -> dict:
    """{'in_channels', 'channels', 'norm_groups'} of a generator state dict (CheckpointError).

    The widths come from the tensor shapes. The GroupNorm group count leaves no trace in them: it is
    read from a checkpoint's metadata (``metadata["generator"]["norm_groups"]``, written by the trainer
    and ``save_generator``); 32, the reference's, when absent (the reference's files, older checkpoints).
    """
    in_channels = int(state_shape(state, "encoder.layer1.conv1.weight", source, "generator")[1])
    channels = tuple(
        int(state_shape(state, f"encoder.layer{i}.conv1.weight", source, "generator")[0]) for i in range(1, 5)
    )
    recorded_generator = metadata.get("generator") if isinstance(metadata, dict) else None
    recorded = recorded_generator.get("norm_groups", GROUPS) if isinstance(recorded_generator, dict) else GROUPS
    if isinstance(recorded, bool) or not isinstance(recorded, int) or recorded < 1 or GROUPS % recorded:
        raise CheckpointError(f"{source} records norm_groups {recorded!r}; a divisor of {GROUPS} is needed")
    return {"in_channels": in_channels, "channels": channels, "norm_groups": recorded}


def generator_class(in_channels: int) -> type[UNetGenerator]:
    """The generator a state dict of ``in_channels`` inputs belongs to: 3 is Color2Sketch (a color
    image in), anything else Sketch2Color (sketch + palette planes in)."""
    return Color2Sketch if in_channels == 3 else Sketch2Color


def fold_weight_standardization(model: nn.Module) -> nn.Module:
    """Inference copy of ``model`` with every WSConv2d's standardized weight computed once.

    Names and state_dict keys stay the same; the copy's convolutions run plain. Do not train it.
    """
    import copy

    folded = copy.deepcopy(model)
    with torch.no_grad():
        for module in folded.modules():
            if isinstance(module, WSConv2d) and module.standardize:
                module.weight.copy_(module.standardized_weight())
                module.standardize = False
    return folded.eval()
