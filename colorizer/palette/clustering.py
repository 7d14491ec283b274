"""K-means for palettes: greedy k-means++ seeding, Lloyd iterations with OpenCV's stopping rule,
restarts as extra batch rows, OpenCV's empty-cluster repair, and the device layouts (``kmeans_batch``).

The Lloyd step (nearest center, per-cluster sums and counts, SSE) is an op of ``colorizer.ops``,
``kmeans_assign_accumulate`` (oracle: ``colorizer.ops.reference``); ``step_for`` turns a backend's op
into the grouped step ``kmeans`` calls. The eager op runs as ``_TorchStep``, a faster torch
formulation of the same contract.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from colorizer.errors import ConfigError, ImageError
from colorizer.ops import reference

__all__ = ["MAX_EFFORT", "MAX_K", "SEEDING_ELEMENTS", "dedup_colors", "kmeans", "kmeans_batch", "step_for"]


# --------------------------------------------------------------------------------------------------
# The Lloyd step in the grouped form kmeans calls
# --------------------------------------------------------------------------------------------------


class _TorchStep:
    """The eager backend's K-means step for one batch, restarts grouped per image: a faster torch
    formulation of ``colorizer.ops.reference.kmeans_assign_accumulate`` (tested against it).

    Built once per ``kmeans`` call from points float32 (N, P, 3) and optional integer weights
    (N, P) (pixel multiplicities after de-duplication; 0 marks padding). Called as
    ``step(sel, centers, need_labels)`` where sel = (img, rst) selects images and/or restarts
    (int64 index tensors or None for all) and centers is (n, r, K, 3) for that selection. Returns
    labels int64 (n, r, P) or None, sums (n, r, K, 3), counts (n, r, K), sse (n, r), float32, every
    pixel counted with its weight.

    Why it looks like this (each point replaced a slower eager formulation, measured on CPU):

    - One batched GEMM per image computes all r * K squared distances from the augmented vectors
      [x, |x|^2, 1] . [-2c, 1, |c|^2 + 1], so pixels are read once and no (P, K, 3) temporary exists.
      The +1 keeps every distance positive despite rounding (|error| < 0.1 for 0..255 data).
    - Positive float32 values order like their int32 bit patterns, so the cluster index is written
      into the low bits and one integer ``amin`` over K gives the nearest center and its index
      together (``min(dim)`` with indices is ~15x slower on CPU). Ties and near-ties within a relative
      2**-(23 - bits) go to the lowest index; the distance keeps 23 - bits mantissa bits.
    - Per-cluster sums are ``bincount``s. For integer-valued pixels two channels are packed in one
      float64 weight (x0 + x1 * 2**24), exact while a cluster's channel sum is < 2**24, i.e. for
      fewer than 65793 pixels per image; sums of integers are also order-independent, so CUDA
      atomics stay deterministic. Other inputs use one bincount per channel.
    """

    def __init__(self, points: torch.Tensor, k: int, weights: torch.Tensor | None = None):
        n, p, _ = points.shape
        self.k, self.p = k, p
        self.bits = max(1, (k - 1).bit_length())
        if self.bits > 10:
            raise ConfigError(f"palette: k={k} is too large for the torch implementation (at most 1024)")
        dev = points.device
        self.x_aug = _augment(points)  # (N, 5, P)
        w = torch.ones(n, p, device=dev, dtype=torch.float64) if weights is None else weights.double()
        self.weights = None if weights is None else weights.float()
        total = float(w.sum(dim=1).max())
        integral = bool((points == points.round()).all()) and float(points.abs().max()) < 256
        self.packed = integral and total * 255 < 2.0**24
        pd = points.double()
        if self.packed:
            self.w = torch.stack([w * (pd[..., 0] + pd[..., 1] * 2.0**24), w * (pd[..., 2] + 2.0**24)], dim=1)
        else:
            self.w = torch.cat([w[:, None] * pd.transpose(1, 2), w[:, None]], dim=1)  # (N, 4, P)
        self.low = torch.arange(k, dtype=torch.int32, device=dev).view(1, 1, k, 1)
        self.mask = ~((1 << self.bits) - 1)

    def __call__(self, sel, centers: torch.Tensor, need_labels: bool = False):
        img, rst = sel
        n, r, k, _ = centers.shape
        c = centers.reshape(n, r * k, 3).float()
        c_aug = torch.cat([-2.0 * c, torch.ones_like(c[..., :1]), c.square().sum(dim=2, keepdim=True) + 1.0], dim=2)
        d = torch.bmm(c_aug, _take(self.x_aug, img))  # (n, r*K, P), all > 0
        code = d.view(torch.int32).view(n, r, k, self.p)
        code.bitwise_and_(self.mask).bitwise_or_(self.low)
        best = code.amin(dim=2)  # (n, r, P)
        labels = (best & ((1 << self.bits) - 1)).long()
        dist = (best & self.mask).view(torch.float32) - 1.0
        if self.weights is not None:
            dist = dist * _take(self.weights, img)[:, None, :]
        sse = dist.sum(dim=2)
        rows = n * r
        flat = (labels + (torch.arange(rows, device=c.device) * k).view(n, r, 1)).view(-1)
        w = _take(self.w, img)  # (n, C, P)
        parts = [
            torch.bincount(flat, weights=w[:, j, None, :].expand(n, r, self.p).reshape(-1), minlength=rows * k)
            for j in range(w.shape[1])
        ]
        if self.packed:
            hi = torch.floor(parts[0] / 2.0**24)
            cnt = torch.floor(parts[1] / 2.0**24)
            sums = torch.stack([parts[0] - hi * 2.0**24, hi, parts[1] - cnt * 2.0**24], dim=1)
        else:
            sums, cnt = torch.stack(parts[:3], dim=1), parts[3]
        return (
            labels if need_labels else None,
            sums.float().view(n, r, k, 3),
            cnt.float().view(n, r, k),
            sse,
        )


def _take(x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    return x if idx is None else x[idx]


class _FlatStep:
    """Adapts a backend's ``kmeans_assign_accumulate`` (the contract of
    ``colorizer.ops.reference.kmeans_assign_accumulate``: points (Bp, P, 3), centers (B, K, 3) with
    B a multiple of Bp, optional weights (Bp, P)) to the grouped call of ``_TorchStep``.

    On CUDA, integer pixels 0..255 are passed as uint8 (3 bytes read per pixel instead of 12). An op
    that declares ``seeding_kernels`` (the Triton one: ``(potentials, update)``) also seeds with them.
    """

    def __init__(self, fn: Callable, points: torch.Tensor, weights: torch.Tensor | None):
        self.fn, self.weights = fn, weights
        # One device sync for the whole check.
        if points.is_cuda and bool(((points == points.round()) & (points >= 0) & (points < 256)).all()):
            points = points.to(torch.uint8)
        self.points = points
        seeding = getattr(fn, "seeding_kernels", None)
        self.seeding_kernels = None if seeding is None else (*seeding, points, weights)

    def __call__(self, sel, centers, need_labels=False):
        img, rst = sel
        n, r, k, _ = centers.shape
        w = None if self.weights is None else _take(self.weights, img)
        cen = centers.reshape(n * r, k, 3).float().contiguous()
        labels, sums, counts, sse = self.fn(_take(self.points, img), cen, w, with_labels=need_labels)
        return (
            labels.view(n, r, -1).long() if need_labels else None,
            sums.view(n, r, k, 3).float(),
            counts.view(n, r, k).float(),
            sse.view(n, r).float(),
        )


def step_for(op: Callable) -> Callable:
    """The step factory ``kmeans`` takes, for an OpSet's ``kmeans_assign_accumulate``: the eager op
    (the reference) runs as ``_TorchStep``, any other as itself through ``_FlatStep``."""
    if op is reference.kmeans_assign_accumulate:
        return _TorchStep
    return lambda points, k, weights=None: _FlatStep(op, points, weights)


# --------------------------------------------------------------------------------------------------
# Seeding, Lloyd, restarts
# --------------------------------------------------------------------------------------------------


def _augment(points: torch.Tensor) -> torch.Tensor:
    """float32 (N, 5, P) = [x, |x|^2, 1] for points (N, P, 3): distances become one GEMM."""
    pt = points.transpose(1, 2)
    return torch.cat([pt, points.square().sum(dim=2)[:, None], torch.ones_like(pt[:, :1])], dim=1).contiguous()


def _sq_dist_aug(a: torch.Tensor, x_aug: torch.Tensor) -> torch.Tensor:
    """Squared distances (N, M, P) from a (N, M, 3) to the points given as x_aug (N, 5, P) = [x, |x|^2, 1].

    Exact for integer-valued inputs below 2**12 in magnitude (every product and partial sum is an
    integer below 2**24), which is the case during seeding; clamped at 0 otherwise.
    """
    a_aug = torch.cat([-2.0 * a, torch.ones_like(a[..., :1]), a.square().sum(dim=2, keepdim=True)], dim=2)
    return torch.bmm(a_aug, x_aug).clamp_(min=0.0)


def _seed_kmeanspp(points, x_aug, weights, restarts, k, local_trials, generator, kernels=None):
    """Greedy k-means++ for every (image, restart): centers float32 (N, R, K, 3) drawn from the points.

    The first center is a random pixel; each later one is the best of ``local_trials`` candidates
    sampled with probability proportional to the current squared distance, "best" being the one
    that minimises the total squared distance (Arthur & Vassilvitskii; scikit-learn's greedy variant,
    OpenCV's with 3 trials). Pixels count with their weight (N, P) (None: 1 each). If every distance
    is 0 (fewer distinct colors than centers so far) the last pixel is drawn, duplicating a center.
    ``kernels`` = (potentials, update, points, weights) from ``colorizer.kernels.kmeans`` computes
    the trial potentials and the distance update without the (N, R, trials, P) temporary.
    Returns centers and the final potential (N, R) float64.
    """
    n, p, _ = points.shape
    dev = points.device
    rows = torch.arange(n, device=dev)[:, None]
    w = torch.ones(n, 1, p, device=dev) if weights is None else weights[:, None, :].float()

    def draw(mass: torch.Tensor, count: int) -> torch.Tensor:
        # float64 running sums so the sampling threshold does not lose small masses at the end;
        # right=True: the first pixel whose running sum exceeds u * total, so zero-mass pixels are
        # never drawn unless the total is zero.
        cum = mass.double().cumsum_(dim=2)
        u = torch.rand(n, mass.shape[1], count, device=dev, generator=generator, dtype=torch.float64)
        return torch.searchsorted(cum, u * cum[:, :, -1:], right=True).clamp_(max=p - 1)

    first = draw(w, restarts).view(n, restarts)  # (N, R): a pixel drawn by weight
    centers = torch.empty(n, restarts, k, 3, device=dev)
    centers[:, :, 0] = points[rows, first]
    dist = _sq_dist_aug(centers[:, :, 0], x_aug)  # (N, R, P)
    for j in range(1, k):
        idx = draw(dist * w, local_trials)  # (N, R, L)
        cand = points[rows[:, :, None], idx]  # (N, R, L, 3)
        if kernels is not None:
            potentials, update, kpoints, kweights = kernels
            flat = dist.view(n * restarts, p)
            pot = potentials(kpoints, flat, cand.view(n * restarts, local_trials, 3), kweights)
            best = pot.view(n, restarts, local_trials).argmin(dim=2)
            chosen = cand.gather(2, best[:, :, None, None].expand(-1, -1, 1, 3)).squeeze(2)  # (N, R, 3)
            update(kpoints, flat, chosen.reshape(n * restarts, 3))
            centers[:, :, j] = chosen
            continue
        d_new = _sq_dist_aug(cand.view(n, restarts * local_trials, 3), x_aug).view(n, restarts, local_trials, p)
        d_new = torch.minimum(d_new, dist[:, :, None, :], out=d_new)
        # One batched mat-vec instead of a weighted (N, R, L, P) temporary and its sum.
        pot = torch.bmm(d_new.view(n, restarts * local_trials, p), w.view(n, p, 1)).view(n, restarts, local_trials)
        best = pot.argmin(dim=2)  # (N, R); ties -> first candidate
        centers[:, :, j] = cand.gather(2, best[:, :, None, None].expand(-1, -1, 1, 3)).squeeze(2)
        dist = d_new.gather(2, best[:, :, None, None].expand(-1, -1, 1, p)).squeeze(2)
    return centers, (dist * w).sum(dim=2, dtype=torch.float64)


def _repair_empty(points, weights, sums, counts, labels_fn):
    """OpenCV's empty-cluster repair, in place, for the (rare) rows that have an empty cluster.

    For each empty cluster k in index order: take the largest cluster (first on ties), find its
    pixel farthest from that cluster's mean (last on ties, as OpenCV), and move one pixel of that
    color to cluster k. A largest cluster of one pixel is left alone (OpenCV would fail); cluster k
    then keeps its previous center. points (n, P, 3), weights (n, P) or None; sums (n, r, K, 3) and
    counts (n, r, K) are updated; labels_fn() returns the labels (n, r, P) that produced them.
    """
    empty_rows = (counts == 0).any(dim=2)  # (n, r)
    labels = labels_fn()
    ni, ri = empty_rows.nonzero(as_tuple=True)
    x = points[ni]  # (E, P, 3)
    lab = labels[ni, ri]  # (E, P)
    # Pixels of each color still in their cluster (weights > 1 after de-duplication).
    rem = torch.ones(lab.shape, device=x.device) if weights is None else weights[ni].float().clone()
    s = sums[ni, ri]  # (E, K, 3)
    cnt = counts[ni, ri]  # (E, K)
    e, p = lab.shape
    ar = torch.arange(e, device=x.device)
    for k in range(cnt.shape[1]):
        todo = (cnt[:, k] == 0) & (cnt.max(dim=1).values >= 2)
        if not bool(todo.any()):
            continue
        big = cnt.argmax(dim=1)
        mean = s[ar, big] / cnt[ar, big].clamp(min=1.0)[:, None]
        d = (x - mean[:, None, :]).square().sum(dim=2)
        d = torch.where((lab == big[:, None]) & (rem > 0), d, torch.full_like(d, -1.0))
        far = (p - 1) - d.flip(1).argmax(dim=1)  # last farthest
        xf = x[ar, far]
        upd = todo.float()
        s[ar, big] -= xf * upd[:, None]
        s[ar, k] += xf * upd[:, None]
        cnt[ar, big] -= upd
        cnt[ar, k] += upd
        rem[ar, far] -= upd
    sums[ni, ri] = s
    counts[ni, ri] = cnt


def dedup_colors(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct colors per image and their multiplicities, for integer-valued pixels 0..255.

    points float (N, P, 3) -> (colors float32 (N, U, 3), weights float32 (N, U)) with U the largest
    number of distinct colors in any image; shorter rows are padded with their first color at
    weight 0. K-means on (colors, weights) is K-means on the pixels: every sum and count is the same.
    """
    n, p, _ = points.shape
    q = points.long()
    code = (q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]
    code, _ = code.sort(dim=1)
    first = torch.ones_like(code, dtype=torch.bool)
    first[:, 1:] = code[:, 1:] != code[:, :-1]
    uid = first.long().cumsum(dim=1) - 1  # (N, P): index of each pixel's color among the distinct ones
    u = int(uid[:, -1].max()) + 1
    weights = torch.zeros(n, u, device=points.device).scatter_add_(1, uid, torch.ones_like(code, dtype=torch.float32))
    ucode = code[:, :1].expand(n, u).clone().scatter_(1, uid, code)
    colors = torch.stack([(ucode >> 16) & 255, (ucode >> 8) & 255, ucode & 255], dim=2).float()
    return colors, weights


MAX_K = 256  # colors per palette: beyond this it is no longer a palette, and the cost grows with k**2


def _check_k_and_seed(k, seed) -> None:
    """ConfigError (one line) for k outside 1..MAX_K or a seed outside colorizer.limits' range."""
    from colorizer.limits import check_seed

    if isinstance(k, bool) or not hasattr(k, "__index__") or not 1 <= int(k) <= MAX_K:
        raise ConfigError(f"palette: k must be an integer from 1 to {MAX_K} colors, got {k!r}")
    check_seed(seed, "palette seed")


def kmeans(
    points: torch.Tensor,
    k: int = 9,
    restarts: int = 10,
    iters: int = 10,
    eps: float = 1.0,
    seed: int = 0,
    step: Callable | None = None,
    local_trials: int | None = None,
    weights: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    polish: int = 10,
    polish_top: int = 3,
    seed_pool: int = 1,
    prune_after: int = 2,
    prune_keep: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched K-means, one clustering per image, best of ``restarts`` kept.

    Args:
        points: float32 (N, P, 3) pixels (integer values 0..255 give exact seeding distances).
        k, restarts: clusters and independent restarts per image.
        iters, eps: OpenCV's TERM_CRITERIA_MAX_ITER / EPS: seeding is iteration 1 and each center
            update is one more, so at most ``max(iters, 2) - 1`` updates; a restart stops as soon as
            its largest squared center shift is <= eps**2.
        seed: seeds a generator on the points' device (unless ``generator`` is given); results are
            deterministic for a seed, a batch and a device (CPU and CUDA draw different numbers).
        step: a factory ``step(points, k, weights)`` returning the grouped assign/accumulate callable
            (default ``_TorchStep``, the eager step; ``step_for`` makes one from a backend's op).
        local_trials: candidates per greedy k-means++ step (default 2 + int(ln k)).
        weights: optional (N, P) pixel multiplicities (see ``dedup_colors``); 0 = padding.
        prune_after, prune_keep: after ``prune_after`` center updates only the ``prune_keep``
            fraction of restarts with the lowest SSE keeps iterating (0 or 1.0 disables).
        polish, polish_top: after the OpenCV-style iterations, up to ``polish`` more Lloyd
            iterations (until no center moves by 1e-3) for the ``polish_top`` best restarts, each
            kept only if it improves; 0 disables. Together with the restart budget of
            ``extract_palette`` this is what puts the result reliably at or below OpenCV's
            compactness (whose own seed-to-seed spread is ~1% on photographs, more on drawings).
        seed_pool: draw ``seed_pool * restarts`` seedings and iterate the ``restarts`` most compact
            ones (1 = off; measured not to help, kept for experiments).

    Returns:
        centers: uint8 (N, K, 3), the truncated centers of the best restart (unordered);
        counts: int64 (N, K), pixels (by weight) whose nearest truncated center is k (ties: lowest k);
        sse: float32 (N,), compactness of the truncated centers (sum of squared distances).
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (N, P, 3), got {tuple(points.shape)}")
    _check_k_and_seed(k, seed)
    if k < 1 or restarts < 1 or iters < 1:
        raise ConfigError(f"palette: k, restarts and iters must be >= 1 (got {k}, {restarts}, {iters})")
    local_trials = local_trials or 2 + int(math.log(k))
    points = points.float().contiguous()
    n, p, _ = points.shape
    if p == 0:
        raise ImageError("palette: an image has no pixels")
    dev = points.device
    if generator is None:
        generator = torch.Generator(device=dev)
        generator.manual_seed(int(seed))
    step = (step or _TorchStep)(points, k, weights)
    pool = restarts * max(1, int(seed_pool))
    kernels = getattr(step, "seeding_kernels", None)
    centers, potential = _seed_kmeanspp(
        points, _augment(points), weights, pool, k, local_trials, generator, kernels=kernels
    )
    if pool > restarts:
        # Keep the restarts whose seeds are already the most compact: seeding is cheaper than Lloyd.
        keep = potential.argsort(dim=1, stable=True)[:, :restarts]
        centers = centers.gather(1, keep[..., None, None].expand(-1, -1, k, 3))

    eps2 = float(eps) ** 2
    updates = max(iters, 2) - 1
    # Work only on what still iterates: with several images, the images with a restart still
    # moving (img); with one image, its moving restarts (rst). Finished restarts keep their centers.
    active = torch.ones(n, restarts, dtype=torch.bool, device=dev)
    img = rst = None
    for it in range(updates):
        cen = centers if img is None else centers[img]
        cen = cen if rst is None else cen[:, rst]
        _, sums, counts, sse = step((img, rst), cen)
        if bool((counts == 0).any()):
            pts, wts = _take(points, img), None if weights is None else _take(weights, img)
            _repair_empty(pts, wts, sums, counts, lambda s=(img, rst), c=cen: step(s, c, need_labels=True)[0])
        # A cluster still empty (only with fewer distinct colors than clusters) keeps its center.
        new = torch.where(counts[..., None] > 0, sums / counts.clamp(min=1.0)[..., None], cen)
        act = None
        if rst is None:
            act = active if img is None else active[img]
            new = torch.where(act[..., None, None], new, cen)
        shift = (new - cen).square().sum(dim=3).amax(dim=2)  # (n_sel, r_sel)
        if img is not None:
            centers.index_copy_(0, img, new)
        elif rst is not None:
            centers[:, rst] = new
        else:
            centers = new
        if it == updates - 1:
            break
        moving = shift > eps2
        if it == prune_after - 1 and prune_keep < 1.0:
            # Successive halving: only the restarts that are already the most compact keep
            # iterating (the others stay candidates for the final choice with their centers).
            keep_n = max(1, math.ceil(restarts * prune_keep))
            score = sse.double() if act is None else torch.where(act, sse.double(), math.inf)
            order = score.argsort(dim=1, stable=True)
            rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=dev).expand_as(order))
            moving = moving & (rank < keep_n)
        if rst is not None:
            active[:, rst] = moving
            rst = rst[moving[0]]
            if rst.numel() == 0:
                break
            continue
        act = (active if img is None else active[img]) & moving
        if img is None:
            active = act
        else:
            active.index_copy_(0, img, act)
        keep = act.any(dim=1)
        if n == 1:
            rst = act[0].nonzero().squeeze(1)
            if rst.numel() == 0:
                break
        elif not bool(keep.all()):
            img = keep.nonzero().squeeze(1) if img is None else img[keep]
            if img.numel() == 0:
                break

    # OpenCV's np.uint8(centers): truncation toward zero (centers are >= 0 here; clamp for safety).
    trunc = centers.clamp(0.0, 255.0).floor_()
    _, _, counts, sse = step((None, None), trunc)
    if polish > 0:
        # More Lloyd iterations for the most promising restarts only (the `top` best by truncated
        # compactness; 1/R of the cost per iteration each) until their centers stop moving:
        # OpenCV stops at a shift of eps, which leaves compactness on the table. A polished
        # restart replaces its unpolished self only where that improves its truncated compactness.
        top = min(polish_top, restarts)
        sel = sse.argsort(dim=1, stable=True)[:, :top]  # (N, top)
        cen = centers.gather(1, sel[..., None, None].expand(-1, -1, k, 3))
        for _ in range(polish):
            _, sums, counts1, _ = step((None, None), cen)
            new = torch.where(counts1[..., None] > 0, sums / counts1.clamp(min=1.0)[..., None], cen)
            done = bool(((new - cen).abs() < 1e-3).all())
            cen = new
            if done:
                break
        t2 = cen.clamp(0.0, 255.0).floor_()
        _, _, c2, s2 = step((None, None), t2)
        s1 = sse.gather(1, sel)
        better = s2 < s1
        trunc = trunc.scatter(
            1,
            sel[..., None, None].expand(-1, -1, k, 3),
            torch.where(better[..., None, None], t2, trunc.gather(1, sel[..., None, None].expand(-1, -1, k, 3))),
        )
        counts = counts.scatter(
            1,
            sel[..., None].expand(-1, -1, k),
            torch.where(better[..., None], c2, counts.gather(1, sel[..., None].expand(-1, -1, k))),
        )
        sse = sse.scatter(1, sel, torch.minimum(s1, s2))
    best = sse.argmin(dim=1)  # (N,), ties -> lowest restart
    out = trunc.gather(1, best[:, None, None, None].expand(-1, 1, k, 3))
    cnt = counts.gather(1, best[:, None, None].expand(-1, 1, k))
    sse = sse.gather(1, best[:, None])
    return out.squeeze(1).to(torch.uint8), cnt.squeeze(1).round().long(), sse.squeeze(1)


# More restarts on images with many repeated colors, within the work of the requested restarts on
# all pixels: restarts * min(MAX_EFFORT, P / distinct colors) (never fewer than asked). Flat-colored
# drawings (the use case) have tens to hundreds of colors in thousands of pixels; their K-means
# landscape is rugged (OpenCV's own seed-to-seed spread puts ~14% of them > 1% apart), and these
# restarts are what brings the result reliably to OpenCV's best-of-10 or better. Measured on 144
# images (photo crops and drawings, two seeds): cap 4 left 2-4% of images > 1% worse than OpenCV and
# a worst of 1.069, cap 8 at most 1.4% and 1.026. Photographs (P / distinct ~ 1-2) change little.
MAX_EFFORT = 8


# Largest seeding temporary (float32 elements) of one batched chunk: 2**27 = 512 MiB.
SEEDING_ELEMENTS = 1 << 27


def _effort(restarts: int, pixels: int, distinct: int) -> int:
    return max(restarts, round(restarts * min(MAX_EFFORT, pixels / max(distinct, 1))))


@functools.cache
def _openmp_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="openmp")


