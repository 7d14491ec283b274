"""group_norm_act (Triton, interpreter on the CPU) against the float64 reference: forward and every
gradient, fused and split reductions, NCHW and channels_last, poisoned outputs."""

import pytest
import torch

from colorizer.kernels.tuning import group_tiling, next_power_of_2
from colorizer.ops import reference
from colorizer.testing import assert_close
from tests.kernels.parity import DEVICE, channels_last, check_parity, needs_kernels, on_device

pytest.importorskip("triton")
from colorizer.kernels.group_norm_act import group_norm_act  # noqa: E402

pytestmark = [pytest.mark.triton, needs_kernels]

# (N, C, H, W, groups): groups of 2 channels (64/32), 1 channel (32/32) and 32 channels (32/1);
# 1x1, a prime-sided 3x5 and 7x7.
SHAPES = [
    (3, 64, 3, 5, 32),
    (1, 32, 7, 7, 32),
    (1, 32, 7, 7, 1),
    (3, 32, 1, 1, 32),
    (1, 64, 1, 1, 1),
]


def make_args(n, c, h, w, groups, *, act=None, residual=False, noise=False, layout="nchw", dtype=torch.float32):
    gen = torch.Generator().manual_seed(n * 1000 + c * 10 + h + w + groups)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    # An offset and a scale make the variance computation meet a mean far from zero.
    x = (randn(n, c, h, w) * 2.0 + 3.0).to(dtype)
    args = {"x": x, "weight": randn(c) * 0.5 + 1.0, "bias": randn(c) * 0.5, "groups": groups, "eps": 1e-5, "act": act}
    if residual:
        args["residual"] = randn(n, c, h, w).to(dtype)
    if noise:
        args["noise_weight"] = randn(c)
        args["noise"] = randn(n, 1, h, w).to(dtype)
    if layout == "channels_last":
        for key in ("x", "residual"):
            if key in args:
                args[key] = channels_last(args[key])
    return args


def split_block(n, c, h, w, groups):
    """A block_size that splits each group into about four programs (the split-reduction path)."""
    cg, hw = c // groups, h * w
    block_size = next_power_of_2(cg) * max(1, next_power_of_2(hw) // 4)
    assert group_tiling(groups, cg, hw, block_size).splits > 1
    return block_size


def grads_of(args):
    return tuple(k for k in ("x", "weight", "bias", "residual", "noise_weight", "noise") if k in args)


FULL_CASES = [(s, False) for s in SHAPES] + [(s, True) for s in SHAPES if s[2] * s[3] > 1]


@pytest.mark.parametrize(
    "shape,split", FULL_CASES, ids=[f"{'split' if sp else 'fused'}-{'x'.join(map(str, s))}" for s, sp in FULL_CASES]
)
def test_full_epilogue_matches_reference(shape, split):
    """ReLU + residual + noise (the decoder's fused site), NCHW. A 1x1 group cannot be split."""
    args = make_args(*shape, act="relu", residual=True, noise=True)
    block_size = split_block(*shape) if split else None
    check_parity(group_norm_act, reference.group_norm_act, args, grads_of(args), op_kwargs={"block_size": block_size})


@pytest.mark.parametrize(
    "shape,act,residual,noise,split",
    [
        ((3, 64, 3, 5, 32), None, False, False, True),
        ((1, 32, 7, 7, 1), "leaky_relu", False, False, True),
        ((3, 64, 3, 5, 32), "relu", True, False, False),
        ((1, 32, 7, 7, 32), "relu", True, True, True),
        ((1, 64, 1, 1, 1), "leaky_relu", True, True, False),
    ],
)
def test_channels_last_matches_reference(shape, act, residual, noise, split):
    args = make_args(*shape, act=act, residual=residual, noise=noise, layout="channels_last")
    block_size = split_block(*shape) if split else None
    out = check_parity(
        group_norm_act, reference.group_norm_act, args, grads_of(args), op_kwargs={"block_size": block_size}
    )
    if shape[2] * shape[3] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last), "output must keep the input's memory format"


@pytest.mark.parametrize("act", [None, "relu", "leaky_relu"])
def test_activations_split_path(act):
    args = make_args(1, 64, 3, 5, 32, act=act, residual=True)
    check_parity(group_norm_act, reference.group_norm_act, args, grads_of(args), op_kwargs={"block_size": 8})


