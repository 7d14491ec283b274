"""Fused GroupNorm + residual add + activation + noise injection, forward and backward.

    y = act(GroupNorm(x; weight, bias) + residual) + noise_weight[c] * noise[n, 0, h, w]

The math of ``colorizer.ops.reference.group_norm_act`` (its oracle and CPU fallback), in one pass
over x where a group fits one program, two where it does not.

Layout. x, residual, noise and the gradients are (N, C, H, W) tensors read through their strides as
(N, C, H*W): contiguous NCHW, channels_last and broadcast (zero-stride) views all work without a
copy; the output keeps x's memory format. A program holds a tile [BLOCK_G groups, BLOCK_CG channels,
BLOCK_HW pixels]: several small groups share a program (on channels_last a whole pixel row is then
one coalesced read), and a large group is split along H*W into ``splits`` programs.

Forward (statistics in fp32, biased variance as torch's GroupNorm):
- fused (splits == 1): one kernel computes the group's mean/variance from the tile it holds and
  writes y: one read of x (and residual, noise), one write of y.
- split: ``PHASE=1`` writes each chunk's (mean, M2) partial; ``PHASE=2`` combines a group's partials
  in a fixed order (Chan's parallel variance formula, deterministic) and writes y. The program of
  chunk 0 stores mean and rstd (N, G) for the backward.

Noise: a (N, 1, H, W) tensor (what the model passes), or drawn inside the kernel from Philox
(``noise_seed``, ``noise_offset``; the stream of ``noise_inject.noise_inject_philox``), then nothing
is stored for the backward, which draws it again.

Backward, with xhat = (x - mean) * rstd, z = xhat * weight + bias + residual and dz = dy * act'(z):
    dweight[c] = sum dz * xhat,  dbias[c] = sum dz,  dnoise_weight[c] = sum dy * noise,
    dresidual = dz,  dx = rstd * (dxhat - mean_g(dxhat) - xhat * mean_g(dxhat * xhat)),  dxhat = dz * w.
Per-channel sums are written as fp32 partials (2 or 3 planes, N, splits, C) and reduced by one
torch.sum in a fixed shape for all parameters together (deterministic, no atomics); the two group
sums are partials (N*G, splits) combined by the second pass (or in the tile itself when fused). On
the split path with a residual, the first pass writes dresidual = dz and the second reads it back
instead of dy and the residual (7 tensor passes instead of 8). d(noise) = sum_c dy * noise_weight[c]
is computed with torch, only when the noise map requires grad (the model's noise never does).

Passes over memory (activation-sized tensors; forward / backward): fused 3 / 5 with a residual
(x, r -> y; x, dy, r -> dx, dr), split 4 / 7: x is read once more in each direction, since a group
spread over several programs needs its statistics before anything can be normalised (a single pass
would need a grid-wide barrier, which Triton does not have).

Dtypes: x, residual, noise and dy in fp32, bf16 or fp16 (each may differ); all arithmetic in fp32; y,
dx, dresidual in the dtype of x resp. residual; parameter gradients in the parameter's dtype.
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
from colorizer.kernels.noise_inject import _check_philox_range, _noise_values
from colorizer.kernels.tuning import group_tiling, interpreting
from colorizer.ops import KernelsUnavailable, reference

ACT_CODES = {None: 0, "none": 0, "relu": 1, "leaky_relu": 2}


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _group_tile(pid, s, G, CG, HW, BLOCK_G: tl.constexpr, BLOCK_CG: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Indices of program (pid = n * cdiv(G, BLOCK_G) + group block, s = chunk along HW).

    Returns n, g [BLOCK_G], c [BLOCK_G, BLOCK_CG] (channel index), hw [BLOCK_HW], the channel mask
    [BLOCK_G, BLOCK_CG] and the element mask [BLOCK_G, BLOCK_CG, BLOCK_HW]."""
    group_blocks = tl.cdiv(G, BLOCK_G)
    n = pid // group_blocks
    g = (pid % group_blocks) * BLOCK_G + tl.arange(0, BLOCK_G)
    j = tl.arange(0, BLOCK_CG)
    hw = s * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c = g[:, None] * CG + j[None, :]
    cmask = (g[:, None] < G) & (j[None, :] < CG)
    mask = cmask[:, :, None] & (hw < HW)[None, None, :]
    return n, g, c, hw, cmask, mask


