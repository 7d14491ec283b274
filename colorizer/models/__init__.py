"""Models: the Sketch2Color / Color2Sketch generators and the discriminator."""

from colorizer.models.discriminator import Discriminator, discriminator_architecture
from colorizer.models.generator import (
    REFERENCE_CHANNELS,
    SIZE_MULTIPLE,
    Color2Sketch,
    Sketch2Color,
    UNetGenerator,
    fold_weight_standardization,
    generator_architecture,
    generator_class,
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
    "discriminator_architecture",
    "fold_weight_standardization",
    "generator_architecture",
    "generator_class",
    "init_weights",
    "make_noise",
    "noise_shapes",
    "set_kernels",
]
