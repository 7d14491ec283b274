"""The reference's palette with OpenCV, for comparison with ``colorizer.palette`` (benchmarks, tests).

The reference model takes 9 colors from its reference image with a 0.25x ``INTER_AREA`` resize and
``cv2.kmeans(K=9, attempts=10, KMEANS_PP_CENTERS, criteria=(EPS + MAX_ITER, 10, 1.0))`` on the float32
0..255 pixels, centers truncated to uint8 (``np.uint8(centers)``). Two forms:

- ``reference_palettes(images)``: exactly the reference's loop (``cv2.resize`` + ``cv2.kmeans`` per
  image), centers in cv2's (unsorted) order. What the speed comparisons time.
- ``extract_palette_cv2(images)``: the same ``cv2.kmeans`` per image on the pixels of
  ``colorizer.palette``'s own downscale (bit-exact with ``cv2.resize``), with ``extract_palette``'s
  input conventions and color order, so the two can be compared palette for palette (the quality
  tests).

Needs OpenCV (``pip install opencv-python-headless``, the ``palette`` extra); a missing OpenCV is a
``MissingDependencyError``.
"""

from __future__ import annotations

import numpy as np
import torch

from colorizer.errors import MissingDependencyError

K, RESTARTS, ITERS, EPS = 9, 10, 10, 1.0  # the reference's settings


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependencyError("the cv2 palette needs OpenCV: pip install opencv-python-headless") from exc
    return cv2


def cv2_kmeans(points: torch.Tensor, k: int = K, restarts: int = RESTARTS, iters: int = ITERS, eps: float = EPS,
               seed: int = 0) -> torch.Tensor:  # fmt: skip
    """One ``cv2.kmeans(KMEANS_PP_CENTERS)`` per image: uint8 (N, k, 3) centers in cv2's order.

    points: (N, P, 3) pixels, integer values 0..255 (any real dtype, any device; the result is on
    the points' device). Images with fewer than k pixels (cv2 refuses them) repeat their pixels
    cyclically, which clusters the same colors. ``cv2.setRNGSeed(seed)`` once before the loop.
    """
    cv2 = _cv2()
    cv2.setRNGSeed(int(seed))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, int(iters), float(eps))
    out = []
    for x in points.detach().cpu().numpy().astype(np.float32):
        if x.shape[0] < k:
            x = np.resize(x, (k, 3))
        _, _, centers = cv2.kmeans(x, k, None, criteria, int(restarts), cv2.KMEANS_PP_CENTERS)
        out.append(np.uint8(centers))
    return torch.from_numpy(np.stack(out)).to(points.device)


def extract_palette_cv2(images, k: int = K, restarts: int = RESTARTS, iters: int = ITERS, eps: float = EPS,
                        seed: int = 0, downscale: bool = True) -> torch.Tensor:  # fmt: skip
    """``colorizer.palette.extract_palette``'s inputs and outputs, with ``cv2.kmeans`` as the K-means.

    images: as ``extract_palette`` (uint8 (H, W, 3) / (N, H, W, 3), or float (N, 3, H, W) in [-1, 1]).
    Returns uint8 (N, k, 3) ((k, 3) for one image), ordered like ``extract_palette`` (largest
    cluster first, ties by color): ``order_palette`` of the centers and their nearest-pixel counts.
    """
    from colorizer.palette import assign_accumulate, image_pixels, order_palette

    points, single = image_pixels(images, downscale)
    centers = cv2_kmeans(points, k, restarts, iters, eps, seed)
    _, _, counts, _ = assign_accumulate(points, centers.float())
    palette = order_palette(centers, counts.round().long())
    return palette[0] if single else palette


def reference_palettes(images: np.ndarray, seed: int = 0, k: int = K, restarts: int = RESTARTS,
                       iters: int = ITERS, eps: float = EPS) -> np.ndarray:  # fmt: skip
    """The reference's loop on uint8 (N, H, W, 3) RGB images: ``cv2.resize(fx=fy=0.25, INTER_AREA)``
    then ``cv2.kmeans`` per image; uint8 (N, k, 3) centers in cv2's (unsorted) order."""
    cv2 = _cv2()
    small = np.stack([cv2.resize(im, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA) for im in images])
    return cv2_kmeans(torch.from_numpy(small.reshape(len(small), -1, 3)), k, restarts, iters, eps, seed).numpy()
