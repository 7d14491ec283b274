"""K-means palettes in Triton: the fused Lloyd step, and the two k-means++ seeding passes.

- ``kmeans_assign_accumulate`` (``_kmeans_assign_accumulate_kernel``): nearest center, per-cluster
  sums and counts, SSE, in one pass over the points (contract below).
- ``kmeanspp_potentials`` / ``kmeanspp_update`` (``_kmeanspp_potential_kernel``,
  ``_kmeanspp_update_kernel``): for greedy k-means++, the potential of each trial candidate,
  sum_p w_p min(D_p, |x_p - c|^2), and the update D = min(D, |x - c_chosen|^2), without the
  (rows, trials, points) temporary of the torch formulation (which is 2.7 GB at 4096 images x 10
  restarts x 4 trials x 4096 pixels).

The contract is ``colorizer.ops.reference.kmeans_assign_accumulate`` (the pure-torch oracle; this is
the ``triton`` backend's op of that name): for points
(Bp, P, 3) and centers (B, K, 3) with B a multiple of Bp (center row b clusters points row
b // (B // Bp), so the restarts of one image read the same pixels), return

    labels (B, P) int32   index of the nearest center by sum_c (x_c - c_c)^2 in fp32, ties -> lowest
    sums   (B, K, 3) fp32 sum of the points labeled k
    counts (B, K) fp32    number of points labeled k
    sse    (B,) fp32      sum over points of the squared distance to the nearest center

Layout: program (b, s) takes center row b and the s-th chunk of BLOCK_P points of its image, finds
each point's nearest center by looping over the K centers (K padded to a power of 2, unrolled), and
forms the per-cluster partial sums of the chunk from a one-hot [BLOCK_P, BLOCK_K] tile, and writes
them to a partials buffer (B, S, 5, BLOCK_K): sum x0, x1, x2, count, and the chunk's SSE in slot 4
(column 0). The launcher adds the S partials with one torch ``sum`` over a fixed shape, so the
result is deterministic (no float atomics) and independent of scheduling. Distances are computed as
differences (not the |x|^2 - 2 x.c + |c|^2 expansion), so labels match the oracle bit for bit in
practice.

Points may be uint8 (the downscaled pixels: 3 bytes per pixel read) or fp32. Optional per-point
weights (multiplicities of de-duplicated colors) scale each point's contribution to sums, counts
and SSE. ``kmeans_assign_accumulate.seeding_kernels`` declares the two seeding passes to
``colorizer.palette``, which then seeds with them instead of the torch formulation.
Runs on CUDA, or on CPU tensors under ``TRITON_INTERPRET=1`` (tests; slow, small shapes only).
"""

# ruff: noqa: N803 (Triton convention: pointer and constexpr arguments in capitals)
from __future__ import annotations

import torch
import triton
import triton.language as tl

from colorizer.errors import MissingDependencyError
from colorizer.kernels.backend import on_device_of_first_tensor
from colorizer.kernels.tuning import cdiv, interpreting, next_power_of_2

# Points per program. The assignment loops over the centers, so only the per-cluster accumulation
# holds a [BLOCK_P, BLOCK_K] tile: 512 points x 16 (padded) centers at 8 warps is 32 fp32 values per
# thread (``python -m tests.kernels.compile_check --usage`` shows the registers; the former 1024-point
# tile with all distances in registers took 255 and spilled). Untuned on a GPU. The interpreter pays
# ~1 ms per program, so it gets big tiles.
BLOCK_P_CUDA = 512
MAX_TILE_CUDA = 8192  # BLOCK_P * BLOCK_K
BLOCK_P_INTERPRETER = 4096


