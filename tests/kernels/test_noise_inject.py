"""noise_inject (tensor noise) and noise_inject_philox (in-kernel Philox noise) on the interpreter."""

import pytest
import torch

from colorizer.ops import reference
from colorizer.testing import assert_close
from tests.kernels.parity import DEVICE, channels_last, check_parity, needs_kernels, on_device

pytest.importorskip("triton")
from colorizer.kernels.noise_inject import noise_inject, noise_inject_philox, philox_noise  # noqa: E402

pytestmark = [pytest.mark.triton, needs_kernels]

SHAPES = [(3, 64, 3, 5), (1, 32, 7, 7), (3, 32, 1, 1)]


def make(n, c, h, w, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed + n + c + h + w)
    return (
        torch.randn(n, c, h, w, generator=gen).to(dtype),
        torch.randn(c, generator=gen),
        torch.randn(n, 1, h, w, generator=gen).to(dtype),
    )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("block_size", [None, 4], ids=["one-block", "split"])
def test_tensor_noise_matches_reference(shape, layout, block_size):
    x, w, noise = make(*shape)
    if layout == "channels_last":
        x = channels_last(x)
    check_parity(
        noise_inject,
        reference.noise_inject,
        {"x": x, "weight": w, "noise": noise},
        ("x", "weight", "noise"),
        op_kwargs={"block_size": block_size},
    )


def test_half_precision():
    x, w, noise = make(3, 64, 3, 5, torch.float16)
    check_parity(
        noise_inject,
        reference.noise_inject,
        {"x": x, "weight": w, "noise": noise},
        ("x", "weight"),
        dtype=torch.float16,
        op_kwargs={"block_size": 8},
    )


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_philox_matches_reference_with_the_same_noise(layout):
    x, w, _ = make(3, 32, 3, 5)
    if layout == "channels_last":
        x = channels_last(x)
    noise = philox_noise(3, 3, 5, seed=1234, offset=17, device=DEVICE)
    check_parity(
        lambda x, weight, noise: noise_inject_philox(x, weight, seed=1234, offset=17, block_size=8),
        reference.noise_inject,
        {"x": x, "weight": w, "noise": noise},
        ("x", "weight"),
    )


def test_philox_noise_is_per_pixel_reproducible_and_standard_normal():
    zeros = torch.zeros(2, 4, 32, 32, device=DEVICE)
    ones = torch.ones(4, device=DEVICE)
    a = noise_inject_philox(zeros, ones, seed=7, offset=0)
    b = noise_inject_philox(zeros, ones, seed=7, offset=0)
    assert torch.equal(a, b), "same (seed, offset) must give the same noise"
    assert torch.equal(a, a[:, :1].expand_as(a)), "every channel of a pixel gets the same value"
    assert not torch.equal(a, noise_inject_philox(zeros, ones, seed=8, offset=0))
    # offset k shifts the counter stream: the map at offset 1 is the map at offset 0 moved by one pixel.
    shifted = noise_inject_philox(zeros, ones, seed=7, offset=1)
    assert torch.equal(shifted.flatten(2)[0, 0, :-1], a.flatten(2)[0, 0, 1:])
    values = a[:, 0].flatten()
    assert abs(values.mean().item()) < 0.1 and abs(values.std().item() - 1.0) < 0.1


def test_philox_weight_gradient_uses_the_same_noise():
    x, w, _ = (on_device(t) for t in make(1, 32, 7, 7))
    w = w.requires_grad_()
    y = noise_inject_philox(x, w, seed=3, offset=5, block_size=8)
    dy = torch.randn_like(y)
    (dw,) = torch.autograd.grad(y, w, dy)
    noise = philox_noise(1, 7, 7, seed=3, offset=5, device=DEVICE)
    assert_close(dw, (dy.double() * noise.double()).sum(dim=(0, 2, 3)), dtype=torch.float32, name="dweight")


def test_philox_counter_range_is_checked():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="2\\*\\*31"):
        noise_inject_philox(x, torch.ones(1), seed=1, offset=2**31 - 2)


# Philox noise recorded from the CPU interpreter (triton 3.9); tests/kernels/test_gpu.py checks that a
# GPU draws the same numbers.
RECORDED_PHILOX = {
    (1234, 0): [
        -0.442227453,
        0.118431807,
        1.157851219,
        -0.190242410,
        0.982814074,
        -1.067059636,
        -1.306891203,
        0.666747987,
    ],
    (2**40 + 7, 1000): [
        0.638965249,
        -0.190408394,
        -0.141689047,
        1.624455094,
        0.125226602,
        0.499760896,
        -0.510009885,
        -0.303558886,
    ],
}


@pytest.mark.parametrize("seed,offset", list(RECORDED_PHILOX))
def test_philox_noise_matches_recorded_values(seed, offset):
    noise = philox_noise(1, 2, 4, seed=seed, offset=offset, device=DEVICE).cpu()
    expected = torch.tensor(RECORDED_PHILOX[(seed, offset)]).reshape(1, 1, 2, 4)
    assert_close(noise, expected, atol=1e-5, rtol=1e-5, name="philox noise")
