"""GPU checks of the Triton ops (marker ``gpu``; skipped without CUDA): the generator's real shapes at
256x256, fp32/bf16/fp16, NCHW and channels_last, against the float64 reference; Philox noise equal
to the interpreter's; torch.compile (inductor) through the ops; the whole model in fp32 and bf16."""

import copy

import pytest
import torch

from colorizer.ops import reference
from colorizer.testing import WHOLE_MODEL_ERROR_FACTOR, relative_l2
from tests.kernels.parity import channels_last, check_parity

pytest.importorskip("triton")

pytestmark = [pytest.mark.gpu, pytest.mark.triton]

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DTYPE_IDS = ["fp32", "bf16", "fp16"]

# GroupNorm sites of the reference generator at 256x256, batch 2 (benchmarks/gpu_kernels.py lists all):
# (N, C, H, W): encoder layer1 conv output, layer2, layer4, layer5, the decoder's 2x2 bottleneck, and
# the last up block (32 channels: groups of one channel).
GN_SHAPES = [
    (2, 64, 256, 256),
    (2, 128, 128, 128),
    (2, 512, 32, 32),
    (2, 512, 16, 16),
    (2, 512, 2, 2),
    (2, 32, 128, 128),
]
# Attention gates (N, F_int, F_l, H, W): Att1, Att3, Att6.
GATE_SHAPES = [(2, 32, 64, 128, 128), (2, 256, 512, 16, 16), (2, 256, 512, 4, 4)]


