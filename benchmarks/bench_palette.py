"""Palettes per second, every provider side by side on the same images, with quality beside each.

Script (the full side-by-side table over N = 1 ... 4096, JSON + Markdown)::

    python -m benchmarks.bench_palette [--quick] [--out results/palettes.json] [--sizes 256,512]
        [--counts 1,64,1024,4096] [--providers cv2,sklearn,eager,native,eager-cuda,triton] [--threads N]

pytest-benchmark cases (one per provider and batch, at ``--bench-size``, default 256; palettes/s and
the compactness ratio to cv2 in ``extra_info``)::

    pytest benchmarks/bench_palette.py --benchmark-only

Providers (each computes the reference's palette: 0.25x INTER_AREA downscale, K=9, 10 restarts,
10 iterations / eps 1.0, uint8 centers):
- ``cv2``: the reference loop, ``cv2.resize`` + ``cv2.kmeans(KMEANS_PP_CENTERS)`` per image on the CPU
  (``benchmarks.palette_cv2.reference_palettes``).
- ``sklearn``: scikit-learn ``KMeans(n_init=10, max_iter=10)`` per image on the CPU (our downscale).
- ``eager``: ``extract_palette(kernels="eager")`` on the CPU (one image at a time, de-duplicated colors).
- ``native``: ``extract_palette(kernels="native")`` (the compiled step of ``colorizer.native``), CPU.
- ``eager-cuda`` / ``triton``: ``extract_palette(kernels="eager" / "triton")`` on the GPU, batched, end to
  end from uint8 (N, S, S, 3) images already on the device (downscale included). CUDA only.

Images: half crops of scikit-image's bundled photographs, half synthetic flat-colored drawings
(``colorizer.data.synthetic.render_drawing``), the two kinds of reference a colorizer sees.

Per-image providers (everything on the CPU) cost the same per image at any N, so they are timed on
the first ``--cpu-cap`` images of the batch (said in the ``timed_n`` column) and their rate is
reported for N; batched GPU providers are timed on the full batch. Quality: compactness of each
provider's palettes (sum of squared distances from the downscaled pixels to the nearest palette
color) divided by cv2's on the same images (the first ``--quality-cap`` of the batch): median, p95 and
worst. Timing: ``benchmarks.timing.measure`` (warm-up excluded, median and p20/p80 of rounds).

The JSON (``--out``) holds the environment (device, versions, git revision, threads), the config
and every row; a Markdown table is written next to it (same name, ``.md``), both atomically
(``benchmarks.output``). Numbers measured on a
machine shared with other jobs are not comparable with a quiet machine's: the environment block
records the load average at the start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.environment import collect_environment
from benchmarks.output import write_json, write_text
from benchmarks.palette_cv2 import EPS, ITERS, RESTARTS, K, reference_palettes
from benchmarks.timing import measure, synchronized
from colorizer import palette as pal
from colorizer.errors import MissingDependencyError
from colorizer.ops import get_ops
from colorizer.ops import reference as reference_ops

ALL_PROVIDERS = ("cv2", "sklearn", "eager", "native", "eager-cuda", "triton")
CPU_PROVIDERS = ("cv2", "sklearn", "eager", "native")


@dataclass
class Row:
    provider: str
    device: str
    size: int
    n: int
    timed_n: int = 0
    palettes_per_s: float | None = None
    median_s: float | None = None
    p20_s: float | None = None
    p80_s: float | None = None
    speedup_vs_cv2: float | None = None
    quality: dict = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""


def benchmark_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 (count, size, size, 3): alternately a photo crop (area-resized) and a synthetic drawing."""
    import cv2

    from colorizer.data.synthetic import render_drawing

    rng = np.random.default_rng(seed)
    try:
        import skimage.data as data

        photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field()]
    except ImportError:  # drawings only
        photos = []
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        if photos and i % 2 == 0:
            src = photos[(i // 2) % len(photos)]
            side = int(rng.integers(min(src.shape[:2]) // 2, min(src.shape[:2]) + 1))
            top = int(rng.integers(0, src.shape[0] - side + 1))
            left = int(rng.integers(0, src.shape[1] - side + 1))
            crop = np.ascontiguousarray(src[top : top + side, left : left + side, :3])
            interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
            out[i] = cv2.resize(crop, (size, size), interpolation=interp)
        else:
            out[i] = render_drawing(seed, i, size)[0]
    return out


def sklearn_palettes(images: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    pixels, _ = pal.image_pixels(images, downscale=True)
    out = []
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of scikit-learn
        limits = contextlib.nullcontext()
    else:
        # Fits of a few thousand points: OpenMP threads only add synchronisation (up to ~50x on a
        # busy machine, measured), so one thread per fit, as the other per-image providers.
        limits = threadpool_limits(1)
    with limits:
        for x in pixels.numpy():
            km = KMeans(n_clusters=K, n_init=RESTARTS, max_iter=ITERS, random_state=seed).fit(x)
            out.append(np.uint8(km.cluster_centers_))
    return np.stack(out)


def palette_quality(images: np.ndarray, ours: np.ndarray, reference: np.ndarray) -> dict:
    pixels, _ = pal.image_pixels(images, downscale=True)
    a = pal.compactness(pixels, torch.from_numpy(np.asarray(ours)).float()).numpy()
    b = pal.compactness(pixels, torch.from_numpy(np.asarray(reference)).float()).numpy()
    r = np.where((a == 0) & (b == 0), 1.0, a / np.maximum(b, 1e-12))
    return {
        "images": int(r.size),
        "median": float(np.median(r)),
        "p95": float(np.percentile(r, 95)),
        "worst": float(r.max()),
        "share_over_1pct": float(np.mean(r > 1.01)),
    }


# provider -> (extract_palette's impl, device) for the colorizer.palette providers.
PALETTE_BACKENDS = {"eager": ("eager", "cpu"), "native": ("native", "cpu"), "eager-cuda": ("eager", "cuda"),
                    "triton": ("triton", "cuda")}  # fmt: skip


def _provider_fn(provider: str, images: np.ndarray):
    """(callable computing palettes for ``images``, device string); raises MissingDependencyError or
    RuntimeError with the reason when the provider cannot run here."""
    if provider == "cv2":
        return (lambda: reference_palettes(images)), "cpu"
    if provider == "sklearn":
        return (lambda: sklearn_palettes(images)), "cpu"
    if provider not in PALETTE_BACKENDS:
        raise ValueError(f"unknown provider {provider!r}")
    impl, device = PALETTE_BACKENDS[provider]
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("needs a CUDA device")
    ops = get_ops(impl)  # KernelsUnavailable (a MissingDependencyError) says why the backend cannot run
    if impl != "eager" and ops.kmeans_assign_accumulate is reference_ops.kmeans_assign_accumulate:
        raise RuntimeError(f"the {impl} backend has no K-means step of its own here (it would time eager)")
    x = torch.from_numpy(images).to(device)
    return (lambda: pal.extract_palette(x, k=K, restarts=RESTARTS, iters=ITERS, eps=EPS, kernels=impl)), device


def run(sizes, counts, providers, cpu_cap: int, quality_cap: int, rounds: int, target_s: float, log=print) -> list[Row]:
    rows: list[Row] = []
    for size in sizes:
        largest = benchmark_images(max(counts), size)
        ref_n = min(quality_cap, max(counts))
        reference = reference_palettes(largest[:ref_n]) if "cv2" in providers or quality_cap else None
        for n in counts:
            images = largest[:n]
            cv2_rate = None
            for provider in providers:
                per_image = provider in CPU_PROVIDERS
                timed = (
                    images[: min(n, cpu_cap if provider != "sklearn" else max(1, cpu_cap // 4))]
                    if per_image
                    else images
                )
                row = Row(provider=provider, device="", size=size, n=n, timed_n=len(timed))
                rows.append(row)
                try:
                    fn, row.device = _provider_fn(provider, timed)
                except (RuntimeError, ImportError, MissingDependencyError) as exc:
                    row.status, row.reason = "skipped", str(exc).splitlines()[0]
                    log(f"  {provider:10s} S={size} N={n}: skipped ({row.reason})")
                    continue
                out = fn()  # warm-up and the palettes for the quality column
                timing = measure(
                    fn, device=row.device, warmup=0, min_rounds=rounds, max_rounds=max(rounds, 3), target_s=target_s
                )
                row.median_s, row.p20_s, row.p80_s = timing.median_s, timing.p20_s, timing.p80_s
                row.palettes_per_s = len(timed) / timing.median_s
                if provider == "cv2":
                    cv2_rate = row.palettes_per_s
                if cv2_rate:
                    row.speedup_vs_cv2 = row.palettes_per_s / cv2_rate
                if reference is not None:
                    q = min(len(timed), ref_n)
                    ours = out.cpu().numpy() if isinstance(out, torch.Tensor) else out
                    row.quality = palette_quality(timed[:q], ours[:q], reference[:q])
                log(
                    f"  {provider:10s} S={size} N={n:5d} timed on {len(timed):5d}: "
                    f"{row.palettes_per_s:10.1f} palettes/s"
                    + (f"  x{row.speedup_vs_cv2:.2f} vs cv2" if row.speedup_vs_cv2 else "")
                    + (
                        f"  quality median {row.quality['median']:.4f} worst {row.quality['worst']:.4f}"
                        if row.quality
                        else ""
                    )
                )
    return rows


def markdown(rows: list[Row], env: dict) -> str:
    lines = [
        "# Palettes per second (K=9, 10 restarts, 10 iterations, eps 1.0, 0.25x area downscale)",
        "",
        f"Device: {env.get('device_name') or env.get('cpu', {}).get('model')}; "
        f"torch {env.get('versions', {}).get('torch')}, "
        f"opencv {env.get('versions', {}).get('opencv-python-headless')}; "
        f"revision {env.get('git', {}).get('revision')}; torch threads {env.get('torch_threads')}; "
        f"load average at start {env.get('load_average_at_start')}; date {env.get('date_utc')}.",
        "",
        "Quality: compactness / cv2's on the same images (median, p95, worst; lower is better).",
        "",
        "| provider | device | size | N | timed on | palettes/s (median) | p20-p80 s | vs cv2 "
        "| quality median | p95 | worst |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.provider} | {r.device or '-'} | {r.size} | {r.n} | - | skipped: {r.reason} | | | | | |")
            continue
        q, nan = r.quality, float("nan")
        lines.append(
            f"| {r.provider} | {r.device} | {r.size} | {r.n} | {r.timed_n} | {r.palettes_per_s:.1f} | "
            f"{r.p20_s:.3g}-{r.p80_s:.3g} | {'' if r.speedup_vs_cv2 is None else f'{r.speedup_vs_cv2:.2f}x'} | "
            f"{q.get('median', nan):.4f} | {q.get('p95', nan):.4f} | {q.get('worst', nan):.4f} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# pytest-benchmark cases (collected by benchmarks/conftest.py; run with --benchmark-only). CPU
# providers run per image, so they are timed on at most CPU_IMAGES images; GPU providers on the whole
# batch, end to end from uint8 images on the device.

BATCHES = (1, 64)
CPU_IMAGES = 16


@pytest.fixture(scope="module")
def images(bench_options):
    return benchmark_images(max(BATCHES), bench_options.size)


@pytest.fixture(scope="module")
def reference(images):
    pytest.importorskip("cv2")
    return reference_palettes(images)


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("provider", ALL_PROVIDERS)
def test_palettes_per_second(benchmark, bench_options, images, reference, provider, n):
    batch = images[:n]
    if provider in CPU_PROVIDERS:
        batch = batch[: min(n, CPU_IMAGES if provider != "sklearn" else 4)]
    if provider == "sklearn":
        pytest.importorskip("sklearn")
    try:
        fn, device = _provider_fn(provider, batch)
    except (RuntimeError, MissingDependencyError) as exc:
        pytest.skip(str(exc).splitlines()[0])
    out = fn()
    benchmark.pedantic(synchronized(fn, device), rounds=bench_options.rounds, warmup_rounds=bench_options.warmup)
    ours = out.cpu().numpy() if isinstance(out, torch.Tensor) else out
    quality = palette_quality(batch, ours, reference[: len(batch)])
    benchmark.extra_info.update(
        provider=provider,
        device=device,
        size=bench_options.size,
        batch=n,
        timed_images=len(batch),
        palettes_per_s=len(batch) / benchmark.stats.stats.median,
        compactness_ratio_median=quality["median"],
        compactness_ratio_worst=quality["worst"],
    )
    assert quality["median"] <= 1.01, quality


# --------------------------------------------------------------------------------------------------
# Script


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N and one round: proves the script runs")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (a .md table is written beside it)")
    parser.add_argument("--sizes", default=None, help="comma-separated image sizes (default 256,512)")
    parser.add_argument("--counts", default=None, help="comma-separated batch sizes (default 1,64,1024,4096)")
    parser.add_argument("--providers", default=",".join(ALL_PROVIDERS))
    parser.add_argument("--cpu-cap", type=int, default=None, help="images timed for per-image CPU providers")
    parser.add_argument("--quality-cap", type=int, default=64, help="images compared with cv2 for quality")
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: torch's)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            import cv2

            cv2.setNumThreads(args.threads)
        except ImportError:
            pass
    sizes = [int(s) for s in (args.sizes or ("256" if args.quick else "256,512")).split(",")]
    counts = [int(c) for c in (args.counts or ("1,8" if args.quick else "1,64,1024,4096")).split(",")]
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    for p in providers:
        if p not in ALL_PROVIDERS:
            parser.error(f"unknown provider {p!r}; choose from {', '.join(ALL_PROVIDERS)}")
    cpu_cap = args.cpu_cap or (8 if args.quick else 64)
    quality_cap = min(args.quality_cap, 8) if args.quick else args.quality_cap
    rounds, target_s = (1, 0.0) if args.quick else (3, 2.0)

    env = collect_environment("cuda" if torch.cuda.is_available() else "cpu")
    env["load_average_at_start"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    env["torch_threads"] = torch.get_num_threads()
    print(f"palette benchmark: sizes {sizes}, counts {counts}, providers {providers}", flush=True)
    start = time.perf_counter()
    rows = run(sizes, counts, providers, cpu_cap, quality_cap, rounds, target_s)
    result = {
        "environment": env,
        "config": {
            "k": K,
            "restarts": RESTARTS,
            "iters": ITERS,
            "eps": EPS,
            "sizes": sizes,
            "counts": counts,
            "providers": providers,
            "cpu_cap": cpu_cap,
            "quality_cap": quality_cap,
            "quick": args.quick,
            "seconds": time.perf_counter() - start,
        },
        "rows": [asdict(r) for r in rows],
    }
    table = markdown(rows, env)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, result)
        write_text(args.out.with_suffix(".md"), table)
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
