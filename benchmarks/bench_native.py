"""pytest-benchmark: native (colorizer._C) against eager for the fused ops, side by side.

    pytest benchmarks/bench_native.py --benchmark-only [--bench-device cpu] [--bench-dtype bfloat16]

Shapes are the generator's (batch 1, 256x256 input): the first encoder level, a mid level with a
residual and noise, and a deep level. Device, dtype, rounds and warm-up come from the suite's
options (benchmarks/conftest.py); inputs that the native kernels do not cover (float16 on the CPU)
run the reference in both columns. ``python -m benchmarks.native_speed`` covers every call of
the generator and the whole model, and writes the JSON/Markdown report.
"""

import pytest
import torch

from colorizer import native
from colorizer.ops import reference

pytestmark = pytest.mark.skipif(not native.NATIVE_AVAILABLE, reason=f"{native.NATIVE_UNAVAILABLE_REASON}")

PROVIDERS = {"eager": reference, "native": native}

# name -> (shape, act, residual, noise)
GN_CASES = {
    "enc1_conv1_relu": ((1, 64, 256, 256), "relu", False, False),
    "enc1_conv2_res_relu": ((1, 64, 256, 256), "relu", True, False),
    "dec3_res_relu_noise": ((1, 256, 64, 64), "relu", True, True),
    "enc5_res_relu": ((1, 512, 16, 16), "relu", True, False),
}


def _run(benchmark, bench_options, fn, *args):
    with torch.inference_mode():
        return benchmark.pedantic(
            fn, args=args, rounds=bench_options.rounds, warmup_rounds=bench_options.warmup, iterations=1
        )


def _tensor(bench_options, *shape, gen):
    return torch.randn(*shape, generator=gen).to(bench_options.device, getattr(torch, bench_options.dtype))


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("case", list(GN_CASES))
def test_group_norm_act(benchmark, bench_options, case, provider):
    shape, act, has_res, has_noise = GN_CASES[case]
    gen = torch.Generator().manual_seed(0)
    c = shape[1]
    x = _tensor(bench_options, shape, gen=gen)
    w, b = _tensor(bench_options, c, gen=gen), _tensor(bench_options, c, gen=gen)
    res = _tensor(bench_options, shape, gen=gen) if has_res else None
    nw = _tensor(bench_options, c, gen=gen) if has_noise else None
    noise = _tensor(bench_options, shape[0], 1, *shape[2:], gen=gen) if has_noise else None
    benchmark.group = f"group_norm_act {case}"
    out = _run(benchmark, bench_options, PROVIDERS[provider].group_norm_act, x, w, b, 32, 1e-5, act, res, nw, noise)
    assert out.shape == x.shape


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("shape", [(512, 512, 3, 3), (256, 128, 3, 3)], ids=str)
def test_weight_standardize(benchmark, bench_options, shape, provider):
    w = _tensor(bench_options, shape, gen=torch.Generator().manual_seed(0)) * 0.02
    benchmark.group = f"weight_standardize {shape}"
    out = _run(benchmark, bench_options, PROVIDERS[provider].weight_standardize, w, 1e-5)
    assert out.shape == w.shape


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_noise_inject(benchmark, bench_options, provider):
    gen = torch.Generator().manual_seed(0)
    x, w = _tensor(bench_options, 1, 32, 256, 256, gen=gen), _tensor(bench_options, 32, gen=gen)
    n = _tensor(bench_options, 1, 1, 256, 256, gen=gen)
    benchmark.group = "noise_inject (1, 32, 256, 256)"
    out = _run(benchmark, bench_options, PROVIDERS[provider].noise_inject, x, w, n)
    assert out.shape == x.shape