def cuda_randn(*shape, dtype=torch.float32, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(*shape, generator=gen, device="cuda").to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", GN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_group_norm_act_real_shapes(shape, layout, dtype):
    from colorizer.kernels.group_norm_act import group_norm_act

    n, c, h, w = shape
    args = {
        "x": cuda_randn(n, c, h, w, dtype=dtype, seed=1) * 2 + 1,
        "weight": cuda_randn(c, seed=2) * 0.1 + 1,
        "bias": cuda_randn(c, seed=3) * 0.1,
        "groups": 32,
        "eps": 1e-5,
        "act": "relu",
        "residual": cuda_randn(n, c, h, w, dtype=dtype, seed=4),
        "noise_weight": cuda_randn(c, seed=5) * 0.1,
        "noise": cuda_randn(n, 1, h, w, dtype=dtype, seed=6),
    }
    if layout == "channels_last":
        args["x"], args["residual"] = channels_last(args["x"]), channels_last(args["residual"])
    grads = ("x", "weight", "bias", "residual", "noise_weight")
    check_parity(group_norm_act, reference.group_norm_act, args, grads, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", GATE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_attention_gate_real_shapes(shape, layout, dtype):
    from colorizer.kernels.attention_gate import attention_gate

    n, f_int, f_l, h, w = shape
    args = {
        "g_proj": cuda_randn(n, f_int, h, w, dtype=dtype, seed=1),
        "x_proj": cuda_randn(n, f_int, h, w, dtype=dtype, seed=2),
        "x": cuda_randn(n, f_l, h, w, dtype=dtype, seed=3),
        "g_norm_weight": cuda_randn(f_int, seed=4) * 0.1 + 1,
        "g_norm_bias": cuda_randn(f_int, seed=5) * 0.1,
        "x_norm_weight": cuda_randn(f_int, seed=6) * 0.1 + 1,
        "x_norm_bias": cuda_randn(f_int, seed=7) * 0.1,
        "psi_weight": cuda_randn(f_int, seed=8) / f_int**0.5,
        "psi_bias": cuda_randn(1, seed=9),
        "groups": 32,
        "eps": 1e-5,
    }
    if layout == "channels_last":
        for key in ("g_proj", "x_proj", "x"):
            args[key] = channels_last(args[key])
    grads = tuple(k for k, v in args.items() if isinstance(v, torch.Tensor))
    check_parity(attention_gate, reference.attention_gate, args, grads, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(512, 512, 3, 3), (64, 30, 3, 3), (1, 256, 1, 1), (512, 1024, 3, 3)])
def test_weight_standardize_real_shapes(shape, dtype):
    from colorizer.kernels.weight_standardize import weight_standardize

    w = cuda_randn(*shape, dtype=dtype) * 0.02
    check_parity(weight_standardize, reference.weight_standardize, {"w": w, "eps": 1e-5}, ("w",), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_noise_inject_real_shape(layout, dtype):
    from colorizer.kernels.noise_inject import noise_inject

    x = cuda_randn(2, 32, 256, 256, dtype=dtype)
    if layout == "channels_last":
        x = channels_last(x)
    args = {"x": x, "weight": cuda_randn(32, seed=1), "noise": cuda_randn(2, 1, 256, 256, dtype=dtype, seed=2)}
    check_parity(noise_inject, reference.noise_inject, args, ("x", "weight", "noise"), dtype=dtype)


def test_philox_noise_matches_the_interpreter():
    from colorizer.kernels.noise_inject import philox_noise
    from tests.kernels.test_noise_inject import RECORDED_PHILOX

    for (seed, offset), values in RECORDED_PHILOX.items():
        noise = philox_noise(1, 2, 4, seed=seed, offset=offset, device="cuda")
        torch.testing.assert_close(noise.cpu().flatten(), torch.tensor(values), atol=1e-5, rtol=1e-5)


def test_torch_compile_inductor_through_the_ops():
    from colorizer.kernels.group_norm_act import group_norm_act

    x = cuda_randn(2, 128, 64, 64, seed=1).requires_grad_()
    r = cuda_randn(2, 128, 64, 64, seed=2)
    w = (cuda_randn(128, seed=3) + 1).requires_grad_()
    b = cuda_randn(128, seed=4).requires_grad_()

    def f(x, w, b, r):
        return group_norm_act(x * 2, w, b, 32, 1e-5, "relu", r).sigmoid()

    compiled = torch.compile(f, fullgraph=True)
    out_c, out_e = compiled(x, w, b, r), f(x, w, b, r)
    torch.testing.assert_close(out_c, out_e)
    grads_c = torch.autograd.grad(out_c.sum(), (x, w, b))
    grads_e = torch.autograd.grad(out_e.sum(), (x, w, b))
    for gc, ge in zip(grads_c, grads_e):
        torch.testing.assert_close(gc, ge, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_whole_generator_triton_vs_eager_against_float64(dtype):
    """Reference widths at 256x256, batch 2: the triton model's error against float64 is at most
    WHOLE_MODEL_ERROR_FACTOR times eager's, for the output and the parameter gradients overall."""
    from colorizer.models import Discriminator, Sketch2Color

    torch.manual_seed(0)
    generator = Sketch2Color().cuda()
    discriminator = Discriminator().cuda()
    condition = cuda_randn(2, 30, 256, 256, seed=1)
    real = cuda_randn(2, 3, 256, 256, seed=2).tanh()

    def step(kernels, step_dtype):
        g = copy.deepcopy(generator).to(step_dtype).set_kernels(kernels)
        d = copy.deepcopy(discriminator).to(step_dtype).set_kernels(kernels)
        fake = g(condition.to(step_dtype), noise=3)
        loss = (fake - real.to(step_dtype)).abs().mean() + d(condition.to(step_dtype), fake).mean()
        loss.backward()
        grads = [p.grad.double().flatten() for p in (*g.parameters(), *d.parameters()) if p.grad is not None]
        return fake.detach(), torch.cat(grads)

    fake64, grads64 = step("eager", torch.float64)
    fake_e, grads_e = step("eager", dtype)
    fake_t, grads_t = step("triton", dtype)
    for name, ours, eager, exact in (("output", fake_t, fake_e, fake64), ("gradients", grads_t, grads_e, grads64)):
        err_t, err_e = relative_l2(ours, exact), relative_l2(eager, exact)
        assert err_t <= WHOLE_MODEL_ERROR_FACTOR * err_e, f"{name}: triton {err_t:.3g} vs eager {err_e:.3g}"