@triton.jit
def _flat_channels(first, C, hmask, BLOCK_C: tl.constexpr):
    """One flat axis of BLOCK_C channels from ``first`` and its [BLOCK_C, BLOCK_HW] element mask.

    Tiles of whole groups whose channel count is a power of two (FLAT) are read and written through
    this axis and reshaped to [groups, channels per group, pixels] in registers: the compiler then
    sees BLOCK_C neighbouring channels (contiguous on channels_last), not runs of CG channels whose
    start it cannot prove aligned, which compiled to scalar 2-byte loads for CG = 2, 4, 8."""
    cf = first + tl.arange(0, BLOCK_C)
    return cf, (cf < C)[:, None] & hmask[None, :]


@triton.jit
def _load_tile(
    PTR,
    base,
    sc,
    shw,
    c3,
    hw3,
    mask,
    cf,
    hw,
    mask2,
    FLAT: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_CG: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """The [BLOCK_G, BLOCK_CG, BLOCK_HW] tile at PTR + base (fp32), through the flat channel axis
    when FLAT, else by its 3-D indices c3 [G, CG, 1] and hw3 [1, 1, HW]."""
    if FLAT:
        v = tl.load(PTR + base + cf[:, None] * sc + hw[None, :] * shw, mask=mask2, other=0.0).to(tl.float32)
        out = tl.reshape(v, [BLOCK_G, BLOCK_CG, BLOCK_HW])
    else:
        out = tl.load(PTR + base + c3 * sc + hw3 * shw, mask=mask, other=0.0).to(tl.float32)
    return out


@triton.jit
def _store_tile(
    PTR,
    base,
    sc,
    shw,
    c3,
    hw3,
    mask,
    cf,
    hw,
    mask2,
    value,
    FLAT: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_CG: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Store a [BLOCK_G, BLOCK_CG, BLOCK_HW] tile in PTR's dtype (the counterpart of _load_tile)."""
    if FLAT:
        flat = tl.reshape(value, [BLOCK_G * BLOCK_CG, BLOCK_HW]).to(PTR.dtype.element_ty)
        tl.store(PTR + base + cf[:, None] * sc + hw[None, :] * shw, flat, mask=mask2)
    else:
        tl.store(PTR + base + c3 * sc + hw3 * shw, value.to(PTR.dtype.element_ty), mask=mask)


@triton.jit
def _combine_group_stats(PMEAN, PM2, row, row_mask, CG, HW, SPLITS, BLOCK_HW: tl.constexpr, SPLITS_PAD: tl.constexpr):
    """Mean and biased variance of each group in ``row`` [R] from its SPLITS chunk partials.

    PMEAN, PM2: fp32 (rows, SPLITS), the mean and sum of squared deviations of each chunk; chunk k
    holds CG * min(BLOCK_HW, HW - k * BLOCK_HW) elements. Combined in a fixed order (deterministic)."""
    k = tl.arange(0, SPLITS_PAD)
    kmask = row_mask[:, None] & (k[None, :] < SPLITS)
    offs = row[:, None] * SPLITS + k[None, :]
    pmean = tl.load(PMEAN + offs, mask=kmask, other=0.0)
    pm2 = tl.load(PM2 + offs, mask=kmask, other=0.0)
    count = tl.where(k < SPLITS, tl.minimum(HW - k * BLOCK_HW, BLOCK_HW), 0).to(tl.float32) * CG
    total = CG * HW * 1.0  # "* 1.0", not .to(): CG and HW may arrive as compile-time constants (== 1)
    mean = tl.sum(pmean * count[None, :], axis=1) / total
    dev = pmean - mean[:, None]
    m2 = tl.sum(tl.where(kmask, pm2 + count[None, :] * dev * dev, 0.0), axis=1)
    return mean, m2 / total


@triton.jit
def _tile_stats(x, mask):
    """Count, mean and M2 of each group [BLOCK_G] of a masked tile [BLOCK_G, BLOCK_CG, BLOCK_HW]."""
    count = tl.sum(tl.sum(mask.to(tl.float32), axis=2), axis=1)
    mean = tl.sum(tl.sum(x, axis=2), axis=1) / tl.maximum(count, 1.0)
    dev = tl.where(mask, x - mean[:, None, None], 0.0)
    m2 = tl.sum(tl.sum(dev * dev, axis=2), axis=1)
    return count, mean, m2


@triton.jit(do_not_specialize=["SPLITS", "seed", "offset"])
def _gn_fwd_kernel(
    X,  # (N, C, HW) by strides sx*, any float dtype
    R,  # residual, same shape, strides sr*; unused unless HAS_RES
    NOISE,  # (N, 1, HW) by strides sn*; unused unless HAS_NOISE
    W,  # (C,) GroupNorm weight
    B,  # (C,) GroupNorm bias
    NW,  # (C,) noise weight; unused unless HAS_NOISE
    Y,  # (N, C, HW) output by strides sy*, dtype of X
    PMEAN,  # fp32 (N*G, SPLITS) chunk means (written by PHASE 1, read by PHASE 2)
    PM2,  # fp32 (N*G, SPLITS) chunk sums of squared deviations
    MEAN,  # fp32 (N*G,) group mean, written by chunk 0 (PHASE 0 and 2)
    RSTD,  # fp32 (N*G,) 1 / sqrt(var + eps)
    G,
    CG,
    HW,
    SPLITS,
    sxn,
    sxc,
    sxhw,
    srn,
    src,
    srhw,
    snn,
    snhw,
    syn,
    syc,
    syhw,
    eps,
    slope,
    seed,  # Philox seed and counter offset of the noise (NOISE_FROM_SEED)
    offset,
    PHASE: tl.constexpr,  # 0: stats and output in one program; 1: chunk partials only; 2: output from partials
    HAS_RES: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    NOISE_FROM_SEED: tl.constexpr,  # noise[n, hw] = randn(seed, offset + n * HW + hw) instead of NOISE
    ACT: tl.constexpr,  # 0 none, 1 relu, 2 leaky_relu(slope)
    FLAT: tl.constexpr,  # CG == BLOCK_CG: activations through one flat channel axis (_flat_channels)
    BLOCK_G: tl.constexpr,
    BLOCK_CG: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    SPLITS_PAD: tl.constexpr,
):
    pid = tl.program_id(0)
    s = tl.program_id(1)
    n, g, c, hw, cmask, mask = _group_tile(pid, s, G, CG, HW, BLOCK_G, BLOCK_CG, BLOCK_HW)
    cf, mask2 = _flat_channels((pid % tl.cdiv(G, BLOCK_G)) * (BLOCK_G * BLOCK_CG), G * CG, hw < HW, BLOCK_G * BLOCK_CG)
    n64 = n.to(tl.int64)
    c3 = c[:, :, None]
    hw3 = hw[None, None, :]
    row = n * G + g
    gmask = g < G
    x = _load_tile(X, n64 * sxn, sxc, sxhw, c3, hw3, mask, cf, hw, mask2, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
    if PHASE == 1:
        _, tmean, tm2 = _tile_stats(x, mask)
        tl.store(PMEAN + row * SPLITS + s, tmean, mask=gmask)
        tl.store(PM2 + row * SPLITS + s, tm2, mask=gmask)
    else:
        if PHASE == 0:
            count, mean, m2 = _tile_stats(x, mask)
            var = m2 / tl.maximum(count, 1.0)
        else:
            mean, var = _combine_group_stats(PMEAN, PM2, row, gmask, CG, HW, SPLITS, BLOCK_HW, SPLITS_PAD)
        rstd = 1.0 / tl.sqrt(var + eps)
        first = g < tl.where(s == 0, G, 0)  # chunk 0 stores the statistics once
        tl.store(MEAN + row, mean, mask=first)
        tl.store(RSTD + row, rstd, mask=first)
        w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32)
        b = tl.load(B + c, mask=cmask, other=0.0).to(tl.float32)
        scale = w * rstd[:, None]
        shift = b - mean[:, None] * scale
        y = x * scale[:, :, None] + shift[:, :, None]
        if HAS_RES:
            y += _load_tile(R, n64 * srn, src, srhw, c3, hw3, mask, cf, hw, mask2, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
        if ACT == 1:
            y = tl.maximum(y, 0.0)
        elif ACT == 2:
            y = tl.where(y > 0, y, y * slope)
        if HAS_NOISE:
            hmask = hw < HW
            nz = _noise_values(NOISE, n64, n, hw, hmask, HW, snn, snhw, seed, offset, NOISE_FROM_SEED)
            nw = tl.load(NW + c, mask=cmask, other=0.0).to(tl.float32)
            y += nw[:, :, None] * nz[None, None, :]
        _store_tile(Y, n64 * syn, syc, syhw, c3, hw3, mask, cf, hw, mask2, y, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)


@triton.jit(do_not_specialize=["SPLITS", "seed", "offset"])
def _gn_bwd_kernel(
    DY,  # (N, C, HW) upstream gradient by strides sd*
    X,
    R,
    NOISE,
    W,
    B,
    NW,
    MEAN,  # fp32 (N*G,)
    RSTD,  # fp32 (N*G,)
    DX,  # (N, C, HW) by strides sdx*, dtype of X
    DR,  # (N, C, HW) by strides sdr*, dtype of R; written when HAS_RES
    PDW,  # fp32 (P, N, SPLITS, C) parameter partials: plane 0 dweight, 1 dbias, 2 dnoise_weight (HAS_NOISE)
    PC1,  # fp32 (N*G, SPLITS) partial sum of dxhat * xhat
    PC2,  # fp32 (N*G, SPLITS) partial sum of dxhat
    G,
    CG,
    HW,
    C,
    SPLITS,
    sdn,
    sdc,
    sdhw,
    sxn,
    sxc,
    sxhw,
    srn,
    src,
    srhw,
    snn,
    snhw,
    sdxn,
    sdxc,
    sdxhw,
    sdrn,
    sdrc,
    sdrhw,
    slope,
    seed,
    offset,
    PHASE: tl.constexpr,  # 0: sums and dx in one program; 1: partial sums only; 2: dx from partials
    HAS_RES: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    NOISE_FROM_SEED: tl.constexpr,
    ACT: tl.constexpr,
    FLAT: tl.constexpr,
    DZ_FROM_DR: tl.constexpr,  # split path: phase 1 writes dresidual = dz, phase 2 reads it back
    BLOCK_G: tl.constexpr,
    BLOCK_CG: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    SPLITS_PAD: tl.constexpr,
):
    pid = tl.program_id(0)
    s = tl.program_id(1)
    n, g, c, hw, cmask, mask = _group_tile(pid, s, G, CG, HW, BLOCK_G, BLOCK_CG, BLOCK_HW)
    cf, mask2 = _flat_channels((pid % tl.cdiv(G, BLOCK_G)) * (BLOCK_G * BLOCK_CG), C, hw < HW, BLOCK_G * BLOCK_CG)
    n64 = n.to(tl.int64)
    c3 = c[:, :, None]
    hw3 = hw[None, None, :]
    row = n * G + g
    gmask = g < G
    mean = tl.load(MEAN + row, mask=gmask, other=0.0)
    rstd = tl.load(RSTD + row, mask=gmask, other=0.0)
    x = _load_tile(X, n64 * sxn, sxc, sxhw, c3, hw3, mask, cf, hw, mask2, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
    xhat = tl.where(mask, (x - mean[:, None, None]) * rstd[:, None, None], 0.0)
    w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32)
    if PHASE == 2 and DZ_FROM_DR:
        # Split path with a residual: phase 1 already wrote dresidual = dz; reading it back replaces
        # the reads of dy and of the residual (7 tensor passes instead of 8).
        dz = _load_tile(DR, n64 * sdrn, sdrc, sdrhw, c3, hw3, mask, cf, hw, mask2, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
    elif ACT == 0:
        dy = _load_tile(DY, n64 * sdn, sdc, sdhw, c3, hw3, mask, cf, hw, mask2, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
        dz = dy
    else:
        dy = _load_tile(DY, n64 * sdn, sdc, sdhw, c3, hw3, mask, cf, hw, mask2, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
        b = tl.load(B + c, mask=cmask, other=0.0).to(tl.float32)
        z = xhat * w[:, :, None] + b[:, :, None]
        if HAS_RES:
            z += _load_tile(R, n64 * srn, src, srhw, c3, hw3, mask, cf, hw, mask2, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
        if ACT == 1:
            dz = tl.where(z > 0, dy, 0.0)
        else:
            dz = tl.where(z > 0, dy, dy * slope)
    dxhat = dz * w[:, :, None]
    if PHASE != 2:
        # Per-channel parameter partials of this chunk; summed over (N, SPLITS) on the host.
        pofs = (n64 * SPLITS + s) * C + c
        plane = tl.num_programs(0) // tl.cdiv(G, BLOCK_G) * SPLITS * C  # N * SPLITS * C
        tl.store(PDW + pofs, tl.sum(dz * xhat, axis=2), mask=cmask)
        tl.store(PDW + plane + pofs, tl.sum(dz, axis=2), mask=cmask)
        if HAS_NOISE:
            hmask = hw < HW
            nz = _noise_values(NOISE, n64, n, hw, hmask, HW, snn, snhw, seed, offset, NOISE_FROM_SEED)
            tl.store(PDW + 2 * plane + pofs, tl.sum(dy * nz[None, None, :], axis=2), mask=cmask)
    if PHASE == 1:
        tl.store(PC1 + row * SPLITS + s, tl.sum(tl.sum(dxhat * xhat, axis=2), axis=1), mask=gmask)
        tl.store(PC2 + row * SPLITS + s, tl.sum(tl.sum(dxhat, axis=2), axis=1), mask=gmask)
        if DZ_FROM_DR:
            _store_tile(
                DR, n64 * sdrn, sdrc, sdrhw, c3, hw3, mask, cf, hw, mask2, dz, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW
            )
    else:
        if PHASE == 0:
            c1 = tl.sum(tl.sum(dxhat * xhat, axis=2), axis=1)
            c2 = tl.sum(tl.sum(dxhat, axis=2), axis=1)
        else:
            k = tl.arange(0, SPLITS_PAD)
            kmask = gmask[:, None] & (k[None, :] < SPLITS)
            offs = row[:, None] * SPLITS + k[None, :]
            c1 = tl.sum(tl.load(PC1 + offs, mask=kmask, other=0.0), axis=1)
            c2 = tl.sum(tl.load(PC2 + offs, mask=kmask, other=0.0), axis=1)
        inv_count = 1.0 / (CG * HW * 1.0)
        dx = (dxhat - (c2[:, None, None] + xhat * c1[:, None, None]) * inv_count) * rstd[:, None, None]
        _store_tile(DX, n64 * sdxn, sdxc, sdxhw, c3, hw3, mask, cf, hw, mask2, dx, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW)
        if HAS_RES and not (PHASE == 2 and DZ_FROM_DR):
            _store_tile(
                DR, n64 * sdrn, sdrc, sdrhw, c3, hw3, mask, cf, hw, mask2, dz, FLAT, BLOCK_G, BLOCK_CG, BLOCK_HW
            )


# --------------------------------------------------------------------------------------------------
# Launchers (registered as torch.library custom ops so torch.compile traces through them)
# --------------------------------------------------------------------------------------------------


def _channels_last(x: torch.Tensor) -> bool:
    """Neighbouring channels are neighbours in memory (channels_last)."""
    return x.shape[1] > 1 and x.stride(1) == 1 and x.shape[2] * x.shape[3] > 1


def _check_inputs(x, weight, bias, residual, noise_weight, noise, groups, act):
    if x.dim() != 4:
        raise ValueError(f"group_norm_act expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    if groups < 1 or c % groups:
        raise ValueError(f"{c} channels cannot be split into {groups} groups")
    for name, p in (("weight", weight), ("bias", bias), ("noise_weight", noise_weight)):
        if p is not None and p.shape != (c,):
            raise ValueError(f"{name} must have shape ({c},), got {tuple(p.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual shape {tuple(residual.shape)} != input shape {tuple(x.shape)}")
    if noise is not None:
        if noise.shape != (n, 1, h, w):
            raise ValueError(f"noise must have shape {(n, 1, h, w)}, got {tuple(noise.shape)}")
        if noise_weight is None:
            raise ValueError("noise needs noise_weight")
    if act not in ACT_CODES:
        raise ValueError(f"unknown activation {act!r}; expected one of {reference.ACTIVATIONS}")


@torch.library.custom_op(f"{OP_LIBRARY}::group_norm_act_forward", mutates_args=())
@on_device_of_first_tensor
def group_norm_act_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor | None,
    noise_weight: torch.Tensor | None,
    noise: torch.Tensor | None,
    groups: int,
    eps: float,
    act: str,
    block_size: int,
    noise_seed: int = -1,
    noise_offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the forward. x, residual: (N, C, H, W); weight, bias, noise_weight: (C,); noise
    (N, 1, H, W), or None with noise_seed >= 0 for Philox noise from (noise_seed, noise_offset); act
    "none" | "relu" | "leaky_relu"; block_size 0 = tuned default, else elements per program.
    Returns y (like x, same memory format), mean and rstd (fp32, (N, groups))."""
    n, c, h, w = x.shape
    hw = h * w
    cg = c // groups
    tiling = group_tiling(groups, cg, hw, block_size or None, channels_contiguous=_channels_last(x))
    y = new_empty_like(x)
    mean = new_empty((n, groups), dtype=torch.float32, device=x.device)
    rstd = new_empty((n, groups), dtype=torch.float32, device=x.device)
    if y.numel() == 0:
        return y, mean, rstd
    xs, sxn, sxc, sxhw = flat_spatial(x)
    _, syn, syc, syhw = flat_spatial(y)
    has_res, from_seed = residual is not None, noise is None and noise_seed >= 0
    has_noise = noise is not None or from_seed
    rs, srn, src, srhw = flat_spatial(residual) if has_res else (xs, 0, 0, 0)
    ns, snn, _, snhw = flat_spatial(noise) if noise is not None else (xs, 0, 0, 0)
    nw = noise_weight if has_noise else weight
    grid = (n * tiling.group_blocks, tiling.splits)
    common = dict(
        HAS_RES=has_res,
        HAS_NOISE=has_noise,
        NOISE_FROM_SEED=from_seed,
        ACT=ACT_CODES[act],
        FLAT=cg == tiling.block_cg,
        BLOCK_G=tiling.block_g,
        BLOCK_CG=tiling.block_cg,
        BLOCK_HW=tiling.block_hw,
        SPLITS_PAD=tiling.splits_pad,
        num_warps=tiling.num_warps,
    )
    args = (xs, rs, ns, weight, bias, nw, y)
    scalars = (groups, cg, hw, tiling.splits, sxn, sxc, sxhw, srn, src, srhw, snn, snhw, syn, syc, syhw)
    scalars += (eps, reference.LEAKY_SLOPE, max(noise_seed, 0), noise_offset)
    if tiling.fused:
        _gn_fwd_kernel[grid](*args, mean, mean, mean, rstd, *scalars, PHASE=0, **common)
    else:
        pmean = new_empty((n * groups, tiling.splits), dtype=torch.float32, device=x.device)
        pm2 = new_empty((n * groups, tiling.splits), dtype=torch.float32, device=x.device)
        # Phase 1 only reduces x: one compiled variant for every epilogue (and no combine block).
        stats_only = dict(SPLITS_PAD=1, HAS_RES=False, HAS_NOISE=False, NOISE_FROM_SEED=False, ACT=0)
        for phase in (1, 2):
            meta = common if phase == 2 else {**common, **stats_only}
            _gn_fwd_kernel[grid](*args, pmean, pm2, mean, rstd, *scalars, PHASE=phase, **meta)
    return y, mean, rstd


@group_norm_act_forward.register_fake
def _(x, weight, bias, residual, noise_weight, noise, groups, eps, act, block_size, noise_seed=-1, noise_offset=0):
    n = x.shape[0]
    return (
        torch.empty_like(x),
        x.new_empty((n, groups), dtype=torch.float32),
        x.new_empty((n, groups), dtype=torch.float32),
    )


@torch.library.custom_op(f"{OP_LIBRARY}::group_norm_act_backward", mutates_args=())
@on_device_of_first_tensor
def group_norm_act_backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor | None,
    noise_weight: torch.Tensor | None,
    noise: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    groups: int,
    act: str,
    block_size: int,
    noise_seed: int = -1,
    noise_offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward. Returns (dx, dresidual, dparams): dresidual is empty (0 elements) without
    a residual; dparams is fp32 (2, C) (dweight, dbias), or (3, C) with noise (+ dnoise_weight).
    Philox noise (noise None, noise_seed >= 0) is drawn again from (noise_seed, noise_offset)."""
    n, c, h, w = x.shape
    hw = h * w
    cg = c // groups
    tiling = group_tiling(groups, cg, hw, block_size or None, channels_contiguous=_channels_last(x))
    has_res, from_seed = residual is not None, noise is None and noise_seed >= 0
    has_noise = noise is not None or from_seed
    dx = new_empty_like(x)
    dr = new_empty_like(residual) if has_res else x.new_empty(0)
    dev = x.device
    splits = tiling.splits
    partials = new_empty((3 if has_noise else 2, n, splits, c), dtype=torch.float32, device=dev)
    if x.numel() == 0:
        return dx, dr, torch.zeros(partials.shape[0], c, dtype=torch.float32, device=dev)
    ds, sdn, sdc, sdhw = flat_spatial(dy)
    xs, sxn, sxc, sxhw = flat_spatial(x)
    _, sdxn, sdxc, sdxhw = flat_spatial(dx)
    rs, srn, src, srhw = flat_spatial(residual) if has_res else (xs, 0, 0, 0)
    _, sdrn, sdrc, sdrhw = flat_spatial(dr) if has_res else (dx, 0, 0, 0)
    ns, snn, _, snhw = flat_spatial(noise) if noise is not None else (xs, 0, 0, 0)
    nw = noise_weight if has_noise else weight
    drs = dr if has_res else dx
    grid = (n * tiling.group_blocks, splits)
    common = dict(
        HAS_RES=has_res,
        HAS_NOISE=has_noise,
        NOISE_FROM_SEED=from_seed,
        ACT=ACT_CODES[act],
        FLAT=cg == tiling.block_cg,
        BLOCK_G=tiling.block_g,
        BLOCK_CG=tiling.block_cg,
        BLOCK_HW=tiling.block_hw,
        SPLITS_PAD=tiling.splits_pad,
        num_warps=tiling.num_warps,
    )
    tensors = (ds, xs, rs, ns, weight, bias, nw, mean, rstd, dx, drs, partials)
    scalars = (groups, cg, hw, c, splits, sdn, sdc, sdhw, sxn, sxc, sxhw, srn, src, srhw, snn, snhw)
    scalars += (sdxn, sdxc, sdxhw, sdrn, sdrc, sdrhw, reference.LEAKY_SLOPE, max(noise_seed, 0), noise_offset)
    if tiling.fused:
        _gn_bwd_kernel[grid](*tensors, mean, mean, *scalars, PHASE=0, DZ_FROM_DR=False, **common)
    else:
        pc1 = new_empty((n * groups, splits), dtype=torch.float32, device=dev)
        pc2 = new_empty((n * groups, splits), dtype=torch.float32, device=dev)
        # dz round-trips through dresidual only where that loses nothing against x's precision.
        dz_from_dr = has_res and residual.dtype in (torch.float32, x.dtype)
        for phase in (1, 2):
            meta = common if phase == 2 else {**common, "SPLITS_PAD": 1}  # phase 1 combines nothing
            _gn_bwd_kernel[grid](*tensors, pc1, pc2, *scalars, PHASE=phase, DZ_FROM_DR=dz_from_dr, **meta)
    # One fixed-shape reduction for all parameter gradients (deterministic); split and cast by the
    # autograd Function (custom-op outputs may not alias each other).
    return dx, dr, partials.sum(dim=(1, 2))


@group_norm_act_backward.register_fake
def _(
    dy,
    x,
    weight,
    bias,
    residual,
    noise_weight,
    noise,
    mean,
    rstd,
    groups,
    act,
    block_size,
    noise_seed=-1,
    noise_offset=0,
):
    has_noise = noise is not None or noise_seed >= 0
    return (
        torch.empty_like(x),
        torch.empty_like(residual) if residual is not None else x.new_empty(0),
        x.new_empty((3 if has_noise else 2, x.shape[1]), dtype=torch.float32),
    )


# --------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------


class GroupNormActFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, noise_weight, noise, groups, eps, act, block_size, seed, offset):
        y, mean, rstd = group_norm_act_forward(
            x, weight, bias, residual, noise_weight, noise, groups, eps, act, block_size, seed, offset
        )
        ctx.save_for_backward(x, weight, bias, residual, noise_weight, noise, mean, rstd)
        ctx.groups, ctx.act, ctx.block_size, ctx.seed, ctx.offset = groups, act, block_size, seed, offset
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, residual, noise_weight, noise, mean, rstd = ctx.saved_tensors
        dx, dr, dparams = group_norm_act_backward(
            dy,
            x,
            weight,
            bias,
            residual,
            noise_weight,
            noise,
            mean,
            rstd,
            ctx.groups,
            ctx.act,
            ctx.block_size,
            ctx.seed,
            ctx.offset,
        )
        dweight, dbias = dparams[0].to(weight.dtype), dparams[1].to(bias.dtype)
        dnw = dparams[2].to(noise_weight.dtype) if noise_weight is not None else None
        dnoise = None
        if noise is not None and ctx.needs_input_grad[5]:
            # A noise map that needs a gradient is rare (the model's never does): plain torch.
            dnoise = (dy.float() * noise_weight.float().view(1, -1, 1, 1)).sum(1, keepdim=True).to(noise.dtype)
        return (
            dx,
            dweight,
            dbias,
            dr if residual is not None else None,
            dnw if noise_weight is not None else None,
            dnoise,
            None,
            None,
            None,
            None,
            None,
            None,
        )


# --------------------------------------------------------------------------------------------------
# Functional
# --------------------------------------------------------------------------------------------------


def group_norm_act(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    groups: int = 32,
    eps: float = 1e-5,
    act: str | None = None,
    residual: torch.Tensor | None = None,
    noise_weight: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    *,
    noise_seed: int | None = None,
    noise_offset: int = 0,
    block_size: int | None = None,
) -> torch.Tensor:
    """act(GroupNorm(x) + residual) + noise_weight[c] * noise, fused (see the module docstring).

    x, residual: (N, C, H, W), NCHW or channels_last, fp32/bf16/fp16; weight, bias, noise_weight:
    (C,) (weight/bias None mean 1/0); noise: (N, 1, H, W); act None | "relu" | "leaky_relu" (slope
    0.2). Returns a tensor like x (dtype and memory format). CPU tensors outside the interpreter use
    the reference (colorizer.kernels.backend).

    noise_seed (keyword only, with noise None and noise_weight given): draw the noise inside the
    kernel from Philox (noise_seed, noise_offset), the map ``noise_inject.philox_noise`` returns for
    the same arguments (N * H * W counters from noise_offset); the backward draws it again. Needs CUDA
    or the interpreter. block_size: elements per program (tests use a small one to force the split
    reductions).
    """
    _check_inputs(x, weight, bias, residual, noise_weight, noise, groups, act)
    if noise_seed is not None:
        if noise is not None or noise_weight is None:
            raise ValueError("noise_seed draws the noise in the kernel: give noise_weight and no noise tensor")
        _check_philox_range(x, noise_seed, noise_offset)
        if not (x.is_cuda or interpreting()):
            raise KernelsUnavailable("Philox noise in group_norm_act needs a CUDA tensor (or TRITON_INTERPRET=1)")
    elif not use_triton(x):
        return reference.group_norm_act(x, weight, bias, groups, eps, act, residual, noise_weight, noise)
    if weight is None:
        weight = torch.ones(x.shape[1], dtype=torch.float32, device=x.device)
    if bias is None:
        bias = torch.zeros(x.shape[1], dtype=torch.float32, device=x.device)
    if noise is None and noise_seed is None:
        noise_weight = None
    return GroupNormActFunction.apply(
        x,
        weight,
        bias,
        residual,
        noise_weight,
        noise,
        groups,
        float(eps),
        act or "none",
        int(block_size or 0),
        -1 if noise_seed is None else int(noise_seed),
        int(noise_offset),
    )