def _on_one_openmp_thread(op: Callable, device: torch.device, fn: Callable, *args):
    """Run ``fn(*args)`` in a palette worker thread whose torch ops, and ``op``'s, use one OpenMP thread.

    OpenMP keeps the thread count per thread (the nthreads-var ICV of the thread's task), so
    ``omp_set_num_threads(1)`` here (through threadpoolctl, which finds the OpenMP runtime torch
    loaded) changes neither torch's setting for the process nor any other thread's. ATen sets a
    thread's count from the process setting the first time the thread runs a parallel loop, once
    per shared library (a compiled extension such as ``colorizer._C`` keeps its own flag), so torch
    and ``op`` each run once on a tiny input first (microseconds).
    """
    torch.get_num_threads()
    op(torch.zeros(1, 1, 3, device=device), torch.zeros(1, 1, 3, device=device))
    _openmp_controller().limit(limits=1)
    return fn(*args)


# Worker threads are kept for the process: a new thread paid ~7 ms of per-thread library setup on
# its first K-means (measured, one 256 px image: 8 ms in a kept thread, 15 ms in a new one). A forked
# child (a DataLoader worker) starts without them.
_EXECUTORS: dict[int, ThreadPoolExecutor] = {}
_EXECUTORS_LOCK = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    with _EXECUTORS_LOCK:
        if workers not in _EXECUTORS:
            _EXECUTORS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="colorizer-palette")
        return _EXECUTORS[workers]


