"""Color palettes: K-means over a reference image's downscaled pixels, batched on the device.

The reference model takes 9 colors from its reference image with OpenCV: a 0.25x ``INTER_AREA``
resize, then ``cv2.kmeans(K=9, attempts=10, KMEANS_PP_CENTERS, criteria=(EPS + MAX_ITER, 10, 1.0))``
on the float32 0..255 pixels, centers truncated to uint8 (``np.uint8(centers)``). This module computes
the same thing for a whole batch at once, on whatever device the batch lives on. The package:

- ``resize``: ``area_downscale``, the 0.25x area resize, bit-exact with OpenCV on uint8, and
  ``image_pixels`` (images to (N, P, 3) pixels).
- ``clustering``: ``kmeans``, batched greedy k-means++ seeding, restarts as extra batch rows, Lloyd
  iterations with OpenCV's stopping rule per row, OpenCV's empty-cluster repair, uint8 truncation;
  ``kmeans_batch``, the CPU and GPU layouts; ``dedup_colors``.
- ``api``: ``extract_palette`` (the above plus a deterministic color order, largest cluster first),
  ``compactness`` (the quality measure: sum of squared distances to the nearest center, float64),
  ``palette_planes`` (the 27 generator input planes), ``parse_palette`` (a palette from hex colors).

The Lloyd step (nearest center, per-cluster sums and counts, SSE) is the ``colorizer.ops`` op
``kmeans_assign_accumulate``; its oracle, ``colorizer.ops.reference.kmeans_assign_accumulate``, is
re-exported here as ``assign_accumulate``. ``extract_palette(kernels=...)`` names the backend whose op
runs it: ``"eager"`` (any device), ``"triton"`` (one Triton kernel; CUDA, or CPU tensors under
``TRITON_INTERPRET=1``), ``"native"`` (the compiled extension), another registered backend, or
``"auto"`` (see ``extract_palette``). The OpenCV loop the quality is measured against lives in
``benchmarks/palette_cv2.py``.

How the work is laid out:

- Pixels are de-duplicated into (distinct color, multiplicity) and clustered with weights, which is
  exactly K-means on the pixels (every sum and count is the same). Restarts are extra rows of the
  same batch: (images, restarts, K) centers against (images, colors) points.
- On the CPU each image is clustered on its own (the batch's distance slabs would not fit in
  cache), images in parallel Python worker threads (``threads=``), each running its ops on one
  OpenMP thread; torch's thread setting for the process is left alone. On a GPU the whole batch
  runs at once, in chunks that bound the seeding temporaries (``SEEDING_ELEMENTS``).
- Where colors repeat (drawings), the work saved by de-duplication buys more restarts, up to the
  work of the requested restarts on every pixel (``MAX_EFFORT``): that is what makes the result
  reliably as compact as OpenCV's best of 10 on flat-colored images, whose K-means landscape is rugged.

Differences from OpenCV, all deliberate and covered by the quality tests:

- Seeding is greedy k-means++ with ``2 + int(ln k)`` local trials per step (scikit-learn's choice; 4 for
  k = 9) where OpenCV uses 3.
- Successive halving: after 2 center updates only the more compact half of the restarts keeps
  iterating (the others stay candidates with their centers); measured on 144 images, 29% less work
  for a median compactness change below 0.01%.
- After OpenCV's iterations, the 3 most compact restarts get up to 10 more Lloyd iterations (until
  their centers stop moving); OpenCV stops at a center shift of eps.
- The best restart is chosen by the compactness of its *uint8-truncated* centers measured against the
  nearest center (what the palette is actually used for), where OpenCV ranks attempts by the float
  centers against the labels of the previous assignment.
- More restarts on images with repeated colors (above).
- Images with fewer than ``k`` pixels (OpenCV refuses them) and clusters that would need an empty
  cluster repair from a one-point cluster keep a center duplicated instead of failing.

Determinism: for a given seed, a palette depends only on its image on the CPU (each image has its
own generator seeded with ``seed``); on a GPU it depends on the batch (one generator per chunk).
"""

from colorizer.ops.reference import kmeans_assign_accumulate as assign_accumulate
from colorizer.palette.api import (
    compactness,
    extract_palette,
    order_palette,
    palette_planes,
    parse_palette,
    resolve_kernels,
)
from colorizer.palette.clustering import MAX_EFFORT, MAX_K, SEEDING_ELEMENTS, dedup_colors, kmeans, kmeans_batch
from colorizer.palette.resize import area_downscale, image_pixels

__all__ = [
    "MAX_EFFORT",
    "MAX_K",
    "SEEDING_ELEMENTS",
    "area_downscale",
    "assign_accumulate",
    "compactness",
    "dedup_colors",
    "extract_palette",
    "image_pixels",
    "kmeans",
    "kmeans_batch",
    "order_palette",
    "palette_planes",
    "parse_palette",
    "resolve_kernels",
]
