"""Weight standardization of a conv weight, forward and backward (WSConv2d, Qiao et al. 2019).

    y = (w - mean) / (std + eps),  mean and unbiased std over each output channel's fan-in K

The math of ``colorizer.ops.reference.weight_standardize`` (oracle and CPU fallback). eps is added to
the std, not to the variance, as the reference model does. A fan-in of 1 has no unbiased std: the
result is NaN there, as in torch.

The weight is read as a (C_out, K) matrix straight from its storage: contiguous and channels_last
4-D weights both keep each output channel's K values in one contiguous row (the order inside a row
does not matter for a per-row mean and std), and y is allocated with w's strides. A program takes
[BLOCK_R rows, BLOCK_K columns] and walks a row in K_CHUNKS chunks, a compile-time count (a conv's
fan-in is at most a few thousand, so rows never need splitting across programs; there are always
C_out >= 1 rows to spread over programs instead).

Backward, with c = w - mean, s = std, d = s + eps:
    dw = (dy - mean(dy)) / d - c * sum(dy * c) / (d^2 * (K - 1) * s)
(the derivative of the mean cancels in the second term because sum(c) = 0).

Statistics in fp32; w and dy in fp32, bf16 or fp16; y and dw in w's dtype. Not needed at
inference: ``colorizer.models.fold_weight_standardization`` folds it to a constant.
"""

# ruff: noqa: N803 (Triton convention: pointer and constexpr arguments in capitals)
from __future__ import annotations

import torch
import triton
import triton.language as tl

from colorizer.kernels.backend import OP_LIBRARY, new_empty, new_empty_like, on_device_of_first_tensor, use_triton
from colorizer.kernels.tuning import row_tiling
from colorizer.ops import reference


