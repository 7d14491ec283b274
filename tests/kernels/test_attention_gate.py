"""attention_gate (Triton, interpreter on the CPU) against the float64 reference: forward and the
gradients of all nine inputs, one-program and split reductions, NCHW and channels_last."""

import pytest
import torch

from colorizer.ops import reference
from tests.kernels.parity import channels_last, check_parity, needs_kernels, on_device

pytest.importorskip("triton")
from colorizer.kernels.attention_gate import attention_gate  # noqa: E402
from colorizer.kernels.tuning import all_groups_tiling, pixel_rows_tiling  # noqa: E402

pytestmark = [pytest.mark.triton, needs_kernels]

GRADS = (
    "g_proj",
    "x_proj",
    "x",
    "g_norm_weight",
    "g_norm_bias",
    "x_norm_weight",
    "x_norm_bias",
    "psi_weight",
    "psi_bias",
)


def make_args(n, f_int, f_l, h, w, layout="nchw", dtype=torch.float32):
    gen = torch.Generator().manual_seed(n + f_int + f_l + h * w)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    args = {
        "g_proj": (randn(n, f_int, h, w) + 1.0).to(dtype),
        "x_proj": (randn(n, f_int, h, w) * 2.0).to(dtype),
        "x": randn(n, f_l, h, w).to(dtype),
        "g_norm_weight": randn(f_int) * 0.5 + 1.0,
        "g_norm_bias": randn(f_int) * 0.5,
        "x_norm_weight": randn(f_int) * 0.5 + 1.0,
        "x_norm_bias": randn(f_int) * 0.5,
        "psi_weight": randn(f_int) / f_int**0.5,
        "psi_bias": randn(1),
        "groups": 32,
        "eps": 1e-5,
    }
    if layout == "channels_last":
        for key in ("g_proj", "x_proj", "x"):
            args[key] = channels_last(args[key])
    return args


# (N, F_int, F_l, H, W): groups of 2 and 1 channels, F_l != F_int, 1x2 (the instance norm needs two
# pixels), 3x5, 7x7.
CASES = [
    ((3, 64, 32, 3, 5), "nchw", None),
    ((3, 64, 32, 3, 5), "nchw", 8),
    ((1, 32, 64, 7, 7), "nchw", 16),
    ((1, 32, 64, 7, 7), "channels_last", None),
    ((1, 64, 32, 3, 5), "channels_last", 8),
    ((3, 32, 32, 1, 2), "nchw", None),
]


@pytest.mark.parametrize("shape,layout,block_size", CASES)
def test_matches_reference(shape, layout, block_size):
    n, f_int, f_l, h, w = shape
    if block_size is not None:
        assert all_groups_tiling(32, f_int // 32, h * w, block_size).splits > 1
        assert pixel_rows_tiling(f_l, h * w, block_size).splits > 1
    out = check_parity(
        attention_gate, reference.attention_gate, make_args(*shape, layout), GRADS, op_kwargs={"block_size": block_size}
    )
    if layout == "channels_last" and h * w > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_half_precision():
    check_parity(
        attention_gate,
        reference.attention_gate,
        make_args(1, 64, 32, 3, 5, dtype=torch.float16),
        GRADS,
        dtype=torch.float16,
        op_kwargs={"block_size": 8},
    )


def test_gradients_are_deterministic():
    args = make_args(1, 32, 64, 7, 7)
    results = []
    for _ in range(2):
        inputs = {
            k: on_device(v).clone().requires_grad_() if isinstance(v, torch.Tensor) else v for k, v in args.items()
        }
        out = attention_gate(**inputs, block_size=16)
        results.append(torch.autograd.grad(out.square().sum(), [inputs[k] for k in GRADS]))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_bad_arguments_raise():
    args = make_args(1, 32, 32, 2, 2)
    args["x"] = torch.randn(1, 32, 3, 3)
    with pytest.raises(ValueError, match="does not match"):
        attention_gate(**args)
    args = make_args(1, 32, 32, 1, 1)
    with pytest.raises(ValueError, match="more than one pixel"):
        attention_gate(**args)
