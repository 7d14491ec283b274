"""Pure-torch reference implementations of the fused ops: the ``eager`` backend.

These are the test oracle (run them in float64), the CPU fallback and the export path. Fast backends
must match them; see tests/ for the tolerance table. ``OP_NAMES`` lists the ops: the fields of
``colorizer.ops.OpSet`` are built from it, and each name is a function of this module with the
signature every backend implements. A new op is a function here plus its name in ``OP_NAMES``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# The ops every backend may implement (a backend that leaves one out gets the function of this module).
OP_NAMES = ("weight_standardize", "group_norm_act", "noise_inject", "attention_gate", "kmeans_assign_accumulate")

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
    return attention_gate_tail(F.relu(g1 + x1), x, psi_weight, psi_bias, eps)


def _instance_norm(q: torch.Tensor, eps: float) -> torch.Tensor:
    return F.instance_norm(q, eps=eps)


def _conv_projection(p: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.conv2d(p, weight.reshape(1, -1, 1, 1).to(p.dtype), bias.to(p.dtype))


def sum_projection(p: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """weight . p + bias over the channels, (N, C, H, W) -> (N, 1, H, W), as a product and a sum over C.

    The same value as the 1x1 convolution to one channel, and the same bits at any thread count: torch's
    CPU reduction splits its work over the outputs (the pixels), never within one pixel's sum, while
    oneDNN's convolution to one channel splits the channels between threads (1 and 2 threads differ by up
    to 3e-5 from 32x32 on). ``colorizer.native`` uses it so that a picture's bits do not depend on the
    thread count (the service runs a picture on all threads alone and on one when busy).
    """
    return (p * weight.reshape(1, -1, 1, 1).to(p.dtype)).sum(1, keepdim=True) + bias.to(p.dtype).reshape(1, -1, 1, 1)


def attention_gate_tail(
    p: torch.Tensor,
    x: torch.Tensor,
    psi_weight: torch.Tensor,
    psi_bias: torch.Tensor,
    eps: float = 1e-5,
    instance_norm: Callable[[torch.Tensor, float], torch.Tensor] = _instance_norm,
    project: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = _conv_projection,
) -> torch.Tensor:
    """The gate's tail after relu(GN(g) + GN(x)): x * sigmoid(InstanceNorm(psi_weight . p + psi_bias)).

    p: (N, F_int, H, W); x: (N, F_l, H, W); psi_weight (F_int,) standardized, psi_bias (1,).
    ``instance_norm(q, eps)`` normalizes the 1-channel map (default ``F.instance_norm``; the export
    graph passes its two-level statistics); ``project(p, psi_weight, psi_bias)`` is the projection to
    one channel (default a 1x1 convolution; ``sum_projection`` in the native backend). Shared by every
    backend's ``attention_gate``.
    """
    return x * torch.sigmoid(instance_norm(project(p, psi_weight, psi_bias), eps))


def check_kmeans_shapes(points: torch.Tensor, centers: torch.Tensor) -> int:
    """ValueError unless points (Bp, P, 3) and centers (B, K, 3) with B a multiple of Bp; returns B // Bp."""
    if points.dim() != 3 or points.shape[-1] != 3 or centers.dim() != 3 or centers.shape[-1] != 3:
        raise ValueError(f"points (B, P, 3) and centers (B, K, 3) expected, got {points.shape} and {centers.shape}")
    if points.shape[0] == 0 or centers.shape[0] % points.shape[0] != 0:
        raise ValueError(f"centers rows {centers.shape[0]} must be a multiple of points rows {points.shape[0]}")
    return centers.shape[0] // points.shape[0]


def kmeans_assign_accumulate(
    points: torch.Tensor, centers: torch.Tensor, weights: torch.Tensor | None = None, with_labels: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Lloyd step of K-means (the palette's): nearest center, per-cluster sums and counts, SSE.

    Args:
        points: (Bp, P, 3) float32, or uint8 (pixel values), the points (here 0..255).
        centers: float32 (B, K, 3) with B a multiple of Bp: center row b clusters points row
            b // (B // Bp), so restarts of one image can share its pixels (Bp == B: the plain case).
        weights: optional (Bp, P) point multiplicities, used as float32 (de-duplicated colors;
            0 = padding): each point counts ``weight`` times in sums, counts and sse. None = 1 each.
        with_labels: False lets a backend skip the labels (the largest output); ``labels`` is then None.

    Returns:
        labels: int64 (B, P) (int32 from Triton), index of the nearest center by squared Euclidean
            distance sum_c (x_c - c_c)^2 computed in float32; ties go to the lowest index.
        sums: float32 (B, K, 3), (weighted) sum of the points labeled k (0 for an empty cluster).
        counts: float32 (B, K), (weighted) number of points labeled k.
        sse: float32 (B,), (weighted) sum over points of the squared distance to the nearest center.

    Other implementations may compute distances differently (e.g. |x|^2 - 2 x.c + |c|^2) and so may
    pick another label where two centers are within float rounding of a tie; sums and counts then
    differ by that point, which the parity tests allow for.
    """
    repeat = check_kmeans_shapes(points, centers)
    pts = points.float()
    w = None if weights is None else weights.float()
    if repeat > 1:
        pts = pts.repeat_interleave(repeat, dim=0)
        w = None if w is None else w.repeat_interleave(repeat, dim=0)
    c = centers.float()
    # (B, K, P): the K axis leads so the min runs across contiguous slabs.
    d = (pts.transpose(1, 2)[:, None, :, :] - c[:, :, :, None]).square_().sum(dim=2)
    best, labels = d.min(dim=1)
    k = c.shape[1]
    onehot = (labels[:, None, :] == torch.arange(k, device=c.device)[None, :, None]).to(pts.dtype)
    if w is not None:
        onehot = onehot * w[:, None, :]
        best = best * w
    sums = torch.bmm(onehot, pts)
    counts = onehot.sum(dim=2)
    return labels if with_labels else None, sums, counts, best.sum(dim=1)
