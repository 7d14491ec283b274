"""Pure-torch reference implementations of the fused ops.

These are the test oracle (run them in float64), the CPU fallback and the export path. Fast backends
must match them; see tests/ for the tolerance table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = (None, "relu", "leaky_relu")
LEAKY_SLOPE = 0.2


def weight_standardize(w: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Standardize a conv weight per output channel.

    w: (C_out, C_in, kh, kw). Returns (w - mean) / (std + eps), mean and *unbiased* std taken over
    (C_in, kh, kw) of each output channel. eps is added to the std, not the variance (as the
    reference). A fan-in of 1 has no unbiased std; torch gives NaN there, as the reference does.
    """
    flat = w.reshape(w.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    centered = flat - mean
    std = centered.std(dim=1, keepdim=True)
    return (centered / (std + eps)).reshape_as(w)


def activate(y: torch.Tensor, act: str | None) -> torch.Tensor:
    if act is None:
        return y
    if act == "relu":
        return F.relu(y)
    if act == "leaky_relu":
        return F.leaky_relu(y, LEAKY_SLOPE)
    raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")


def group_norm_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    groups: int = 32,
    eps: float = 1e-5,
    act: str | None = None,
    residual: torch.Tensor | None = None,
    noise_weight: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """act(GroupNorm(x) + residual) + noise_weight[c] * noise.

    x, residual: (N, C, H, W); weight, bias, noise_weight: (C,); noise: (N, 1, H, W), one map shared
    by all channels. The noise term is the model's NoiseInjection that follows a block; it is an
    epilogue so a fused kernel can apply it in the same pass.
    """
    y = F.group_norm(x, groups, weight, bias, eps)
    if residual is not None:
        y = y + residual
    y = activate(y, act)
    if noise is not None:
        y = noise_inject(y, noise_weight, noise)
    return y


def noise_inject(x: torch.Tensor, weight: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x + weight[c] * noise. x: (N, C, H, W); weight: (C,); noise: (N, 1, H, W)."""
    return x + weight.view(1, -1, 1, 1).to(x.dtype) * noise.to(x.dtype)


def attention_gate(
    g_proj: torch.Tensor,
    x_proj: torch.Tensor,
    x: torch.Tensor,
    g_norm_weight: torch.Tensor,
    g_norm_bias: torch.Tensor,
    x_norm_weight: torch.Tensor,
    x_norm_bias: torch.Tensor,
    psi_weight: torch.Tensor,
    psi_bias: torch.Tensor,
    groups: int = 32,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Attention U-Net gate after its two 1x1 convolutions.

    g_proj, x_proj: (N, F_int, H, W), the outputs of W_g's and W_x's convolutions; x: (N, F_l, H, W),
    the skip features to gate; psi_weight: (F_int,) the *standardized* 1x1 projection to one channel,
    psi_bias: (1,). Returns x * sigmoid(InstanceNorm(psi_weight . relu(GN(g_proj) + GN(x_proj)) + b)).
    """
    g1 = F.group_norm(g_proj, groups, g_norm_weight, g_norm_bias, eps)
    x1 = F.group_norm(x_proj, groups, x_norm_weight, x_norm_bias, eps)
    p = F.relu(g1 + x1)
    q = F.conv2d(p, psi_weight.reshape(1, -1, 1, 1).to(p.dtype), psi_bias.to(p.dtype))
    q = F.instance_norm(q, eps=eps)
    return x * torch.sigmoid(q)
