"""The palette API: ``extract_palette`` (K-means palettes of a batch), ``compactness``,
``palette_planes`` (the generator's 27 input planes) and ``parse_palette`` (hex colors)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from colorizer.errors import ConfigError, KernelsUnavailable
from colorizer.ops import BACKENDS, get_ops, reference
from colorizer.palette.clustering import _check_k_and_seed, kmeans_batch
from colorizer.palette.resize import image_pixels

__all__ = ["compactness", "extract_palette", "order_palette", "palette_planes", "parse_palette",
           "resolve_kernels"]  # fmt: skip

# kernels="auto": the runtime's one policy (colorizer.runtime.device.AUTO_BACKENDS): the first backend for the
# device type whose OpSet has its own K-means step (the native one only when the compiled library takes
# point weights, see colorizer.native), else "eager".
_RENAMED = {"torch": "eager", "cv2": "benchmarks/palette_cv2.py (extract_palette_cv2)"}


def _has_own_step(name: str) -> bool:
    try:
        ops = get_ops(name)
    except KernelsUnavailable:
        return False
    return ops.kmeans_assign_accumulate is not reference.kmeans_assign_accumulate


def resolve_kernels(kernels: str, device: torch.device) -> str:
    """The backend name ``extract_palette`` uses for ``kernels`` on ``device`` (ConfigError for an unknown one)."""
    if kernels == "auto":
        from colorizer.runtime.device import AUTO_BACKENDS

        return next((name for name in AUTO_BACKENDS.get(device.type, ()) if _has_own_step(name)), "eager")
    if kernels not in BACKENDS:
        moved = f" (now: {_RENAMED[kernels]})" if kernels in _RENAMED else ""
        raise ConfigError(
            f"palette: unknown kernels backend {kernels!r}{moved}; choose from auto, {', '.join(BACKENDS)}",
            option="kernels",
        )
    return kernels


def extract_palette(
    images,
    k: int = 9,
    restarts: int = 10,
    iters: int = 10,
    eps: float = 1.0,
    seed: int = 0,
    kernels: str = "auto",
    downscale: bool = True,
    threads: int | None = None,
) -> torch.Tensor:
    """K-means palettes of a batch of images, computed on the images' device.

    Args:
        images: uint8 RGB numpy array or torch tensor (H, W, 3) or (N, H, W, 3); or a floating torch
            tensor (N, 3, H, W) in [-1, 1] (the training batch), mapped to 0..255 by (x + 1) * 127.5
            and rounded to the nearest integer (so x / 255 * 2 - 1 round-trips to the same bytes).
        k: colors per palette. restarts: k-means restarts per image (OpenCV's ``attempts``).
        iters, eps: OpenCV's criteria (MAX_ITER, EPS): at most ``max(iters, 2) - 1`` center updates
            after seeding; a restart stops once its largest center shift is <= eps (in 0..255 units).
        seed: deterministic for a seed on a given device and implementation.
        kernels: the ``colorizer.ops`` backend whose ``kmeans_assign_accumulate`` runs the Lloyd step:
            "eager" (pure torch, any device), "triton" (CUDA, or CPU tensors under
            ``TRITON_INTERPRET=1``), "native" (the compiled extension), any other name in
            ``colorizer.ops.BACKENDS`` (a backend without its own step runs the eager one), or
            "auto" (CUDA: "triton" if it can be used, else "eager"; CPU: "native" if the extension
            is built with a K-means step that takes point weights, else "eager").
        downscale: first apply the reference's 0.25x area resize (``area_downscale``).
        threads: on the CPU, images are clustered one per Python thread in this many threads
            (default ``torch.get_num_threads()``). torch's intra-op thread count is left as the
            caller set it; one image's ops are small, and splitting them over several intra-op
            threads costs more than it gains on a busy machine, so a process that makes many CPU
            palettes is fastest with ``torch.set_num_threads(1)`` of its own.

    Returns:
        uint8 (N, k, 3) RGB palettes ((k, 3) for a single (H, W, 3) image) on the input's device.
        Color order: by the number of pixels whose nearest palette color it is, largest first; equal
        counts by color ascending (R, then G, then B). Duplicate colors (images with fewer than k
        distinct colors) come last among equals since they own no pixels.

    Cost notes: ``restarts`` is a minimum; images whose colors repeat get more (``MAX_EFFORT``;
    on a GPU batch the budget follows the batch's largest distinct-color count).
    """
    _check_k_and_seed(k, seed)
    if k < 1 or restarts < 1 or iters < 1:
        raise ConfigError(f"palette: k, restarts and iters must be >= 1 (got {k}, {restarts}, {iters})")
    points, single = image_pixels(images, downscale)
    op = get_ops(resolve_kernels(kernels, points.device)).kmeans_assign_accumulate
    centers, counts = kmeans_batch(points, k, restarts, iters, eps, seed, op, threads=threads)
    palette = order_palette(centers, counts)
    return palette[0] if single else palette


def order_palette(centers: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Sort each palette by cluster size, largest first; equal sizes by color (R, then G, then B) ascending.

    centers uint8 (N, K, 3); counts integer (N, K). Returns uint8 (N, K, 3). This is the documented
    color order of ``extract_palette`` (and of ``benchmarks/palette_cv2.py``'s).
    """
    code = (centers[..., 0].long() << 16) | (centers[..., 1].long() << 8) | centers[..., 2].long()
    key = -counts.long() * (1 << 24) + code
    order = key.argsort(dim=1, stable=True)
    return centers.gather(1, order[..., None].expand(-1, -1, 3))


def compactness(pixels, centers) -> torch.Tensor | float:
    """Sum over pixels of the squared distance to the nearest center, in float64.

    pixels (P, 3) or (N, P, 3); centers (K, 3) or (N, K, 3); numpy or torch, any real dtype.
    Returns a float for one image, else a float64 tensor (N,) on the pixels' device.
    """
    px = torch.as_tensor(pixels).double()
    cs = torch.as_tensor(centers).double().to(px.device)
    single = px.dim() == 2
    if single:
        px = px[None]
    if cs.dim() == 2:
        cs = cs[None].expand(px.shape[0], -1, -1)
    d = torch.cdist(px, cs).square() if px.shape[1] * cs.shape[1] > 0 else px.new_zeros(px.shape[0], 0, 0)
    # cdist in float64 via the expansion can lose ~1e-9 relative; recompute the min exactly.
    nearest = d.argmin(dim=2)
    exact = (px - cs.gather(1, nearest[..., None].expand(-1, -1, 3))).square().sum(dim=(1, 2))
    return float(exact[0]) if single else exact


def palette_planes(palette, height: int, width: int) -> torch.Tensor:
    """The generator's palette input: float32 (N, 3k, H, W) in [-1, 1] on the palette's device.

    palette: (k, 3) or (N, k, 3), uint8 or float 0..255 (RGB). Plane 3j + c is color j's channel c
    broadcast over H x W and scaled like an image, x / 255 * 2 - 1. The result is an expanded view
    (no H x W copy); call ``.contiguous()`` if a kernel needs dense memory.
    """
    p = torch.as_tensor(palette)
    if p.dim() == 2:
        p = p[None]
    if p.dim() != 3 or p.shape[-1] != 3:
        raise ConfigError(f"palette must be (k, 3) or (N, k, 3), got {tuple(p.shape)}")
    if height < 1 or width < 1:
        raise ConfigError(f"palette planes need a positive size, got {height}x{width}")
    v = p.float() / 255.0 * 2.0 - 1.0
    return v.reshape(p.shape[0], -1, 1, 1).expand(-1, -1, int(height), int(width))


def parse_palette(text: str | Sequence[str], k: int = 9) -> torch.Tensor:
    """Parse "#rrggbb,#rgb,..." (or a list of such strings) into uint8 (k, 3) RGB.

    The leading '#' is optional; spaces around commas are ignored. Fewer than k colors are repeated
    cyclically (a, b, c -> a, b, c, a, b, c, a, b, c); more than k, none, or a malformed color raise
    ConfigError.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise ConfigError("palette: no colors given (expected e.g. '#ff0000,#00ff00')")
    if len(items) > k:
        raise ConfigError(f"palette: {len(items)} colors given, at most {k} allowed")
    colors = []
    for s in items:
        h = s[1:] if s.startswith("#") else s
        if len(h) == 3:
            h = "".join(ch * 2 for ch in h)
        if len(h) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in h):
            raise ConfigError(f"palette: bad color {s!r} (expected #rrggbb or #rgb)")
        colors.append([int(h[i : i + 2], 16) for i in (0, 2, 4)])
    reps = [colors[i % len(colors)] for i in range(k)]
    return torch.tensor(reps, dtype=torch.uint8)