def _forget_executors_after_fork() -> None:
    global _EXECUTORS_LOCK
    _EXECUTORS.clear()
    _EXECUTORS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_executors_after_fork)


def kmeans_batch(
    points: torch.Tensor,
    k: int,
    restarts: int,
    iters: int,
    eps: float,
    seed: int,
    op: Callable = reference.kmeans_assign_accumulate,
    per_image: bool | None = None,
    threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``kmeans`` the fastest way for the device: (centers uint8 (N, K, 3), counts (N, K)).

    points: float32 (N, P, 3) pixels; ``op``: an OpSet's ``kmeans_assign_accumulate`` (see
    ``step_for``). Pixels are de-duplicated into (color, multiplicity) first; see ``MAX_EFFORT`` for
    the restarts. ``per_image`` forces the CPU (True) or GPU (False) layout.

    CPU layout: the whole batch's (R*K, P) distance slabs would not fit in cache, so each image is
    clustered on its own, in ``threads`` Python worker threads (default ``torch.get_num_threads()``;
    torch ops release the GIL; the threads are kept for later calls), each running its torch ops on
    one OpenMP thread (see ``_on_one_openmp_thread``): one image's ops are too small to split, and
    splitting them on a busy machine cost up to 10x (measured on a shared 2-core box). torch's thread
    setting for the process and the calling thread is not touched. Each image gets a generator seeded
    with ``seed``, so its palette depends neither on the rest of the batch nor on scheduling.
    """
    p = points.shape[1]
    step = step_for(op)
    if per_image if per_image is not None else points.device.type == "cpu":

        def one(i):
            colors, weights = dedup_colors(points[i : i + 1])
            r = _effort(restarts, p, colors.shape[1])
            c, n, _ = kmeans(colors, k, r, iters, eps, seed, step=step, weights=weights)
            return c, n

        workers = torch.get_num_threads() if threads is None else threads
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"palette: threads must be a positive integer, got {threads!r}")
        n_img = points.shape[0]
        if not getattr(op, "thread_safe", True) or (workers == 1 and torch.get_num_threads() == 1):
            results = [one(i) for i in range(n_img)]
        else:
            # Also one image (or threads=1) runs in a worker thread, where its ops get one OpenMP
            # thread without changing the caller's.
            pool = _executor(workers)  # (threads start as tasks need them)
            futures = [pool.submit(_on_one_openmp_thread, op, points.device, one, i) for i in range(n_img)]
            results = [f.result() for f in futures]
        return torch.cat([c for c, _ in results]), torch.cat([n for _, n in results])
    # Batched (GPU): rows padded to the batch's largest number of distinct colors (weight 0), in
    # chunks of images whose seeding temporaries (n, R, trials, P) stay under SEEDING_ELEMENTS.
    colors, weights = dedup_colors(points)
    r = _effort(restarts, p, colors.shape[1])
    trials = 2 + int(math.log(k))
    chunk = max(1, SEEDING_ELEMENTS // (r * trials * colors.shape[1]))
    out = [], []
    for i in range(0, colors.shape[0], chunk):
        w = None if weights is None else weights[i : i + chunk]
        c, n, _ = kmeans(colors[i : i + chunk], k, r, iters, eps, seed + i, step=step, weights=w)
        out[0].append(c)
        out[1].append(n)
    return torch.cat(out[0]), torch.cat(out[1])
