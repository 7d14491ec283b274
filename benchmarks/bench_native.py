"""pytest-benchmark: native (colorizer._C) against eager for the fused ops, side by side.

    pytest benchmarks/bench_native.py --benchmark-only [--benchmark-group-by=param:case]

Shapes are the generator's (batch 1, 256x256 input): the first encoder level, a mid level with a
residual and noise, and a deep level. ``python -m benchmarks.native_speed`` covers every call of
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


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("case", list(GN_CASES))
def test_group_norm_act(benchmark, case, provider):
    shape, act, has_res, has_noise = GN_CASES[case]
    gen = torch.Generator().manual_seed(0)
    c = shape[1]
    x = torch.randn(shape, generator=gen)
    w, b = torch.randn(c, generator=gen), torch.randn(c, generator=gen)
    res = torch.randn(shape, generator=gen) if has_res else None
    nw = torch.randn(c, generator=gen) if has_noise else None
    noise = torch.randn(shape[0], 1, *shape[2:], generator=gen) if has_noise else None
    benchmark.group = f"group_norm_act {case}"
    fn = PROVIDERS[provider].group_norm_act
    with torch.inference_mode():
        out = benchmark(fn, x, w, b, 32, 1e-5, act, res, nw, noise)
    assert out.shape == x.shape


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("shape", [(512, 512, 3, 3), (256, 128, 3, 3)], ids=str)
def test_weight_standardize(benchmark, shape, provider):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.02
    benchmark.group = f"weight_standardize {shape}"
    with torch.inference_mode():
        out = benchmark(PROVIDERS[provider].weight_standardize, w, 1e-5)
    assert out.shape == w.shape


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_noise_inject(benchmark, provider):
    gen = torch.Generator().manual_seed(0)
    x, w, n = torch.randn(1, 32, 256, 256, generator=gen), torch.randn(32, generator=gen), torch.randn(1, 1, 256, 256)
    benchmark.group = "noise_inject (1, 32, 256, 256)"
    with torch.inference_mode():
        out = benchmark(PROVIDERS[provider].noise_inject, x, w, n)
    assert out.shape == x.shape