@triton.jit(do_not_specialize=["S", "REPEAT"])
def _kmeans_assign_accumulate_kernel(
    X,  # points (Bp, P, 3), uint8 or fp32, strides (sxb, sxp, sxc)
    C,  # centers fp32 (B, K, 3), contiguous
    LABELS,  # int32 (B, P), written when WRITE_LABELS
    PART,  # fp32 (B, S, 5, BLOCK_K) chunk partials: sums x0, x1, x2, counts, sse (slot 4, column 0)
    W,  # fp32 (Bp, P) point weights (multiplicities), contiguous; read when HAS_WEIGHTS
    P,
    K,
    S,
    REPEAT,  # B // Bp: center rows per points row
    sxb,
    sxp,
    sxc,
    BLOCK_P: tl.constexpr,
    BLOCK_K: tl.constexpr,
    WRITE_LABELS: tl.constexpr,
    HAS_WEIGHTS: tl.constexpr,
):
    b = tl.program_id(0)
    s = tl.program_id(1)
    pb = b // REPEAT
    offs_p = s * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_k = tl.arange(0, BLOCK_K)
    pmask = offs_p < P

    xbase = X + pb.to(tl.int64) * sxb + offs_p.to(tl.int64) * sxp
    x0 = tl.load(xbase, mask=pmask, other=0).to(tl.float32)
    x1 = tl.load(xbase + sxc, mask=pmask, other=0).to(tl.float32)
    x2 = tl.load(xbase + 2 * sxc, mask=pmask, other=0).to(tl.float32)
    cbase = C + b.to(tl.int64) * K * 3

    # Nearest center, one center at a time (no [BLOCK_P, BLOCK_K] distance tile: that tile and its
    # temporaries took 255 registers and spilled on sm_90). Strict "<" in ascending k keeps the
    # lowest index among equal minima: the oracle's tie rule.
    best = tl.full([BLOCK_P], float("inf"), tl.float32)
    label = tl.zeros([BLOCK_P], dtype=tl.int32)
    for j in tl.static_range(BLOCK_K):
        valid = j < K
        e0 = x0 - tl.load(cbase + j * 3, mask=valid, other=0.0)
        e1 = x1 - tl.load(cbase + j * 3 + 1, mask=valid, other=0.0)
        e2 = x2 - tl.load(cbase + j * 3 + 2, mask=valid, other=0.0)
        dj = e0 * e0 + e1 * e1 + e2 * e2
        closer = (dj < best) & valid
        best = tl.where(closer, dj, best)
        label = tl.where(closer, j, label)
    if WRITE_LABELS:
        tl.store(LABELS + b.to(tl.int64) * P + offs_p, label, mask=pmask)

    onehot = ((label[:, None] == offs_k[None, :]) & pmask[:, None]).to(tl.float32)
    if HAS_WEIGHTS:
        w = tl.load(W + pb.to(tl.int64) * P + offs_p, mask=pmask, other=0.0)
        onehot = onehot * w[:, None]
        best = best * w
    pbase = PART + (b.to(tl.int64) * S + s) * 5 * BLOCK_K + offs_k
    tl.store(pbase, tl.sum(onehot * x0[:, None], axis=0))
    tl.store(pbase + BLOCK_K, tl.sum(onehot * x1[:, None], axis=0))
    tl.store(pbase + 2 * BLOCK_K, tl.sum(onehot * x2[:, None], axis=0))
    tl.store(pbase + 3 * BLOCK_K, tl.sum(onehot, axis=0))
    sse = tl.sum(tl.where(pmask, best, 0.0), axis=0)
    tl.store(pbase + 4 * BLOCK_K, tl.where(offs_k == 0, sse, 0.0))


def _can_launch(t: torch.Tensor) -> bool:
    """CUDA tensors, or CPU tensors under the interpreter (tests.kernels.compile_check replaces it)."""
    return t.is_cuda or (interpreting() and t.device.type == "cpu")


