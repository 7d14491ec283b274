"""Building blocks of the colorizer (SPEC.md, "Building blocks").

Every block computes its normalisation, activation, residual add, noise injection and attention gate
through an OpSet (``colorizer.ops``), so the Triton and native backends replace those ops without
forking the model. Module and parameter names follow the public reference
(delta6189/Anime-Sketch-Colorizer) so its checkpoints load with strict=True.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from colorizer.ops import OpSet, get_ops

GROUPS = 32
EPS = 1e-5


def group_norm_act(ops: OpSet, norm: nn.GroupNorm, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """``ops.group_norm_act`` with the affine, groups and eps of the ``norm`` module (kwargs: act,
    residual, noise_weight, noise)."""
    return ops.group_norm_act(x, norm.weight, norm.bias, norm.num_groups, norm.eps, **kwargs)


class UsesOps:
    """Mixin for modules that call the functional ops; ``set_kernels`` swaps the OpSet."""

    ops: OpSet = get_ops("eager")


class WSConv2d(nn.Conv2d, UsesOps):
    """Conv2d with weight standardization on every forward (Qiao et al. 2019).

    Drop-in for nn.Conv2d: same constructor and parameter names. ``standardize=False`` marks a
    folded copy whose ``weight`` already holds the standardized values (see
    ``fold_weight_standardization``); it then runs as a plain convolution.
    """

    def __init__(self, *args, eps: float = EPS, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps
        self.standardize = True

    def standardized_weight(self) -> torch.Tensor:
        if not self.standardize:
            return self.weight
        return self.ops.weight_standardize(self.weight, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class NoiseInjection(nn.Module, UsesOps):
    """x + weight[c] * noise, noise (N, 1, H, W) shared by all channels; weight starts at zero.

    The parameter is named ``weight`` as the reference's ApplyNoise.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x
        return self.ops.noise_inject(x, self.weight, noise)


class ResidualBlock(nn.Module, UsesOps):
    """conv-GN-ReLU-conv-GN (+ residual) -> ReLU -> sample ('down' max-pool, 'up' nearest x2, None).

    ``groups``: GroupNorm groups (the reference's 32). The count changes no parameter's shape, so a
    checkpoint records it (``colorizer.models.generator_architecture``).

    ``convr``/``bnr`` exist even when in == out (the residual is then the identity), because the
    reference's checkpoints carry them; they are frozen there so DDP sees no unused parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, sample: str | None = None, groups: int = GROUPS):
        super().__init__()
        if sample not in (None, "down", "up"):
            raise ValueError(f"sample must be None, 'down' or 'up', got {sample!r}")
        self.ic, self.oc, self.sample = in_channels, out_channels, sample
        self.conv1 = WSConv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.GroupNorm(groups, out_channels, eps=EPS)
        self.conv2 = WSConv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.GroupNorm(groups, out_channels, eps=EPS)
        self.convr = WSConv2d(in_channels, out_channels, 1, bias=False)
        self.bnr = nn.GroupNorm(groups, out_channels, eps=EPS)
        if in_channels == out_channels:
            for p in (*self.convr.parameters(), *self.bnr.parameters()):
                p.requires_grad_(False)

    def forward(
        self,
        x: torch.Tensor,
        noise_weight: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """noise_weight/noise: a NoiseInjection fused into the last GroupNorm; only without sampling."""
        ops = self.ops
        if self.ic != self.oc:
            residual = group_norm_act(ops, self.bnr, self.convr(x))
        else:
            residual = x
        out = group_norm_act(ops, self.bn1, self.conv1(x), act="relu")
        if noise is not None and self.sample is not None:
            raise ValueError("noise can only be fused into a block without sampling")
        out = group_norm_act(
            ops, self.bn2, self.conv2(out), act="relu", residual=residual, noise_weight=noise_weight, noise=noise
        )
        if self.sample == "down":
            out = F.max_pool2d(out, kernel_size=3, stride=2, padding=1)
        elif self.sample == "up":
            out = F.interpolate(out, scale_factor=2.0, mode="nearest")
        return out


class AttentionGate(nn.Module, UsesOps):
    """Attention U-Net gate (Oktay et al. 2018): x * sigmoid(IN(psi(relu(GN(W_g g) + GN(W_x x))))).

    Submodule names (W_g.0, W_g.1, W_x.0, W_x.1, psi.0) follow the reference checkpoint.
    """

    def __init__(self, F_g: int, F_l: int, F_int: int, groups: int = GROUPS):  # noqa: N803 (the paper's names)
        super().__init__()
        self.W_g = nn.Sequential(WSConv2d(F_g, F_int, 1, bias=True), nn.GroupNorm(groups, F_int, eps=EPS))
        self.W_x = nn.Sequential(WSConv2d(F_l, F_int, 1, bias=True), nn.GroupNorm(groups, F_int, eps=EPS))
        self.psi = nn.Sequential(WSConv2d(F_int, 1, 1, bias=True), nn.InstanceNorm2d(1, eps=EPS), nn.Sigmoid())

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        psi_conv, norm_g, norm_x = self.psi[0], self.W_g[1], self.W_x[1]
        return self.ops.attention_gate(
            self.W_g[0](g),
            self.W_x[0](x),
            x,
            norm_g.weight,
            norm_g.bias,
            norm_x.weight,
            norm_x.bias,
            psi_conv.standardized_weight().reshape(-1),
            psi_conv.bias,
            norm_g.num_groups,
            norm_g.eps,
        )


def set_kernels(model: nn.Module, kernels: str | OpSet) -> nn.Module:
    """Switch every block of ``model`` to the given backend in place; parameters are untouched."""
    ops = get_ops(kernels)
    for module in model.modules():
        if isinstance(module, UsesOps):
            module.ops = ops
    return model


def init_weights(model: nn.Module) -> None:
    """The reference's initialisation: conv weights N(0, 0.02); GroupNorm weight N(1, 0.02), bias 0.

    Conv biases keep PyTorch's default. For spectrally normalised convs the raw weight
    (``weight_orig``) is drawn; the reference's own init touched only the derived weight, which
    the next forward overwrites, so the scale of the raw weight is ours (spectral norm removes it).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            raw = getattr(module, "weight_orig", None)
            nn.init.normal_(raw if raw is not None else module.weight, 0.0, 0.02)
        elif isinstance(module, nn.GroupNorm):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)