@triton.jit(do_not_specialize=["R"])
def _ws_fwd_kernel(
    W,  # (R, K) weight rows, row stride K
    Y,  # (R, K) standardized weight, dtype of W
    MEAN,  # fp32 (R,) row mean
    STD,  # fp32 (R,) unbiased row std
    R,
    K,
    eps,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    K_CHUNKS: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    base = rows.to(tl.int64)[:, None] * K
    cols = tl.arange(0, BLOCK_K)
    kf = K * 1.0  # not .to(): K == 1 arrives as a compile-time constant
    if K_CHUNKS == 1:
        mask = rmask[:, None] & (cols[None, :] < K)
        w = tl.load(W + base + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(w, axis=1) / kf
        centered = tl.where(mask, w - mean[:, None], 0.0)
        std = tl.sqrt(tl.sum(centered * centered, axis=1) / (kf - 1.0))
        y = centered / (std + eps)[:, None]
        tl.store(Y + base + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    else:
        # Exact two-pass mean and variance over the row's chunks, then the write pass.
        total = tl.zeros([BLOCK_R], dtype=tl.float32)
        for k in tl.static_range(K_CHUNKS):
            kc = k * BLOCK_K + cols
            mask = rmask[:, None] & (kc[None, :] < K)
            total += tl.sum(tl.load(W + base + kc[None, :], mask=mask, other=0.0).to(tl.float32), axis=1)
        mean = total / kf
        m2 = tl.zeros([BLOCK_R], dtype=tl.float32)
        for k in tl.static_range(K_CHUNKS):
            kc = k * BLOCK_K + cols
            mask = rmask[:, None] & (kc[None, :] < K)
            w = tl.load(W + base + kc[None, :], mask=mask, other=0.0).to(tl.float32)
            centered = tl.where(mask, w - mean[:, None], 0.0)
            m2 += tl.sum(centered * centered, axis=1)
        std = tl.sqrt(m2 / (kf - 1.0))
        inv = 1.0 / (std + eps)
        for k in tl.static_range(K_CHUNKS):
            kc = k * BLOCK_K + cols
            mask = rmask[:, None] & (kc[None, :] < K)
            w = tl.load(W + base + kc[None, :], mask=mask, other=0.0).to(tl.float32)
            y = (w - mean[:, None]) * inv[:, None]
            tl.store(Y + base + kc[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(MEAN + rows, mean, mask=rmask)
    tl.store(STD + rows, std, mask=rmask)


@triton.jit(do_not_specialize=["R"])
def _ws_bwd_kernel(
    DY,  # (R, K) gradient of y, row stride K
    W,  # (R, K)
    MEAN,  # fp32 (R,)
    STD,  # fp32 (R,)
    DW,  # (R, K) gradient of w, dtype of W
    R,
    K,
    eps,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    K_CHUNKS: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    base = rows.to(tl.int64)[:, None] * K
    cols = tl.arange(0, BLOCK_K)
    kf = K * 1.0  # not .to(): K == 1 arrives as a compile-time constant
    mean = tl.load(MEAN + rows, mask=rmask, other=0.0)
    std = tl.load(STD + rows, mask=rmask, other=1.0)
    d = std + eps
    sum_dy = tl.zeros([BLOCK_R], dtype=tl.float32)
    sum_dyc = tl.zeros([BLOCK_R], dtype=tl.float32)
    for k in tl.static_range(K_CHUNKS):
        kc = k * BLOCK_K + cols
        mask = rmask[:, None] & (kc[None, :] < K)
        dy = tl.load(DY + base + kc[None, :], mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + base + kc[None, :], mask=mask, other=0.0).to(tl.float32)
        sum_dy += tl.sum(dy, axis=1)
        sum_dyc += tl.sum(dy * tl.where(mask, w - mean[:, None], 0.0), axis=1)
    a = 1.0 / d
    mdy = sum_dy / kf
    coef = sum_dyc / (d * d * (kf - 1.0) * std)
    for k in tl.static_range(K_CHUNKS):
        kc = k * BLOCK_K + cols
        mask = rmask[:, None] & (kc[None, :] < K)
        dy = tl.load(DY + base + kc[None, :], mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + base + kc[None, :], mask=mask, other=0.0).to(tl.float32)
        dw = (dy - mdy[:, None]) * a[:, None] - (w - mean[:, None]) * coef[:, None]
        tl.store(DW + base + kc[None, :], dw.to(DW.dtype.element_ty), mask=mask)


def _rows_view(w: torch.Tensor) -> torch.Tensor:
    """w itself when each output channel's fan-in is one contiguous row of its storage (contiguous
    or channels_last), else a contiguous copy."""
    if w.is_contiguous() or (w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last)):
        return w
    return w.contiguous()


def _like(t: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """t with template's strides (a copy only when they differ)."""
    if t.stride() == template.stride():
        return t
    return torch.empty_like(template, dtype=t.dtype).copy_(t)


@torch.library.custom_op(f"{OP_LIBRARY}::weight_standardize_forward", mutates_args=())
@on_device_of_first_tensor
def weight_standardize_forward(
    w: torch.Tensor, eps: float, block_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w: (C_out, ...) float. Returns y (w's shape, dtype and memory format), mean and std (fp32,
    (C_out,)). block_size: elements per program, 0 = tuned default."""
    w = _rows_view(w)
    rows = w.shape[0]
    k = w.numel() // max(rows, 1)
    y = new_empty_like(w)
    mean = new_empty((rows,), dtype=torch.float32, device=w.device)
    std = new_empty((rows,), dtype=torch.float32, device=w.device)
    if w.numel() == 0:
        return y, mean, std
    tiling = row_tiling(rows, k, block_size or None)
    _ws_fwd_kernel[(tiling.row_blocks,)](
        w,
        y,
        mean,
        std,
        rows,
        k,
        eps,
        BLOCK_R=tiling.block_r,
        BLOCK_K=tiling.block_k,
        K_CHUNKS=tiling.k_chunks,
        num_warps=tiling.num_warps,
    )
    return y, mean, std


@weight_standardize_forward.register_fake
def _(w, eps, block_size):
    rows = w.shape[0]
    return (
        torch.empty_like(w),
        w.new_empty((rows,), dtype=torch.float32),
        w.new_empty((rows,), dtype=torch.float32),
    )


@torch.library.custom_op(f"{OP_LIBRARY}::weight_standardize_backward", mutates_args=())
@on_device_of_first_tensor
def weight_standardize_backward(
    dy: torch.Tensor, w: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float, block_size: int
) -> torch.Tensor:
    """Gradient of the standardization w.r.t. w, in w's dtype and memory format."""
    w = _rows_view(w)
    dy = _like(dy, w)
    rows = w.shape[0]
    k = w.numel() // max(rows, 1)
    dw = new_empty_like(w)
    if w.numel() == 0:
        return dw
    tiling = row_tiling(rows, k, block_size or None)
    _ws_bwd_kernel[(tiling.row_blocks,)](
        dy,
        w,
        mean,
        std,
        dw,
        rows,
        k,
        eps,
        BLOCK_R=tiling.block_r,
        BLOCK_K=tiling.block_k,
        K_CHUNKS=tiling.k_chunks,
        num_warps=tiling.num_warps,
    )
    return dw


@weight_standardize_backward.register_fake
def _(dy, w, mean, std, eps, block_size):
    return torch.empty_like(w)


class WeightStandardizeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, eps, block_size):
        y, mean, std = weight_standardize_forward(w, eps, block_size)
        ctx.save_for_backward(w, mean, std)
        ctx.eps, ctx.block_size = eps, block_size
        return y

    @staticmethod
    def backward(ctx, dy):
        w, mean, std = ctx.saved_tensors
        return weight_standardize_backward(dy, w, mean, std, ctx.eps, ctx.block_size), None, None


def weight_standardize(w: torch.Tensor, eps: float = 1e-5, *, block_size: int | None = None) -> torch.Tensor:
    """(w - mean) / (unbiased std + eps) per output channel. w: (C_out, C_in, kh, kw) (any rank >= 1),
    fp32/bf16/fp16, contiguous or channels_last. Returns a tensor like w. block_size: elements per
    program (tests use a small one to exercise the chunked rows)."""
    if w.dim() < 1:
        raise ValueError("weight_standardize expects a weight with an output-channel dimension")
    if not use_triton(w):
        return reference.weight_standardize(w, eps)
    return WeightStandardizeFunction.apply(w, float(eps), int(block_size or 0))