@on_device_of_first_tensor
def kmeans_assign_accumulate(
    points: torch.Tensor,
    centers: torch.Tensor,
    weights: torch.Tensor | None = None,
    with_labels: bool = True,
    block_p: int | None = None,
):
    """Launch the fused Lloyd step; see the module docstring for the contract.

    Args:
        points: (Bp, P, 3) uint8 or float32 (any strides), CUDA, or CPU under TRITON_INTERPRET=1.
        centers: float32 (B, K, 3), B a multiple of Bp.
        weights: optional fp32 (Bp, P) point multiplicities (de-duplicated colors; 0 = padding):
            sums, counts and SSE count each point with its weight.
        with_labels: also write the labels (skip it when only sums/counts/SSE are needed: it is
            the largest output). Without them ``labels`` is None.
        block_p: points per program (tests use small values to exercise several chunks).

    Returns:
        labels int32 (B, P) or None, sums fp32 (B, K, 3), counts fp32 (B, K), sse fp32 (B,).
    """
    if points.dim() != 3 or points.shape[-1] != 3 or centers.dim() != 3 or centers.shape[-1] != 3:
        raise ValueError(f"points (Bp, P, 3) and centers (B, K, 3) expected, got {points.shape} and {centers.shape}")
    if centers.shape[0] % points.shape[0] != 0:
        raise ValueError(f"centers rows {centers.shape[0]} must be a multiple of points rows {points.shape[0]}")
    if points.device != centers.device:
        raise ValueError(f"points on {points.device}, centers on {centers.device}")
    if not _can_launch(points):
        raise MissingDependencyError(
            "the Triton K-means kernel needs a CUDA tensor (or TRITON_INTERPRET=1 for CPU tensors)"
        )
    if points.dtype not in (torch.uint8, torch.float32):
        points = points.float()
    centers = centers.float().contiguous()
    bp, p, _ = points.shape
    if weights is not None:
        if weights.shape != (bp, p):
            raise ValueError(f"weights must be (Bp, P) = {(bp, p)}, got {tuple(weights.shape)}")
        weights = weights.float().contiguous()
    b, k, _ = centers.shape
    block_k = max(2, next_power_of_2(k))
    block_p = next_power_of_2(block_p or (BLOCK_P_INTERPRETER if interpreting() else BLOCK_P_CUDA))
    # Keep the [BLOCK_P, BLOCK_K] accumulation tile at most MAX_TILE_CUDA elements as K grows.
    if not interpreting():
        block_p = max(16, min(block_p, MAX_TILE_CUDA // block_k))
    s = max(1, cdiv(p, block_p))
    dev = points.device
    labels = torch.empty(b, p, dtype=torch.int32, device=dev) if with_labels else None
    part = torch.empty(b, s, 5, block_k, dtype=torch.float32, device=dev)
    if b > 0 and p > 0:
        _kmeans_assign_accumulate_kernel[(b, s)](
            points,
            centers,
            labels if with_labels else part,  # any valid pointer; not written
            part,
            weights if weights is not None else part,  # any valid pointer; not read
            p,
            k,
            s,
            b // bp,
            points.stride(0),
            points.stride(1),
            points.stride(2),
            BLOCK_P=block_p,
            BLOCK_K=block_k,
            WRITE_LABELS=with_labels,
            HAS_WEIGHTS=weights is not None,
            num_warps=8 if block_p >= 512 else 4,
        )
        total = part.sum(dim=1)  # (B, 5, BLOCK_K), a fixed-shape reduction: deterministic
    else:
        total = torch.zeros(b, 5, block_k, device=dev)
    sums = total[:, :3, :k].transpose(1, 2).contiguous()
    counts = total[:, 3, :k].contiguous()
    sse = total[:, 4, 0].contiguous()
    return labels, sums, counts, sse


# --------------------------------------------------------------------------------------------------
# Greedy k-means++ seeding: candidate potentials and the distance update, without the
# (rows, candidates, points) temporary that the torch formulation materialises.
# --------------------------------------------------------------------------------------------------


@triton.jit
def _kmeanspp_potential_kernel(
    X,  # points (Bp, P, 3), uint8 or fp32, strides (sxb, sxp, sxc)
    W,  # fp32 (Bp, P) weights, contiguous; read when HAS_WEIGHTS
    D,  # fp32 (B, P) current squared distance of each point to its nearest chosen center
    CAND,  # fp32 (B, L, 3) candidate centers, contiguous
    PART,  # fp32 (B, S, BLOCK_L) chunk partials of the potentials
    P,
    L,
    S,
    REPEAT,  # B // Bp
    sxb,
    sxp,
    sxc,
    BLOCK_P: tl.constexpr,
    BLOCK_L: tl.constexpr,
    HAS_WEIGHTS: tl.constexpr,
):
    b = tl.program_id(0)
    s = tl.program_id(1)
    pb = b // REPEAT
    offs_p = s * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_l = tl.arange(0, BLOCK_L)
    pmask = offs_p < P
    lmask = offs_l < L
    xbase = X + pb.to(tl.int64) * sxb + offs_p.to(tl.int64) * sxp
    x0 = tl.load(xbase, mask=pmask, other=0).to(tl.float32)
    x1 = tl.load(xbase + sxc, mask=pmask, other=0).to(tl.float32)
    x2 = tl.load(xbase + 2 * sxc, mask=pmask, other=0).to(tl.float32)
    dcur = tl.load(D + b.to(tl.int64) * P + offs_p, mask=pmask, other=0.0)
    cbase = CAND + (b.to(tl.int64) * L + offs_l) * 3
    c0 = tl.load(cbase, mask=lmask, other=0.0)
    c1 = tl.load(cbase + 1, mask=lmask, other=0.0)
    c2 = tl.load(cbase + 2, mask=lmask, other=0.0)
    d0 = x0[:, None] - c0[None, :]
    d1 = x1[:, None] - c1[None, :]
    d2 = x2[:, None] - c2[None, :]
    m = tl.minimum(d0 * d0 + d1 * d1 + d2 * d2, dcur[:, None])  # [BLOCK_P, BLOCK_L]
    if HAS_WEIGHTS:
        w = tl.load(W + pb.to(tl.int64) * P + offs_p, mask=pmask, other=0.0)
        m = m * w[:, None]
    m = tl.where(pmask[:, None], m, 0.0)
    tl.store(PART + (b.to(tl.int64) * S + s) * BLOCK_L + offs_l, tl.sum(m, axis=0))


@triton.jit
def _kmeanspp_update_kernel(
    X,  # points (Bp, P, 3), uint8 or fp32, strides (sxb, sxp, sxc)
    D,  # fp32 (B, P), updated in place: D = min(D, |x - c_b|^2)
    C,  # fp32 (B, 3) the chosen center of each row, contiguous
    P,
    REPEAT,
    sxb,
    sxp,
    sxc,
    BLOCK_P: tl.constexpr,
):
    b = tl.program_id(0)
    s = tl.program_id(1)
    pb = b // REPEAT
    offs_p = s * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    xbase = X + pb.to(tl.int64) * sxb + offs_p.to(tl.int64) * sxp
    d0 = tl.load(xbase, mask=pmask, other=0).to(tl.float32) - tl.load(C + b.to(tl.int64) * 3)
    d1 = tl.load(xbase + sxc, mask=pmask, other=0).to(tl.float32) - tl.load(C + b.to(tl.int64) * 3 + 1)
    d2 = tl.load(xbase + 2 * sxc, mask=pmask, other=0).to(tl.float32) - tl.load(C + b.to(tl.int64) * 3 + 2)
    dptr = D + b.to(tl.int64) * P + offs_p
    dcur = tl.load(dptr, mask=pmask, other=0.0)
    tl.store(dptr, tl.minimum(dcur, d0 * d0 + d1 * d1 + d2 * d2), mask=pmask)


def _seeding_args(points: torch.Tensor, dist: torch.Tensor, block_p: int | None):
    if points.dim() != 3 or points.shape[-1] != 3 or dist.dim() != 2 or dist.shape[1] != points.shape[1]:
        raise ValueError(f"points (Bp, P, 3) and dist (B, P) expected, got {points.shape} and {dist.shape}")
    if dist.shape[0] % points.shape[0] != 0 or dist.dtype != torch.float32 or not dist.is_contiguous():
        raise ValueError("dist must be contiguous float32 with a multiple of the points' rows")
    if not _can_launch(points):
        raise MissingDependencyError(
            "the Triton K-means kernels need a CUDA tensor (or TRITON_INTERPRET=1 for CPU tensors)"
        )
    if points.dtype not in (torch.uint8, torch.float32):
        points = points.float()
    block_p = next_power_of_2(block_p or (BLOCK_P_INTERPRETER if interpreting() else BLOCK_P_CUDA))
    return points, block_p, max(1, cdiv(points.shape[1], block_p))


@on_device_of_first_tensor
def kmeanspp_potentials(
    points: torch.Tensor,
    dist: torch.Tensor,
    candidates: torch.Tensor,
    weights: torch.Tensor | None = None,
    block_p: int | None = None,
) -> torch.Tensor:
    """Greedy k-means++ trial potentials: pot[b, l] = sum_p w_p * min(dist[b, p], |x_p - cand[b, l]|^2).

    points (Bp, P, 3) uint8/fp32; dist fp32 (B, P) contiguous (B a multiple of Bp, row b uses points
    row b // (B // Bp)); candidates (B, L, 3); weights optional fp32 (Bp, P). Returns float64 (B, L):
    fp32 chunk sums added in a fixed order in float64 (deterministic).
    """
    points, block_p, s = _seeding_args(points, dist, block_p)
    b, p = dist.shape
    cand = candidates.float().contiguous()
    n_l = cand.shape[1]
    block_l = max(2, next_power_of_2(n_l))
    if not interpreting():
        block_p = max(16, min(block_p, 16384 // block_l))
        s = max(1, cdiv(p, block_p))
    if weights is not None:
        weights = weights.float().contiguous()
    part = torch.empty(b, s, block_l, dtype=torch.float32, device=dist.device)
    if b > 0 and p > 0:
        _kmeanspp_potential_kernel[(b, s)](
            points,
            weights if weights is not None else part,
            dist,
            cand,
            part,
            p,
            n_l,
            s,
            b // points.shape[0],
            points.stride(0),
            points.stride(1),
            points.stride(2),
            BLOCK_P=block_p,
            BLOCK_L=block_l,
            HAS_WEIGHTS=weights is not None,
            num_warps=4,
        )
    else:
        part.zero_()
    return part.double().sum(dim=1)[:, :n_l]


@on_device_of_first_tensor
def kmeanspp_update(points: torch.Tensor, dist: torch.Tensor, chosen: torch.Tensor, block_p: int | None = None):
    """In place: dist[b, p] = min(dist[b, p], |x_p - chosen[b]|^2). points (Bp, P, 3), dist fp32 (B, P)
    contiguous, chosen (B, 3). Returns dist."""
    points, block_p, s = _seeding_args(points, dist, block_p)
    b, p = dist.shape
    if b > 0 and p > 0:
        _kmeanspp_update_kernel[(b, s)](
            points,
            dist,
            chosen.float().contiguous(),
            p,
            b // points.shape[0],
            points.stride(0),
            points.stride(1),
            points.stride(2),
            BLOCK_P=block_p,
            num_warps=4,
        )
    return dist


# Declared to the palette's K-means (colorizer.palette.clustering): it seeds with these kernels when
# its step is this op, and calls it from one thread at a time (on the CPU this op runs only in
# Triton's interpreter, which patches module globals while it runs).
kmeans_assign_accumulate.seeding_kernels = (kmeanspp_potentials, kmeanspp_update)
kmeans_assign_accumulate.thread_safe = False
