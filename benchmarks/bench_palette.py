"""pytest-benchmark: palettes per second per provider (``pytest benchmarks/bench_palette.py --benchmark-only``).

The same providers and images as ``benchmarks/palette_speed.py`` (which prints the full side-by-side
table over N = 1 ... 4096 and writes JSON + Markdown); here one case per provider and batch, at
``--bench-size`` (default 256), with palettes/s and the compactness ratio to cv2 in ``extra_info``.
CPU providers run per image, so they are timed on at most ``CPU_IMAGES`` images; GPU providers on the
whole batch, end to end from uint8 images on the device.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import palette_speed as ps

BATCHES = (1, 64)
CPU_IMAGES = 16


@pytest.fixture(scope="module")
def images(bench_options):
    return ps.benchmark_images(max(BATCHES), bench_options.size)


@pytest.fixture(scope="module")
def reference(images):
    pytest.importorskip("cv2")
    return ps.cv2_palettes(images)


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("provider", ps.ALL_PROVIDERS)
def test_palettes_per_second(benchmark, bench_options, images, reference, provider, n):
    batch = images[:n]
    if provider in ps.CPU_PROVIDERS:
        batch = batch[: min(n, CPU_IMAGES if provider != "sklearn" else 4)]
    if provider == "sklearn":
        pytest.importorskip("sklearn")
    try:
        fn, device = ps._provider_fn(provider, batch)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    out = fn()
    if device == "cuda":

        def timed():
            fn()
            torch.cuda.synchronize()
    else:
        timed = fn
    benchmark.pedantic(timed, rounds=bench_options.rounds, warmup_rounds=bench_options.warmup)
    ours = out.cpu().numpy() if isinstance(out, torch.Tensor) else out
    quality = ps._quality(batch, ours, reference[: len(batch)])
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
