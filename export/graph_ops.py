"""The op set the generator is traced with for ONNX: GroupNorm with two-level statistics.

onnxruntime's CPU InstanceNormalization and ReduceMean sum a whole group (C/32 x H x W values, 32768
at 256 x 256) in one float32 accumulator, so their error grows with the group size: on a 64-channel
128 x 128 map it is ~4x PyTorch's GroupNorm (which uses cascaded sums), and over the generator's ~60
GroupNorms the exported model landed at 2-2.3x eager fp32's error against float64, on the edge of the
parity gate. Here the statistics are taken in levels: over W, then H, then the channels of a group;
every float32 sum then has at most max(W, H, C/G) terms, and the variance is taken of the centered
values (two passes). The result matches torch's GroupNorm to float32 rounding; the
cost is a few more elementwise passes than InstanceNormalization (measured in
benchmarks/bench_export.py). ``LEGACY_OPS`` keeps the plain decomposition for comparison. This module
is the ``onnx`` backend of ``colorizer.ops`` (``make_opset``); ``EXPORT_OPS`` is ``get_ops("onnx")``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from colorizer.ops import get_ops, reference


def group_norm_two_level(x: torch.Tensor, weight, bias, groups: int, eps: float) -> torch.Tensor:
    """GroupNorm of x (N, C, H, W) with per-channel affine weight, bias (C,) or None.

    Statistics in three short float32 sums (over W, then H, then the C/G channels of a group), each
    of the centered values for the variance. Only the small (N, C, 1, 1) statistics are reshaped,
    to constant shapes ([-1, G, C/G], [-1, C, 1, 1]), so the graph has no Shape/Gather arithmetic on
    the dynamic H and W.
    """
    # Channel counts are static: int() keeps the tracer from recording them as shape arithmetic.
    c = int(x.shape[1])
    per_group = c // groups

    def channel_to_group_mean(stat: torch.Tensor) -> torch.Tensor:
        # (N, C, 1, 1) per-channel means -> (N, C, 1, 1) holding each channel's group mean.
        g = stat.reshape(-1, groups, per_group).mean(dim=2, keepdim=True)
        return (g + stat.new_zeros(1, 1, per_group)).reshape(-1, c, 1, 1)

    mean = channel_to_group_mean(x.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True))
    centered = x - mean
    # Sum of squares per row as one fused reduction (ReduceL2), then the means over H and the group.
    row_norm = torch.linalg.vector_norm(centered, ord=2, dim=3, keepdim=True)
    var = channel_to_group_mean((row_norm * row_norm).mean(dim=2, keepdim=True)) / x.shape[3]
    scale = 1.0 / torch.sqrt(var + eps)  # (N, C, 1, 1)
    if weight is None:
        return centered * scale
    # The affine weight goes into the per-(sample, channel) scale: one full-size multiply-add.
    return centered * (scale * weight.view(1, -1, 1, 1)) + bias.view(1, -1, 1, 1)


def group_norm_act(
    x, weight, bias, groups=32, eps=1e-5, act=None, residual=None, noise_weight=None, noise=None
) -> torch.Tensor:
    """``colorizer.ops.reference.group_norm_act`` with two-level GroupNorm statistics."""
    y = group_norm_two_level(x, weight, bias, groups, eps)
    if residual is not None:
        y = y + residual
    y = reference.activate(y, act)
    if noise is not None:
        y = reference.noise_inject(y, noise_weight, noise)
    return y


def _instance_norm(q: torch.Tensor, eps: float) -> torch.Tensor:
    return group_norm_two_level(q, None, None, 1, eps)  # InstanceNorm of a 1-channel map


def attention_gate(
    g_proj, x_proj, x, g_norm_weight, g_norm_bias, x_norm_weight, x_norm_bias, psi_weight, psi_bias, groups=32, eps=1e-5
) -> torch.Tensor:
    """``colorizer.ops.reference.attention_gate`` with two-level GroupNorm / InstanceNorm statistics."""
    g1 = group_norm_two_level(g_proj, g_norm_weight, g_norm_bias, groups, eps)
    x1 = group_norm_two_level(x_proj, x_norm_weight, x_norm_bias, groups, eps)
    return reference.attention_gate_tail(F.relu(g1 + x1), x, psi_weight, psi_bias, eps, _instance_norm)


def make_opset() -> dict:
    """The ``onnx`` backend of ``colorizer.ops`` (registered in ``colorizer.ops.backends.BACKENDS``):
    the ops that differ from eager; the others are the reference's."""
    return {"group_norm_act": group_norm_act, "attention_gate": attention_gate}


EXPORT_OPS = get_ops("onnx")
LEGACY_OPS = get_ops("eager")
GRAPH_OPS = {"two-level": EXPORT_OPS, "instance-norm": LEGACY_OPS}
