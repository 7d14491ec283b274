"""pytest configuration of the benchmark suite (``pytest benchmarks/ --benchmark-only``).

Benchmark files are named ``bench_<subject>.py`` so the default test run (testpaths = tests) never
collects them; this conftest collects them here. Options set the measured configuration:

  --bench-size S         square image size in pixels (default 256; a multiple of 128)
  --bench-batch N        inference batch (default 1)
  --bench-train-batch N  train-step batch (default 2, the reference's)
  --bench-width LIST     generator widths of levels 1..4, e.g. 64,128,256,512 (the reference, default)
  --bench-dtype NAME     float32 | bfloat16 | float16 (inference; default float32)
  --bench-device NAME    cpu | cuda (default: cuda when available)
  --bench-rounds N       timed rounds (default 3); --bench-warmup N warm-up rounds (default 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch


def pytest_addoption(parser):
    group = parser.getgroup("colorizer benchmarks")
    group.addoption("--bench-size", type=int, default=256, help="square image size in pixels (multiple of 128)")
    group.addoption("--bench-batch", type=int, default=1, help="inference batch size")
    group.addoption("--bench-train-batch", type=int, default=2, help="train-step batch size")
    group.addoption("--bench-width", default="64,128,256,512", help="generator widths of levels 1..4")
    group.addoption("--bench-dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    group.addoption("--bench-device", default=None, help="cpu or cuda (default: cuda when available)")
    group.addoption("--bench-rounds", type=int, default=3, help="timed rounds per benchmark")
    group.addoption("--bench-warmup", type=int, default=1, help="warm-up rounds per benchmark")


def pytest_collect_file(file_path, parent):
    # A file named on the command line is collected by pytest itself whatever its name; collecting
    # it here too would run every benchmark twice.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@dataclass(frozen=True)
class BenchOptions:
    size: int
    batch: int
    train_batch: int
    channels: tuple[int, ...]
    dtype: str
    device: str
    rounds: int
    warmup: int


@pytest.fixture(scope="session")
def bench_options(request) -> BenchOptions:
    from benchmarks.bench_generator import parse_channels

    opt = request.config.getoption
    device = opt("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--bench-device cuda but no CUDA device is available")
    size = opt("--bench-size")
    if size <= 0 or size % 128:
        raise pytest.UsageError(f"--bench-size must be a positive multiple of 128, got {size}")
    return BenchOptions(
        size=size,
        batch=opt("--bench-batch"),
        train_batch=opt("--bench-train-batch"),
        channels=parse_channels(opt("--bench-width")),
        dtype=opt("--bench-dtype"),
        device=device,
        rounds=max(1, opt("--bench-rounds")),
        warmup=max(0, opt("--bench-warmup")),
    )