def test_mixed_layouts_and_broadcast_gradient():
    """x channels_last, residual NCHW, and the zero-stride upstream gradient of .sum()."""
    args = {k: on_device(v) for k, v in make_args(1, 64, 3, 5, 32, act="relu", residual=True).items()}
    x = channels_last(args["x"]).requires_grad_()
    r = args["residual"].clone().requires_grad_()
    y = group_norm_act(x, args["weight"], args["bias"], 32, 1e-5, "relu", r, block_size=8)
    dx, dr = torch.autograd.grad(y.sum(), (x, r))
    xd, rd = x.detach().double().requires_grad_(), r.detach().double().requires_grad_()
    yd = reference.group_norm_act(xd, args["weight"].double(), args["bias"].double(), 32, 1e-5, "relu", rd)
    ex, er = torch.autograd.grad(yd.sum(), (xd, rd))
    assert_close(y, yd, dtype=torch.float32, name="y")
    assert_close(dx, ex, dtype=torch.float32, name="dx")
    assert_close(dr, er, dtype=torch.float32, name="dresidual")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    """fp16/bf16 storage with fp32 arithmetic (the kernels never compute in half precision, which is
    why the interpreter's half-precision arithmetic bugs do not apply; bf16 at real shapes is a GPU test)."""
    args = make_args(3, 64, 3, 5, 32, act="relu", residual=True, noise=True, dtype=dtype)
    check_parity(
        group_norm_act, reference.group_norm_act, args, grads_of(args), dtype=dtype, op_kwargs={"block_size": 8}
    )


def test_gradients_are_deterministic():
    args = {k: on_device(v) for k, v in make_args(1, 64, 3, 5, 32, act="relu", residual=True, noise=True).items()}
    results = []
    for _ in range(2):
        x = args["x"].clone().requires_grad_()
        w = args["weight"].clone().requires_grad_()
        nw = args["noise_weight"].clone().requires_grad_()
        y = group_norm_act(x, w, args["bias"], 32, 1e-5, "relu", args["residual"], nw, args["noise"], block_size=8)
        results.append(torch.autograd.grad(y.square().sum(), (x, w, nw)))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_bad_arguments_raise():
    x = torch.randn(1, 48, 2, 2)
    w, b = torch.ones(48), torch.zeros(48)
    with pytest.raises(ValueError, match="groups"):
        group_norm_act(x, w, b, groups=32)
    with pytest.raises(ValueError, match="activation"):
        group_norm_act(x, w, b, groups=16, act="gelu")
    with pytest.raises(ValueError, match="noise_weight"):
        group_norm_act(x, w, b, groups=16, noise=torch.randn(1, 1, 2, 2))
    with pytest.raises(ValueError, match="4-D"):
        group_norm_act(torch.randn(2, 48, 5), w, b, groups=16)


@pytest.mark.parametrize(
    "shape,layout,split",
    [((3, 64, 3, 5, 32), "nchw", True), ((1, 32, 7, 7, 32), "channels_last", False)],
)
def test_philox_noise_epilogue_matches_reference_with_the_same_noise(shape, layout, split):
    """noise_seed draws noise_inject_philox's map inside the kernel (forward and again in backward)."""
    from colorizer.kernels.noise_inject import philox_noise

    n, c, h, w, groups = shape
    args = make_args(*shape, act="relu", residual=True, noise=True, layout=layout)
    args["noise"] = philox_noise(n, h, w, seed=99, offset=5, device=DEVICE)
    block_size = split_block(*shape) if split else None

    def fused(noise, **kwargs):
        return group_norm_act(**kwargs, noise_seed=99, noise_offset=5, block_size=block_size)

    check_parity(fused, reference.group_norm_act, args, ("x", "weight", "bias", "residual", "noise_weight"))


def test_cuda_tiling_of_channels_last_packs_groups_in_the_split_path(monkeypatch):
    """With the CUDA tile sizes, a channels_last tensor gets programs of several neighbouring groups
    that are also split along H*W (block_g > 1 and splits > 1); run that tiling in the interpreter."""
    from colorizer.kernels import tuning

    monkeypatch.setattr(tuning, "interpreting", lambda: False)
    tiling = tuning.group_tiling(32, 4, 48 * 48, channels_contiguous=True)  # a group: 9216 > 8192 elements
    assert tiling.block_g > 1 and tiling.splits > 1
    args = make_args(1, 128, 48, 48, 32, act="relu", residual=True, noise=True, layout="channels_last")
    check_parity(group_norm_act, reference.group_norm_act, args, grads_of(args))


def test_cuda_tiling_keeps_a_channels_last_group_that_fits_in_one_pass(monkeypatch):
    """channels_last packs neighbouring groups for longer contiguous runs, but never at the price of a
    second pass over x: a group that one program can hold stays fused, as on NCHW."""
    from colorizer.kernels import tuning

    monkeypatch.setattr(tuning, "interpreting", lambda: False)
    for groups, cg, hw in [(32, 8, 32 * 32), (32, 2, 64 * 64), (32, 16, 16 * 16), (32, 4, 24 * 24)]:
        nchw = tuning.group_tiling(groups, cg, hw)
        last = tuning.group_tiling(groups, cg, hw, channels_contiguous=True)
        assert nchw.fused and last.fused, (groups, cg, hw, nchw, last)
        assert last.block_g * last.block_cg * last.block_hw <= tuning.FUSED_TILE_CUDA
