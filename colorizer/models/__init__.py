"""Models: the Sketch2Color / Color2Sketch generators and the discriminator."""

from colorizer.models.discriminator import Discriminator
from colorizer.models.generator import (
    REFERENCE_CHANNELS,
    SIZE_MULTIPLE,
    Color2Sketch,
    Sketch2Color,
    UNetGenerator,
    fold_weight_standardization,
    make_noise,
    noise_shapes,
)
from colorizer.models.layers import (
    AttentionGate,
    NoiseInjection,
    ResidualBlock,
    WSConv2d,
    init_weights,
    set_kernels,
)

__all__ = [
    "REFERENCE_CHANNELS",
    "SIZE_MULTIPLE",
    "AttentionGate",
    "Color2Sketch",
    "Discriminator",
    "NoiseInjection",
    "ResidualBlock",
    "Sketch2Color",
    "UNetGenerator",
    "WSConv2d",
    "fold_weight_standardization",
    "init_weights",
    "make_noise",
    "noise_shapes",
    "set_kernels",
]
