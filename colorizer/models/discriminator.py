"""PatchGAN-style discriminator with spectral normalisation (SPEC.md, "Discriminator").

Input: cat(generator input (30 ch), image (3 ch)) = 33 channels. Output: (N, 1), the mean over the
patch map of sigmoid scores. Uses torch.nn.utils.spectral_norm (weight_orig/weight_u/weight_v keys)
so the reference checkpoint's 'netD' loads with strict=True; ``bn1`` exists but is unused, as in
the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.nn.utils import spectral_norm

from colorizer.models.layers import EPS, GROUPS, UsesOps, group_norm_act, init_weights, set_kernels
from colorizer.models.state import state_shape
from colorizer.ops import OpSet


class Discriminator(nn.Module, UsesOps):
    def __init__(
        self,
        in_channels: int = 33,
        channels: Sequence[int] = (64, 128, 256, 512),
        kernels: str | OpSet = "eager",
    ):
        super().__init__()
        c1, c2, c3, c4 = channels
        self.in_channels = in_channels
        self.channels = tuple(channels)
        self.conv1 = spectral_norm(nn.Conv2d(in_channels, c1, 4, stride=2, padding=1))
        self.bn1 = nn.GroupNorm(GROUPS, c1, eps=EPS)
        self.conv2 = spectral_norm(nn.Conv2d(c1, c2, 4, stride=2, padding=1))
        self.bn2 = nn.GroupNorm(GROUPS, c2, eps=EPS)
        self.conv3 = spectral_norm(nn.Conv2d(c2, c3, 4, stride=2, padding=1))
        self.bn3 = nn.GroupNorm(GROUPS, c3, eps=EPS)
        self.conv4 = spectral_norm(nn.Conv2d(c3, c4, 4, stride=1, padding=1))
        self.bn4 = nn.GroupNorm(GROUPS, c4, eps=EPS)
        self.conv5 = spectral_norm(nn.Conv2d(c4, 1, 4, stride=1, padding=1))
        for p in self.bn1.parameters():
            p.requires_grad_(False)
        init_weights(self)
        self.kernels = "eager"
        self.set_kernels(kernels)

    def set_kernels(self, kernels: str | OpSet) -> Discriminator:
        set_kernels(self, kernels)
        self.kernels = kernels if isinstance(kernels, str) else kernels.name
        return self

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """condition: (N, 30, H, W) generator input; image: (N, 3, H, W) real or fake. Returns (N, 1)."""
        x = torch.cat((condition, image), dim=1)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"discriminator expects {self.in_channels} channels in all, got {x.shape[1]}")
        x = nn.functional.leaky_relu(self.conv1(x), 0.2)
        for conv, norm in ((self.conv2, self.bn2), (self.conv3, self.bn3), (self.conv4, self.bn4)):
            x = group_norm_act(self.ops, norm, conv(x), act="leaky_relu")
        return torch.sigmoid(self.conv5(x)).mean(dim=(2, 3))


def discriminator_architecture(state: dict, source: str = "checkpoint") -> dict:
    """{'in_channels', 'channels'} of a discriminator state dict, from its tensor shapes (CheckpointError)."""
    in_channels = int(state_shape(state, "conv1.weight_orig", source, "discriminator")[1])
    channels = tuple(int(state_shape(state, f"conv{i}.weight_orig", source, "discriminator")[0]) for i in range(1, 5))
    return {"in_channels": in_channels, "channels": channels}
