"""The ``native`` backend end to end: the registry, the whole generator against eager, and the
behaviour without the compiled library."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from colorizer import native
from colorizer.models import AttentionGate, NoiseInjection, ResidualBlock, Sketch2Color, noise_shapes, set_kernels
from colorizer.ops import KernelsUnavailable, get_ops
from colorizer.ops.backends import OP_NAMES
from colorizer.testing import WHOLE_MODEL_ERROR_FACTOR, relative_l2

needs_native = pytest.mark.skipif(not native.NATIVE_AVAILABLE, reason=f"{native.NATIVE_UNAVAILABLE_REASON}")

SMALL = (64, 64, 64, 64)


def test_make_opset_without_library_raises_one_line_reason(monkeypatch):
    monkeypatch.setattr(native, "NATIVE_AVAILABLE", False)
    monkeypatch.setattr(native, "NATIVE_UNAVAILABLE_REASON", "colorizer._C not built (test)")
    with pytest.raises(KernelsUnavailable, match=r"kernels='native' is not available: colorizer._C not built") as info:
        native.make_opset()
    assert "\n" not in str(info.value)
    # The kernels are not used either: every function falls back to the reference.
    assert not native.native_supports(torch.randn(2, 2))


@needs_native
def test_opset_has_every_op_with_reference_signatures():
    import inspect

    from colorizer.ops import reference

    ops = native.make_opset()
    assert set(ops) == set(OP_NAMES)
    for name, fn in ops.items():
        assert inspect.signature(fn) == inspect.signature(getattr(reference, name)), name
    opset = get_ops("native")
    assert opset.group_norm_act is native.group_norm_act
    assert opset.attention_gate is native.attention_gate


def _forward_backward(model, x, maps, kernels, dtype):
    """Output, input gradient and parameter gradients (flattened, float64) of one run."""
    model.to(dtype).set_kernels(kernels)
    model.zero_grad(set_to_none=True)
    inp = x.to(dtype).clone().requires_grad_(True)
    out = model(inp, noise=[m.to(dtype) for m in maps])
    # A fixed, non-uniform grad_output through the tanh output.
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=dtype).reshape(out.shape))
    # InstanceNorm removes psi's bias, so its gradient is zero up to rounding: left out.
    grads = [
        p.grad.double().flatten()
        for n, p in model.named_parameters()
        if p.grad is not None and not n.endswith("psi.0.bias")
    ]
    return out.detach().double(), inp.grad.double(), torch.cat(grads)


@pytest.fixture(scope="module")
def small_generator():
    """A small generator (channels 64, 128x128, batch 1) with non-zero noise weights, its input and
    noise maps, and the float64 eager oracle (output, input gradient, parameter gradients)."""
    torch.manual_seed(0)
    model = Sketch2Color(channels=SMALL)
    for m in model.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.normal_(0, 0.1)
    x = torch.randn(1, 30, 128, 128)
    maps = [torch.randn(s) for s in noise_shapes(1, 128, 128)]
    oracle = _forward_backward(model, x, maps, "eager", torch.float64)
    return model, x, maps, oracle


@needs_native
def test_whole_generator_native_matches_eager_forward_and_gradients(small_generator):
    model, x, maps, oracle = small_generator
    eager = _forward_backward(model, x, maps, "eager", torch.float32)
    ours = _forward_backward(model, x, maps, "native", torch.float32)
    for i, what in enumerate(("output", "input gradient", "parameter gradients")):
        eager_err, our_err = relative_l2(eager[i], oracle[i]), relative_l2(ours[i], oracle[i])
        # The fp32 eager model's own error is the yardstick; a small floor for an exact eager path.
        assert our_err <= WHOLE_MODEL_ERROR_FACTOR * eager_err + 1e-6, (
            f"{what}: native {our_err:.3g} vs eager {eager_err:.3g} (relative L2 to float64)"
        )


@needs_native
@torch.no_grad()
def test_whole_generator_bfloat16_runs_native(small_generator):
    model, x, maps, oracle = small_generator
    model.bfloat16()
    bf16_maps = [m.bfloat16() for m in maps]
    eager = model.set_kernels("eager")(x.bfloat16(), noise=bf16_maps)
    ours = model.set_kernels("native")(x.bfloat16(), noise=bf16_maps)
    assert ours.dtype == torch.bfloat16
    eager_err, our_err = relative_l2(eager, oracle[0]), relative_l2(ours, oracle[0])
    assert our_err <= WHOLE_MODEL_ERROR_FACTOR * eager_err + 1e-3, f"native {our_err:.3g} vs eager {eager_err:.3g}"


@needs_native
def test_native_ops_are_used_by_the_blocks():
    """Every block calls torch.ops.colorizer (not a silent fallback to eager), forward and backward."""
    block, gate, inject = ResidualBlock(64, 64), AttentionGate(64, 64, 32), NoiseInjection(64)
    for module in (block, gate, inject):
        set_kernels(module, "native")
    inject.weight.data.normal_()
    x = torch.randn(1, 64, 8, 8, requires_grad=True)
    noise = torch.randn(1, 1, 8, 8)
    names = set()

    class RecordOps(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            names.add(func._schema.name)
            return func(*args, **(kwargs or {}))

    with RecordOps():
        out = inject(gate(block(x, inject.weight, noise), x), noise)
        out.sum().backward()
    for op in (
        "colorizer::group_norm_act",
        "colorizer::group_norm_act_backward",
        "colorizer::weight_standardize",
        "colorizer::weight_standardize_backward",
        "colorizer::noise_inject",
        "colorizer::noise_inject_backward",
    ):
        assert op in names, f"{op} not called; saw {sorted(n for n in names if 'colorizer' in n)}"
    assert "aten::group_norm" not in names


@needs_native
@torch.no_grad()
def test_whole_generator_channels_last_native(small_generator):
    """A channels_last model and input run the channels_last kernels end to end."""
    model, x, maps, oracle = small_generator
    model.float().to(memory_format=torch.channels_last)
    try:
        x_cl = x.contiguous(memory_format=torch.channels_last)
        eager = model.set_kernels("eager")(x_cl, noise=maps)
        ours = model.set_kernels("native")(x_cl, noise=maps)
    finally:
        model.to(memory_format=torch.contiguous_format)
    eager_err, our_err = relative_l2(eager, oracle[0]), relative_l2(ours, oracle[0])
    assert our_err <= WHOLE_MODEL_ERROR_FACTOR * eager_err + 1e-6, f"native {our_err:.3g} vs eager {eager_err:.3g}"
