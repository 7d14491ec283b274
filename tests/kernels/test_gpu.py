"""GPU checks of the Triton ops (marker ``gpu``; skipped without CUDA): the generator's real shapes at
256x256, batch 2 and 32, fp32/bf16/fp16, NCHW and channels_last, against the float64 reference;
Philox noise against the interpreter's recorded values; bitwise determinism of forward and backward;
CUDA-graph capture and replay; launches on the tensors' device; torch.compile (inductor) through the
ops; the whole model in fp32 and bf16, judged parameter by parameter. (The interpreter-marked suites
in this folder run compiled on the GPU too: tests/kernels/parity.py.)"""

import pytest
import torch

from colorizer.ops import reference
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
    WHOLE_MODEL_ERROR_FACTOR times eager's, for the outputs and for each parameter's gradient."""
    from colorizer.models import Discriminator, Sketch2Color
    from tests.kernels.test_whole_model import compare_with_float64

    torch.manual_seed(0)
    generator = Sketch2Color()
    discriminator = Discriminator()
    condition = cuda_randn(2, 30, 256, 256, seed=1)
    real = cuda_randn(2, 3, 256, 256, seed=2).tanh()
    failures, checked = compare_with_float64(generator, discriminator, condition, real, dtype)
    assert checked > 150, f"only {checked} gradients were compared"
    assert not failures, "\n".join(failures)


# Batch 32 at the generator's real shapes (the "batch 32 at real shapes").
GN_SHAPES_32 = [(32, 64, 256, 256), (32, 256, 32, 32), (32, 512, 16, 16), (32, 512, 2, 2), (32, 32, 128, 128)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", GN_SHAPES_32, ids=lambda s: "x".join(map(str, s)))
def test_group_norm_act_batch_32(shape, layout, dtype):
    test_group_norm_act_real_shapes(shape, layout, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(32, 32, 64, 128, 128), (32, 256, 512, 4, 4)], ids=lambda s: "x".join(map(str, s)))
def test_attention_gate_batch_32(shape, dtype):
    test_attention_gate_real_shapes(shape, "channels_last", dtype)


def _op_steps(layout: str, dtype: torch.dtype):
    """Forward+backward of every op on fixed batch-32 inputs, each returning its output and grads."""
    from colorizer.kernels.attention_gate import attention_gate
    from colorizer.kernels.group_norm_act import group_norm_act
    from colorizer.kernels.noise_inject import noise_inject_philox
    from colorizer.kernels.weight_standardize import weight_standardize

    def act(*shape, seed):
        t = cuda_randn(*shape, dtype=dtype, seed=seed)
        return (channels_last(t) if layout == "channels_last" else t).requires_grad_()

    x, r = act(32, 64, 64, 64, seed=1), act(32, 64, 64, 64, seed=2)
    gp, xp = act(32, 32, 64, 64, seed=3), act(32, 32, 64, 64, seed=4)
    params = [(cuda_randn(64, seed=5 + i) * 0.1 + 1).requires_grad_() for i in range(3)]
    gparams = [(cuda_randn(32, seed=9 + i) * 0.1 + 1).requires_grad_() for i in range(5)]
    psi_b = torch.zeros(1, device="cuda", requires_grad=True)
    wt = (cuda_randn(256, 128, 3, 3, dtype=dtype, seed=20) * 0.02).requires_grad_()
    dy = cuda_randn(32, 64, 64, 64, dtype=dtype, seed=21)

    def grads(out, inputs, upstream):
        return [out.detach(), *torch.autograd.grad(out, inputs, upstream)]

    def gn():
        out = group_norm_act(x, params[0], params[1], 32, 1e-5, "relu", r, params[2], noise_seed=3)
        return grads(out, [x, r, *params], dy)

    def gate():
        out = attention_gate(gp, xp, x, *gparams, psi_b, 32, 1e-5)
        return grads(out, [gp, xp, x, *gparams, psi_b], dy)

    def noise():
        return grads(noise_inject_philox(x, params[2], 5, 0), [x, params[2]], dy)

    def ws():
        return grads(weight_standardize(wt), [wt], torch.ones_like(wt))

    return {"group_norm_act": gn, "attention_gate": gate, "noise_inject_philox": noise, "weight_standardize": ws}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_forward_and_backward_are_bitwise_deterministic(layout, dtype):
    for name, step in _op_steps(layout, dtype).items():
        first, second = step(), step()
        for i, (a, b) in enumerate(zip(first, second)):
            assert torch.equal(a, b), f"{name}: output/gradient {i} differs between two runs"


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_cuda_graph_capture_and_replay_equal_eager(layout):
    for name, step in _op_steps(layout, torch.bfloat16).items():
        expected = step()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static = step()
        for _ in range(2):
            graph.replay()
        torch.cuda.synchronize()
        for i, (a, b) in enumerate(zip(expected, static)):
            assert torch.equal(a, b), f"{name}: replayed output/gradient {i} differs from eager"


def test_ops_launch_on_the_tensors_device():
    """Tensors on cuda:1 launch on device 1 (every launcher sets the current device)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    from colorizer.kernels.group_norm_act import group_norm_act

    x = torch.randn(2, 64, 8, 8, device="cuda:1", requires_grad=True)
    w, b = torch.ones(64, device="cuda:1"), torch.zeros(64, device="cuda:1")
    with torch.cuda.device(0):
        y = group_norm_act(x, w, b, 32, 1e-5, "relu")
        (dx,) = torch.autograd.grad(y.sum(), x)
    expected = torch.nn.functional.group_norm(x.detach().cpu(), 32).relu()
    torch.testing.assert_close(y.cpu(), expected, atol=1e-4, rtol=1e-4)
    assert dx.device == x.device and torch.isfinite(dx).all()
