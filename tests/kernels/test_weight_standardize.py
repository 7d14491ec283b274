"""weight_standardize (Triton, interpreter on the CPU) against the float64 reference."""

import pytest
import torch

from colorizer.ops import reference
from colorizer.testing import assert_close
from tests.kernels.parity import channels_last, check_parity, needs_kernels, on_device

pytest.importorskip("triton")
from colorizer.kernels.tuning import row_tiling  # noqa: E402
from colorizer.kernels.weight_standardize import weight_standardize  # noqa: E402

pytestmark = [pytest.mark.triton, needs_kernels]

# (C_out, C_in, kh, kw): 3x3 and 1x1 convs, prime sizes, the psi projection (1 output channel).
SHAPES = [(7, 5, 3, 3), (64, 32, 1, 1), (1, 32, 1, 1), (3, 33, 3, 3), (32, 3, 4, 4)]


def weight(shape, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * 0.02 + 0.01).to(dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("chunked", [False, True], ids=["one-chunk", "chunked"])
def test_matches_reference(shape, chunked):
    fan_in = shape[1] * shape[2] * shape[3]
    block_size = 16 if chunked else None
    if chunked:
        assert row_tiling(shape[0], fan_in, block_size).k_chunks > 1
    check_parity(
        weight_standardize,
        reference.weight_standardize,
        {"w": weight(shape, sum(shape)), "eps": 1e-5},
        ("w",),
        op_kwargs={"block_size": block_size},
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["one-chunk", "chunked"])
def test_channels_last_weight(chunked):
    w = channels_last(weight((8, 6, 3, 3), 3))
    out = check_parity(
        weight_standardize,
        reference.weight_standardize,
        {"w": w, "eps": 1e-5},
        ("w",),
        op_kwargs={"block_size": 16 if chunked else None},
    )
    assert out.stride() == w.stride(), "the standardized weight keeps the weight's memory format"


def test_half_precision():
    check_parity(
        weight_standardize,
        reference.weight_standardize,
        {"w": weight((16, 8, 3, 3), 5, torch.float16), "eps": 1e-5},
        ("w",),
        dtype=torch.float16,
    )


@pytest.mark.filterwarnings("ignore:std.*degrees of freedom")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_fan_in_of_one_is_nan_like_torch():
    w = on_device(torch.randn(4, 1, 1, 1))
    assert_close(weight_standardize(w), reference.weight_standardize(w.double()), dtype=torch.float32)
    assert torch.isnan(weight_standardize(w)).all()


def test_gradients_are_deterministic():
    w = on_device(weight((16, 8, 3, 3), 9))
    grads = []
    for _ in range(2):
        wg = w.clone().requires_grad_()
        grads.append(torch.autograd.grad(weight_standardize(wg, block_size=16).square().sum(), wg)[0])
    assert torch.equal(grads[0], grads[1])
