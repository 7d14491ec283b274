"""pytest-benchmark cases of the export path (``pytest benchmarks/bench_export.py --benchmark-only``).

Same options as the other benchmark files (``--bench-size``, ``--bench-batch``, ``--bench-width``,
``--bench-rounds``, ``--bench-warmup``; ``benchmarks/conftest.py``). Side by side on the same
inputs and thread count: eager PyTorch (folded), our ONNX export on onnxruntime (seeded noise in the
graph, and zero noise), the seeded noise alone, and the time to export (trace + ONNX checks).
``python -m benchmarks.export_speed`` gives the full table with accuracy beside each row.
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks.export_speed import _export, _model, _ort_session


@pytest.fixture(scope="module")
def setup(bench_options, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from colorizer.export.onnx_export import example_inputs

    opts = bench_options
    threads = torch.get_num_threads()
    model = _model(opts.channels)
    folder = str(tmp_path_factory.mktemp("bench-export"))
    sessions = {noise: _ort_session(_export(model, folder, noise, noise), threads) for noise in ("seeded", "zero")}
    inputs = example_inputs("seeded", opts.batch, opts.size, opts.size)
    return opts, model, sessions, inputs, folder


def _pedantic(benchmark, opts, fn):
    return benchmark.pedantic(fn, rounds=opts.rounds, warmup_rounds=opts.warmup, iterations=1)


def test_eager_folded(benchmark, setup):
    from colorizer.export.onnx_export import generator_input
    from colorizer.export.seeded_noise import seeded_noise
    from colorizer.models import fold_weight_standardization

    opts, model, _, (sketch, palette, seeds), _ = setup
    folded = fold_weight_standardization(model)
    x = generator_input(sketch, palette)
    maps = seeded_noise(seeds, opts.size, opts.size)
    with torch.inference_mode():
        _pedantic(benchmark, opts, lambda: folded(x, noise=maps))


@pytest.mark.parametrize("noise", ["seeded", "zero"])
def test_onnxruntime(benchmark, setup, noise):
    opts, _, sessions, (sketch, palette, seeds), _ = setup
    feed = {"sketch": sketch.numpy(), "palette": palette.numpy()}
    if noise == "seeded":
        feed["seed"] = seeds.numpy()
    session = sessions[noise]
    _pedantic(benchmark, opts, lambda: session.run(["image"], feed))


def test_seeded_noise(benchmark, setup):
    from colorizer.export.seeded_noise import seeded_noise

    opts, _, _, (_, _, seeds), _ = setup
    _pedantic(benchmark, opts, lambda: seeded_noise(seeds, opts.size, opts.size))


def test_export_time(benchmark, setup):
    opts, model, _, _, folder = setup
    path = os.path.join(folder, "timed")
    benchmark.pedantic(lambda: _export(model, folder, "timed", "seeded"), rounds=1, warmup_rounds=0, iterations=1)
    assert os.path.isfile(path + ".onnx")
