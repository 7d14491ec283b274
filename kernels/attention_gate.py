"""The Attention U-Net gate after its two 1x1 convolutions, fused, forward and backward.

    g1 = GN(g_proj), x1 = GN(x_proj)                      (F_int channels, ``groups`` groups, affine)
    p  = relu(g1 + x1)
    q  = sum_c psi_weight[c] * p[c] + psi_bias              (one channel)
    qn = InstanceNorm(q) = (q - mean_hw q) / sqrt(var_hw q + eps)
    out = x * sigmoid(qn)                                   (x: F_l channels)

The math of ``colorizer.ops.reference.attention_gate`` (oracle and CPU fallback). The two GroupNorms
need their statistics before anything else, and the instance norm needs all of q: hence the passes.

Forward (tile of a "gate" program: all F_int channels, as [groups, channels per group, pixels], and a
chunk of pixels, so the projection to one channel is a reduction inside the program):
1. (only when a sample's pixels span several programs) chunk partials of both GroupNorms' statistics.
2. GN statistics (combined, or from the tile when one program holds the whole sample), p and q;
   q (fp32, (N, H*W)) and the chunk partials of its instance-norm statistics are written.
3. out = x * sigmoid(qn), tiles [all F_l channels, pixels] (a coalesced row on channels_last).
Reads g_proj and x_proj twice (once when a sample fits one program) and x once; writes out once.

Backward, with s = sigmoid(qn), ds = sum_c dout * x, dqn = ds * s * (1 - s):
1. dx = dout * s; dqn and the chunk sums of dqn and dqn * qn (tiles of all F_l channels).
2. dq = rstd_q * (dqn - mean(dqn) - qn * mean(dqn * qn)); dp = dq * psi_weight[c] * [p > 0];
   fp32 partials of d psi_weight = sum dq * p, d psi_bias = sum dq, the GroupNorm weight/bias
   gradients, and the two group sums each GroupNorm backward needs; dq is written (N, H*W).
3. d g_proj and d x_proj from dp and the combined group sums (fused with 2 when one program holds
   the whole sample).
Parameter gradients are fp32 partials (N, chunks, C) summed in a fixed shape: deterministic.

Dtypes: activations fp32/bf16/fp16, NCHW or channels_last (read through strides as (N, C, H*W));
statistics and arithmetic fp32; outputs and gradients in their input's dtype.
"""

# ruff: noqa: N803 (Triton convention: pointer and constexpr arguments in capitals)
from __future__ import annotations

import torch
import triton
import triton.language as tl

from colorizer.kernels.backend import (
    OP_LIBRARY,
    flat_spatial,
    new_empty,
    new_empty_like,
    on_device_of_first_tensor,
    use_triton,
)
from colorizer.kernels.group_norm_act import (
    _combine_group_stats,
    _flat_channels,
    _load_tile,
    _store_tile,
    _tile_stats,
)
from colorizer.kernels.tuning import all_groups_tiling, pixel_rows_tiling
from colorizer.ops import reference


@triton.jit
def _gate_tile(s, G, CG, HW, BLOCK_G: tl.constexpr, BLOCK_CG: tl.constexpr, BLOCK_HW: tl.constexpr):
    """All groups x a chunk of pixels: g [BLOCK_G], c [BLOCK_G, BLOCK_CG], hw [BLOCK_HW], masks."""
    g = tl.arange(0, BLOCK_G)
    j = tl.arange(0, BLOCK_CG)
    hw = s * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c = g[:, None] * CG + j[None, :]
    cmask = (g[:, None] < G) & (j[None, :] < CG)
    hmask = hw < HW
    mask = cmask[:, :, None] & hmask[None, None, :]
    return g, c, hw, cmask, hmask, mask


@triton.jit
def _normalize(v, mean, rstd, W, B, c, cmask, mask):
    """vhat = (v - mean) * rstd (0 where masked) and GN(v) = vhat * W[c] + B[c], both [G, CG, HW]."""
    vhat = tl.where(mask, (v - mean[:, None, None]) * rstd[:, None, None], 0.0)
    w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32)
    b = tl.load(B + c, mask=cmask, other=0.0).to(tl.float32)
    return vhat, vhat * w[:, :, None] + b[:, :, None]


@triton.jit(do_not_specialize=["N", "SPLITS"])
def _attention_gate_fwd_kernel(
    GP,  # g_proj (N, F, HW) by strides sg*
    XP,  # x_proj (N, F, HW) by strides sx*
    GW,  # (F,) GroupNorm weight of g_proj
    GB,
    XW,  # (F,) GroupNorm weight of x_proj
    XB,
    PSI_W,  # (F,) standardized projection weight
    PSI_B,  # (1,) projection bias
    Q,  # fp32 (N, HW) projection q, written by PHASE 0 and 2
    PSTATS,  # fp32 (4, N*G, SPLITS): chunk mean and M2 of g_proj, then of x_proj (PHASE 1 -> 2)
    STATS,  # fp32 (4, N*G): mean_g, rstd_g, mean_x, rstd_x; written by chunk 0
    PQ,  # fp32 (2, N, SPLITS): chunk mean and M2 of q
    N,
    G,
    CG,
    HW,
    SPLITS,
    sgn,
    sgc,
    sghw,
    sxn,
    sxc,
    sxhw,
    eps,
    PHASE: tl.constexpr,  # 0: one program per sample; 1: GN chunk partials; 2: q from partials
    FLAT: tl.constexpr,  # CG == BLOCK_CG: activations through one flat channel axis
    BLOCK_G: tl.constexpr,
    BLOCK_CG: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    SPLITS_PAD: tl.constexpr,
):
    n = tl.program_id(0)
    s = tl.program_id(1)
    g, c, hw, cmask, hmask, mask = _gate_tile(s, G, CG, HW, BLOCK_G, BLOCK_CG, BLOCK_HW)
    cf, mask2 = _flat_channels(0, G * CG, hmask, BLOCK_G * BLOCK_CG)
    n64 = n.to(tl.int64)
    c3 = c[:, :, None]
    hw3 = hw[None, None, :]
    row = n * G + g
    gmask = g < G
    rows = N * G
    gp = _load_tile(GP, n64 * sgn, sgc, sghw, c3, hw3, mask, cf, hw, mask2, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
    xp = _load_tile(XP, n64 * sxn, sxc, sxhw, c3, hw3, mask, cf, hw, mask2, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
    if PHASE == 1:
        _, gmean, gm2 = _tile_stats(gp, mask)
        _, xmean, xm2 = _tile_stats(xp, mask)
        part = row * SPLITS + s
        tl.store(PSTATS + part, gmean, mask=gmask)
        tl.store(PSTATS + rows * SPLITS + part, gm2, mask=gmask)
        tl.store(PSTATS + 2 * rows * SPLITS + part, xmean, mask=gmask)
        tl.store(PSTATS + 3 * rows * SPLITS + part, xm2, mask=gmask)
    else:
        if PHASE == 0:
            count, gmean, gm2 = _tile_stats(gp, mask)
            _, xmean, xm2 = _tile_stats(xp, mask)
            gvar = gm2 / tl.maximum(count, 1.0)
            xvar = xm2 / tl.maximum(count, 1.0)
        else:
            gmean, gvar = _combine_group_stats(
                PSTATS, PSTATS + rows * SPLITS, row, gmask, CG, HW, SPLITS, BLOCK_HW, SPLITS_PAD
            )
            xmean, xvar = _combine_group_stats(
                PSTATS + 2 * rows * SPLITS, PSTATS + 3 * rows * SPLITS, row, gmask, CG, HW, SPLITS, BLOCK_HW, SPLITS_PAD
            )
        grstd = 1.0 / tl.sqrt(gvar + eps)
        xrstd = 1.0 / tl.sqrt(xvar + eps)
        first = g < tl.where(s == 0, G, 0)  # chunk 0 stores the statistics once
        tl.store(STATS + row, gmean, mask=first)
        tl.store(STATS + rows + row, grstd, mask=first)
        tl.store(STATS + 2 * rows + row, xmean, mask=first)
        tl.store(STATS + 3 * rows + row, xrstd, mask=first)
        _, g1 = _normalize(gp, gmean, grstd, GW, GB, c, cmask, mask)
        _, x1 = _normalize(xp, xmean, xrstd, XW, XB, c, cmask, mask)
        p = tl.where(mask, tl.maximum(g1 + x1, 0.0), 0.0)
        psi_w = tl.load(PSI_W + c, mask=cmask, other=0.0).to(tl.float32)
        psi_b = tl.load(PSI_B).to(tl.float32)
        q = tl.sum(tl.sum(p * psi_w[:, :, None], axis=1), axis=0) + psi_b
        tl.store(Q + n64 * HW + hw, q, mask=hmask)
        count = tl.sum(hmask.to(tl.float32), axis=0)
        qmean = tl.sum(tl.where(hmask, q, 0.0), axis=0) / count
        dev = tl.where(hmask, q - qmean, 0.0)
        tl.store(PQ + n * SPLITS + s, qmean)
        tl.store(PQ + N * SPLITS + n * SPLITS + s, tl.sum(dev * dev, axis=0))


@triton.jit
def _q_stats(PQ, n, N, HW, Q_SPLITS, Q_BLOCK_HW: tl.constexpr, Q_SPLITS_PAD: tl.constexpr, eps):
    """Instance-norm mean and rstd of q for sample n (shape [1]) from the gate pass's partials."""
    row = n + tl.zeros([1], dtype=tl.int32)
    mean, var = _combine_group_stats(PQ, PQ + N * Q_SPLITS, row, row < N, 1, HW, Q_SPLITS, Q_BLOCK_HW, Q_SPLITS_PAD)
    return mean, 1.0 / tl.sqrt(var + eps)


@triton.jit(do_not_specialize=["N", "Q_SPLITS"])
def _attention_gate_out_kernel(
    X,  # (N, L, HW) features to gate, by strides sx*
    Q,  # fp32 (N, HW)
    PQ,  # fp32 (2, N, Q_SPLITS) q chunk partials
    QSTATS,  # fp32 (2, N): instance-norm mean and rstd of q, written by chunk 0
    OUT,  # (N, L, HW) by strides so*, dtype of X
    N,
    L,
    HW,
    Q_SPLITS,
    sxn,
    sxc,
    sxhw,
    son,
    soc,
    sohw,
    eps,
    Q_BLOCK_HW: tl.constexpr,
    Q_SPLITS_PAD: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    n = tl.program_id(0)
    s = tl.program_id(1)
    n64 = n.to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    hw = s * BLOCK_HW + tl.arange(0, BLOCK_HW)
    hmask = hw < HW
    mask = (c < L)[:, None] & hmask[None, :]
    qmean, qrstd = _q_stats(PQ, n, N, HW, Q_SPLITS, Q_BLOCK_HW, Q_SPLITS_PAD, eps)
    first = tl.arange(0, 1) < tl.where(s == 0, 1, 0)
    tl.store(QSTATS + n + tl.arange(0, 1), qmean, mask=first)
    tl.store(QSTATS + N + n + tl.arange(0, 1), qrstd, mask=first)
    q = tl.load(Q + n64 * HW + hw, mask=hmask, other=0.0)
    gate = tl.sigmoid((q - qmean) * qrstd)
    x = tl.load(X + n64 * sxn + c[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(tl.float32)
    out = x * gate[None, :]
    tl.store(OUT + n64 * son + c[:, None] * soc + hw[None, :] * sohw, out.to(OUT.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["N"])
def _attention_gate_bwd_gate_kernel(
    DOUT,  # (N, L, HW) by strides sd*
    X,  # (N, L, HW) by strides sx*
    Q,  # fp32 (N, HW)
    QSTATS,  # fp32 (2, N)
    DX,  # (N, L, HW) by strides sdx*, dtype of X
    DQN,  # fp32 (N, HW) gradient of the normalised q
    PDQN,  # fp32 (2, N, X_SPLITS): chunk sums of dqn and dqn * qn
    N,
    L,
    HW,
    sdn,
    sdc,
    sdhw,
    sxn,
    sxc,
    sxhw,
    sdxn,
    sdxc,
    sdxhw,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    n = tl.program_id(0)
    s = tl.program_id(1)
    splits = tl.num_programs(1)
    n64 = n.to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    hw = s * BLOCK_HW + tl.arange(0, BLOCK_HW)
    hmask = hw < HW
    mask = (c < L)[:, None] & hmask[None, :]
    qmean = tl.load(QSTATS + n)
    qrstd = tl.load(QSTATS + N + n)
    qn = (tl.load(Q + n64 * HW + hw, mask=hmask, other=0.0) - qmean) * qrstd
    gate = tl.sigmoid(qn)
    dout = tl.load(DOUT + n64 * sdn + c[:, None] * sdc + hw[None, :] * sdhw, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(X + n64 * sxn + c[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(tl.float32)
    dx = dout * gate[None, :]
    tl.store(DX + n64 * sdxn + c[:, None] * sdxc + hw[None, :] * sdxhw, dx.to(DX.dtype.element_ty), mask=mask)
    dgate = tl.sum(dout * x, axis=0)
    dqn = tl.where(hmask, dgate * gate * (1.0 - gate), 0.0)
    tl.store(DQN + n64 * HW + hw, dqn, mask=hmask)
    tl.store(PDQN + n * splits + s, tl.sum(dqn, axis=0))
    tl.store(PDQN + N * splits + n * splits + s, tl.sum(dqn * tl.where(hmask, qn, 0.0), axis=0))


@triton.jit(do_not_specialize=["N", "SPLITS", "X_SPLITS"])
def _attention_gate_bwd_kernel(
    GP,  # g_proj (N, F, HW) by strides sg*
    XP,  # x_proj (N, F, HW) by strides sx*
    GW,
    GB,
    XW,
    XB,
    PSI_W,  # (F,)
    Q,  # fp32 (N, HW)
    QSTATS,  # fp32 (2, N)
    DQN,  # fp32 (N, HW)
    PDQN,  # fp32 (2, N, X_SPLITS)
    STATS,  # fp32 (4, N*G)
    DQ,  # fp32 (N, HW) gradient of q (PHASE 1 -> 2)
    PPARAM,  # fp32 (6, N, SPLITS, F): d psi_w, d gw, d gb, d xw, d xb partials; d psi_b in plane 5, column 0
    PC,  # fp32 (4, N*G, SPLITS): group sums c1, c2 of g, then of x (PHASE 1 -> 2)
    DGP,  # (N, F, HW) by strides sdg*, dtype of GP
    DXP,  # (N, F, HW) by strides sdx*, dtype of XP
    N,
    G,
    CG,
    HW,
    SPLITS,
    X_SPLITS,
    sgn,
    sgc,
    sghw,
    sxn,
    sxc,
    sxhw,
    sdgn,
    sdgc,
    sdghw,
    sdxn,
    sdxc,
    sdxhw,
    PHASE: tl.constexpr,  # 0: one program per sample; 1: partial sums; 2: input gradients from partials
    FLAT: tl.constexpr,  # CG == BLOCK_CG: activations through one flat channel axis
    BLOCK_G: tl.constexpr,
    BLOCK_CG: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    SPLITS_PAD: tl.constexpr,
    X_SPLITS_PAD: tl.constexpr,
):
    n = tl.program_id(0)
    s = tl.program_id(1)
    g, c, hw, cmask, hmask, mask = _gate_tile(s, G, CG, HW, BLOCK_G, BLOCK_CG, BLOCK_HW)
    cf, mask2 = _flat_channels(0, G * CG, hmask, BLOCK_G * BLOCK_CG)
    n64 = n.to(tl.int64)
    c3 = c[:, :, None]
    hw3 = hw[None, None, :]
    row = n * G + g
    gmask = g < G
    rows = N * G
    F = G * CG
    gp = _load_tile(GP, n64 * sgn, sgc, sghw, c3, hw3, mask, cf, hw, mask2, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
    xp = _load_tile(XP, n64 * sxn, sxc, sxhw, c3, hw3, mask, cf, hw, mask2, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
    gmean = tl.load(STATS + row, mask=gmask, other=0.0)
    grstd = tl.load(STATS + rows + row, mask=gmask, other=0.0)
    xmean = tl.load(STATS + 2 * rows + row, mask=gmask, other=0.0)
    xrstd = tl.load(STATS + 3 * rows + row, mask=gmask, other=0.0)
    ghat, g1 = _normalize(gp, gmean, grstd, GW, GB, c, cmask, mask)
    xhat, x1 = _normalize(xp, xmean, xrstd, XW, XB, c, cmask, mask)
    pre = g1 + x1
    psi_w = tl.load(PSI_W + c, mask=cmask, other=0.0).to(tl.float32)
    if PHASE == 2:
        dq = tl.load(DQ + n64 * HW + hw, mask=hmask, other=0.0)
    else:
        # Instance-norm backward: needs the sums of dqn and dqn * qn over all pixels of the sample.
        k = tl.arange(0, X_SPLITS_PAD)
        kmask = k < X_SPLITS
        sum_dqn = tl.sum(tl.load(PDQN + n * X_SPLITS + k, mask=kmask, other=0.0), axis=0)
        sum_dqn_qn = tl.sum(tl.load(PDQN + N * X_SPLITS + n * X_SPLITS + k, mask=kmask, other=0.0), axis=0)
        qmean = tl.load(QSTATS + n)
        qrstd = tl.load(QSTATS + N + n)
        qn = (tl.load(Q + n64 * HW + hw, mask=hmask, other=0.0) - qmean) * qrstd
        dqn = tl.load(DQN + n64 * HW + hw, mask=hmask, other=0.0)
        inv_hw = 1.0 / (HW * 1.0)
        dq = tl.where(hmask, qrstd * (dqn - sum_dqn * inv_hw - qn * (sum_dqn_qn * inv_hw)), 0.0)
    dp = tl.where(pre > 0, dq[None, None, :] * psi_w[:, :, None], 0.0)
    gw = tl.load(GW + c, mask=cmask, other=0.0).to(tl.float32)
    xw = tl.load(XW + c, mask=cmask, other=0.0).to(tl.float32)
    dghat = dp * gw[:, :, None]
    dxhat = dp * xw[:, :, None]
    if PHASE != 2:
        p = tl.where(mask, tl.maximum(pre, 0.0), 0.0)
        plane = N * SPLITS * F
        pofs = (n64 * SPLITS + s) * F + c
        tl.store(PPARAM + pofs, tl.sum(p * dq[None, None, :], axis=2), mask=cmask)
        tl.store(PPARAM + plane + pofs, tl.sum(dp * ghat, axis=2), mask=cmask)
        tl.store(PPARAM + 2 * plane + pofs, tl.sum(dp, axis=2), mask=cmask)
        tl.store(PPARAM + 3 * plane + pofs, tl.sum(dp * xhat, axis=2), mask=cmask)
        tl.store(PPARAM + 4 * plane + pofs, tl.sum(dp, axis=2), mask=cmask)
        tl.store(PPARAM + 5 * plane + pofs, tl.where(c == 0, tl.sum(dq, axis=0), 0.0), mask=cmask)
    if PHASE == 1:
        tl.store(DQ + n64 * HW + hw, dq, mask=hmask)
        part = row * SPLITS + s
        tl.store(PC + part, tl.sum(tl.sum(dghat * ghat, axis=2), axis=1), mask=gmask)
        tl.store(PC + rows * SPLITS + part, tl.sum(tl.sum(dghat, axis=2), axis=1), mask=gmask)
        tl.store(PC + 2 * rows * SPLITS + part, tl.sum(tl.sum(dxhat * xhat, axis=2), axis=1), mask=gmask)
        tl.store(PC + 3 * rows * SPLITS + part, tl.sum(tl.sum(dxhat, axis=2), axis=1), mask=gmask)
    else:
        if PHASE == 0:
            c1g = tl.sum(tl.sum(dghat * ghat, axis=2), axis=1)
            c2g = tl.sum(tl.sum(dghat, axis=2), axis=1)
            c1x = tl.sum(tl.sum(dxhat * xhat, axis=2), axis=1)
            c2x = tl.sum(tl.sum(dxhat, axis=2), axis=1)
        else:
            k = tl.arange(0, SPLITS_PAD)
            kmask = gmask[:, None] & (k[None, :] < SPLITS)
            offs = row[:, None] * SPLITS + k[None, :]
            c1g = tl.sum(tl.load(PC + offs, mask=kmask, other=0.0), axis=1)
            c2g = tl.sum(tl.load(PC + rows * SPLITS + offs, mask=kmask, other=0.0), axis=1)
            c1x = tl.sum(tl.load(PC + 2 * rows * SPLITS + offs, mask=kmask, other=0.0), axis=1)
            c2x = tl.sum(tl.load(PC + 3 * rows * SPLITS + offs, mask=kmask, other=0.0), axis=1)
        inv_count = 1.0 / (CG * HW * 1.0)
        dg = (dghat - (c2g[:, None, None] + ghat * c1g[:, None, None]) * inv_count) * grstd[:, None, None]
        dx = (dxhat - (c2x[:, None, None] + xhat * c1x[:, None, None]) * inv_count) * xrstd[:, None, None]
        _store_tile(DGP, n64 * sdgn, sdgc, sdghw, c3, hw3, mask, cf, hw, mask2, dg, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
        _store_tile(DXP, n64 * sdxn, sdxc, sdxhw, c3, hw3, mask, cf, hw, mask2, dx, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)


# --------------------------------------------------------------------------------------------------
# Launchers (torch.library custom ops)
# --------------------------------------------------------------------------------------------------


def _tilings(g_proj: torch.Tensor, x: torch.Tensor, groups: int, block_size: int):
    n, f, h, w = g_proj.shape
    gate = all_groups_tiling(groups, f // groups, h * w, block_size or None)
    feat = pixel_rows_tiling(x.shape[1], h * w, block_size or None)
    return gate, feat


@torch.library.custom_op(f"{OP_LIBRARY}::attention_gate_forward", mutates_args=())
@on_device_of_first_tensor
def attention_gate_forward(
    g_proj: torch.Tensor,
    x_proj: torch.Tensor,
    x: torch.Tensor,
    g_norm_weight: torch.Tensor,
    g_norm_bias: torch.Tensor,
    x_norm_weight: torch.Tensor,
    x_norm_bias: torch.Tensor,
    psi_weight: torch.Tensor,
    psi_bias: torch.Tensor,
    groups: int,
    eps: float,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns out (like x), GN statistics (fp32 (4, N, groups): mean and rstd of g_proj, then of
    x_proj), q (fp32 (N, H*W)) and the instance-norm mean and rstd of q (fp32 (2, N))."""
    n, f, h, w = g_proj.shape
    hw = h * w
    dev = x.device
    gate, feat = _tilings(g_proj, x, groups, block_size)
    out = new_empty_like(x)
    stats = new_empty((4, n, groups), dtype=torch.float32, device=dev)
    q = new_empty((n, hw), dtype=torch.float32, device=dev)
    qstats = new_empty((2, n), dtype=torch.float32, device=dev)
    if n * hw == 0:
        return out, stats, q, qstats
    gs, sgn, sgc, sghw = flat_spatial(g_proj)
    xps, sxn, sxc, sxhw = flat_spatial(x_proj)
    pq = new_empty((2, n, gate.splits), dtype=torch.float32, device=dev)
    tensors = (gs, xps, g_norm_weight, g_norm_bias, x_norm_weight, x_norm_bias, psi_weight, psi_bias, q)
    scalars = (n, groups, f // groups, hw, gate.splits, sgn, sgc, sghw, sxn, sxc, sxhw, eps)
    meta = dict(
        FLAT=f // groups == gate.block_cg,
        BLOCK_G=gate.block_g,
        BLOCK_CG=gate.block_cg,
        BLOCK_HW=gate.block_hw,
        SPLITS_PAD=gate.splits_pad,
        num_warps=gate.num_warps,
    )
    if gate.fused:
        _attention_gate_fwd_kernel[(n, 1)](*tensors, pq, stats, pq, *scalars, PHASE=0, **meta)
    else:
        pstats = new_empty((4, n * groups, gate.splits), dtype=torch.float32, device=dev)
        for phase in (1, 2):
            _attention_gate_fwd_kernel[(n, gate.splits)](*tensors, pstats, stats, pq, *scalars, PHASE=phase, **meta)
    xs, sxn, sxc, sxhw = flat_spatial(x)
    _, son, soc, sohw = flat_spatial(out)
    _attention_gate_out_kernel[(n, feat.splits)](
        xs,
        q,
        pq,
        qstats,
        out,
        n,
        x.shape[1],
        hw,
        gate.splits,
        sxn,
        sxc,
        sxhw,
        son,
        soc,
        sohw,
        eps,
        Q_BLOCK_HW=gate.block_hw,
        Q_SPLITS_PAD=gate.splits_pad,
        BLOCK_C=feat.block_cg,
        BLOCK_HW=feat.block_hw,
        num_warps=feat.num_warps,
    )
    return out, stats, q, qstats


@attention_gate_forward.register_fake
def _(g_proj, x_proj, x, gw, gb, xw, xb, psi_w, psi_b, groups, eps, block_size):
    n, _, h, w = g_proj.shape
    f32 = torch.float32
    return (
        torch.empty_like(x),
        x.new_empty((4, n, groups), dtype=f32),
        x.new_empty((n, h * w), dtype=f32),
        x.new_empty((2, n), dtype=f32),
    )


@torch.library.custom_op(f"{OP_LIBRARY}::attention_gate_backward", mutates_args=())
@on_device_of_first_tensor
def attention_gate_backward(
    dout: torch.Tensor,
    g_proj: torch.Tensor,
    x_proj: torch.Tensor,
    x: torch.Tensor,
    g_norm_weight: torch.Tensor,
    g_norm_bias: torch.Tensor,
    x_norm_weight: torch.Tensor,
    x_norm_bias: torch.Tensor,
    psi_weight: torch.Tensor,
    stats: torch.Tensor,
    q: torch.Tensor,
    qstats: torch.Tensor,
    groups: int,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns the gradients of g_proj, x_proj and x, and dparams fp32 (6, F_int): the gradients of
    psi_weight, g_norm_weight, g_norm_bias, x_norm_weight, x_norm_bias, and psi_bias in [5, 0]."""
    n, f, h, w = g_proj.shape
    hw = h * w
    dev = x.device
    gate, feat = _tilings(g_proj, x, groups, block_size)
    dgp = new_empty_like(g_proj)
    dxp = new_empty_like(x_proj)
    dx = new_empty_like(x)
    f32 = torch.float32
    pparam = new_empty((6, n, gate.splits, f), dtype=f32, device=dev)
    if n * hw == 0:
        pparam.zero_()
    else:
        ds, sdn, sdc, sdhw = flat_spatial(dout)
        xs, sxn, sxc, sxhw = flat_spatial(x)
        _, sdxn, sdxc, sdxhw = flat_spatial(dx)
        dqn = new_empty((n, hw), dtype=f32, device=dev)
        pdqn = new_empty((2, n, feat.splits), dtype=f32, device=dev)
        _attention_gate_bwd_gate_kernel[(n, feat.splits)](
            ds,
            xs,
            q,
            qstats,
            dx,
            dqn,
            pdqn,
            n,
            x.shape[1],
            hw,
            sdn,
            sdc,
            sdhw,
            sxn,
            sxc,
            sxhw,
            sdxn,
            sdxc,
            sdxhw,
            BLOCK_C=feat.block_cg,
            BLOCK_HW=feat.block_hw,
            num_warps=feat.num_warps,
        )
        gs, sgn, sgc, sghw = flat_spatial(g_proj)
        xps, sxpn, sxpc, sxphw = flat_spatial(x_proj)
        _, sdgn, sdgc, sdghw = flat_spatial(dgp)
        _, sdxpn, sdxpc, sdxphw = flat_spatial(dxp)
        dq = new_empty((n, hw), dtype=f32, device=dev)
        pc = new_empty((4, n * groups, gate.splits), dtype=f32, device=dev)
        tensors = (gs, xps, g_norm_weight, g_norm_bias, x_norm_weight, x_norm_bias, psi_weight, q, qstats, dqn, pdqn)
        tensors += (stats, dq, pparam, pc, dgp, dxp)
        scalars = (n, groups, f // groups, hw, gate.splits, feat.splits, sgn, sgc, sghw, sxpn, sxpc, sxphw)
        scalars += (sdgn, sdgc, sdghw, sdxpn, sdxpc, sdxphw)
        meta = dict(
            FLAT=f // groups == gate.block_cg,
            BLOCK_G=gate.block_g,
            BLOCK_CG=gate.block_cg,
            BLOCK_HW=gate.block_hw,
            SPLITS_PAD=gate.splits_pad,
            X_SPLITS_PAD=feat.splits_pad,
            num_warps=gate.num_warps,
        )
        for phase in (0,) if gate.fused else (1, 2):
            _attention_gate_bwd_kernel[(n, gate.splits)](*tensors, *scalars, PHASE=phase, **meta)
    # One fixed-shape reduction for all parameter gradients (deterministic); the autograd Function
    # splits and casts them (custom-op outputs may not alias each other).
    return dgp, dxp, dx, pparam.sum(dim=(1, 2))


@attention_gate_backward.register_fake
def _(dout, g_proj, x_proj, x, gw, gb, xw, xb, psi_w, stats, q, qstats, groups, block_size):
    return (
        torch.empty_like(g_proj),
        torch.empty_like(x_proj),
        torch.empty_like(x),
        g_proj.new_empty((6, g_proj.shape[1]), dtype=torch.float32),
    )


# --------------------------------------------------------------------------------------------------
# Autograd and functional
# --------------------------------------------------------------------------------------------------


class AttentionGateFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g_proj, x_proj, x, gw, gb, xw, xb, psi_w, psi_b, groups, eps, block_size):
        out, stats, q, qstats = attention_gate_forward(
            g_proj, x_proj, x, gw, gb, xw, xb, psi_w, psi_b, groups, eps, block_size
        )
        ctx.save_for_backward(g_proj, x_proj, x, gw, gb, xw, xb, psi_w, stats, q, qstats)
        ctx.groups, ctx.block_size = groups, block_size
        ctx.psi_bias_dtype = psi_b.dtype
        return out

    @staticmethod
    def backward(ctx, dout):
        g_proj, x_proj, x, gw, gb, xw, xb, psi_w, stats, q, qstats = ctx.saved_tensors
        dgp, dxp, dx, dp = attention_gate_backward(
            dout, g_proj, x_proj, x, gw, gb, xw, xb, psi_w, stats, q, qstats, ctx.groups, ctx.block_size
        )
        params = (dp[1].to(gw.dtype), dp[2].to(gb.dtype), dp[3].to(xw.dtype), dp[4].to(xb.dtype))
        dpsi_b = dp[5, :1].to(ctx.psi_bias_dtype)
        return (dgp, dxp, dx, *params, dp[0].to(psi_w.dtype), dpsi_b, None, None, None)


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
    *,
    block_size: int | None = None,
) -> torch.Tensor:
    """x * sigmoid(InstanceNorm(psi_weight . relu(GN(g_proj) + GN(x_proj)) + psi_bias)), fused.

    g_proj, x_proj: (N, F_int, H, W); x: (N, F_l, H, W); NCHW or channels_last, fp32/bf16/fp16.
    g/x norm weight and bias, psi_weight: (F_int,) (psi_weight already standardized); psi_bias: (1,).
    Returns a tensor like x. block_size: elements of one group per program (tests use a small one to
    force the split reductions).
    """
    if g_proj.dim() != 4 or x_proj.shape != g_proj.shape or x.dim() != 4:
        raise ValueError(
            f"attention_gate expects g_proj and x_proj of one (N, F_int, H, W) shape and x (N, F_l, H, W), got "
            f"{tuple(g_proj.shape)}, {tuple(x_proj.shape)}, {tuple(x.shape)}"
        )
    n, f, h, w = g_proj.shape
    if x.shape[0] != n or x.shape[2:] != g_proj.shape[2:]:
        raise ValueError(f"x {tuple(x.shape)} does not match the projections {tuple(g_proj.shape)} in N, H, W")
    if h * w < 2:
        raise ValueError(f"the gate's instance norm needs more than one pixel, got {h}x{w} (as torch's)")
    if groups < 1 or f % groups:
        raise ValueError(f"{f} channels cannot be split into {groups} groups")
    for name, p in (("g_norm_weight", g_norm_weight), ("g_norm_bias", g_norm_bias), ("x_norm_weight", x_norm_weight)):
        if p.shape != (f,):
            raise ValueError(f"{name} must have shape ({f},), got {tuple(p.shape)}")
    if x_norm_bias.shape != (f,) or psi_weight.numel() != f or psi_bias.numel() != 1:
        raise ValueError(f"x_norm_bias and psi_weight need {f} values and psi_bias one")
    if not use_triton(x):
        return reference.attention_gate(
            g_proj, x_proj, x, g_norm_weight, g_norm_bias, x_norm_weight, x_norm_bias, psi_weight, psi_bias, groups, eps
        )
    return AttentionGateFunction.apply(
        g_proj,
        x_proj,
        x,
        g_norm_weight,
        g_norm_bias,
        x_norm_weight,
        x_norm_bias,
        psi_weight.reshape(-1),
        psi_bias.reshape(-1),
        groups,
        float(eps),
        int(block_size or 0),
    )
