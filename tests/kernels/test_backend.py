"""The ``triton`` backend switch: registry, import-lightness, missing Triton, CPU fallback, and
torch.compile tracing through the registered ops."""

import subprocess
import sys
import textwrap

import pytest
import torch

from colorizer.ops import KernelsUnavailable, get_ops, reference
from colorizer.testing import assert_close
from tests.kernels.parity import DEVICE, needs_kernels

pytest.importorskip("triton")
from colorizer.kernels import backend  # noqa: E402
from colorizer.kernels.attention_gate import attention_gate  # noqa: E402
from colorizer.kernels.group_norm_act import group_norm_act  # noqa: E402
from colorizer.kernels.noise_inject import noise_inject  # noqa: E402
from colorizer.kernels.weight_standardize import weight_standardize  # noqa: E402

pytestmark = pytest.mark.triton


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_import_is_light_and_missing_triton_fails_clearly():
    """Without Triton: colorizer.kernels imports, make_opset and Sketch2Color(kernels='triton') raise
    KernelsUnavailable with one line, and the eager model still works."""
    result = run_python(
        """
        import sys
        import colorizer.kernels, colorizer.kernels.backend, colorizer.kernels.tuning
        assert "triton" not in sys.modules, "importing colorizer.kernels must not import triton"
        sys.modules["triton"] = None  # what an environment without triton looks like to import
        from colorizer.ops import KernelsUnavailable
        from colorizer.models import Sketch2Color
        try:
            colorizer.kernels.make_opset()
        except KernelsUnavailable as exc:
            assert "\\n" not in str(exc) and "triton" in str(exc), str(exc)
        else:
            raise AssertionError("make_opset did not raise")
        try:
            Sketch2Color(channels=(64,), kernels="triton")
        except KernelsUnavailable as exc:
            print("model:", exc)
        else:
            raise AssertionError("Sketch2Color(kernels='triton') did not raise")
        Sketch2Color(channels=(64,), kernels="eager")
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok" in result.stdout and "model: kernels='triton' needs the triton package" in result.stdout


def test_registry_returns_the_triton_ops():
    ops = get_ops("triton")
    assert ops.name == "triton"
    assert ops.group_norm_act is group_norm_act
    assert ops.attention_gate is attention_gate
    assert ops.noise_inject is noise_inject
    assert ops.weight_standardize is weight_standardize
    from colorizer.kernels.kmeans import kmeans_assign_accumulate

    assert ops.kmeans_assign_accumulate is kmeans_assign_accumulate


def test_cpu_without_interpreter_falls_back_to_the_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(backend, "_WARNED_FALLBACK", False)
    x = torch.randn(2, 64, 3, 3)
    w, b = torch.randn(64), torch.randn(64)
    with pytest.warns(UserWarning, match="pure-torch reference"):
        y = group_norm_act(x, w, b, 32, 1e-5, "relu")
    assert torch.equal(y, reference.group_norm_act(x, w, b, 32, 1e-5, "relu"))


@needs_kernels
def test_custom_op_schemas_and_fake_kernels():
    from torch.library import opcheck

    x, r = torch.randn(1, 64, 2, 3, device=DEVICE), torch.randn(1, 64, 2, 3, device=DEVICE)
    w, b = torch.randn(64, device=DEVICE), torch.randn(64, device=DEVICE)
    utils = ("test_schema", "test_faketensor")
    ops = torch.ops.colorizer_triton
    y, mean, rstd = ops.group_norm_act_forward(x, w, b, r, w, x[:, :1], 32, 1e-5, "relu", 0)
    opcheck(ops.group_norm_act_forward.default, (x, w, b, r, w, x[:, :1], 32, 1e-5, "relu", 0), test_utils=utils)
    opcheck(
        ops.group_norm_act_backward.default,
        (torch.randn_like(y), x, w, b, r, w, x[:, :1], mean, rstd, 32, "relu", 0),
        test_utils=utils,
    )
    cw = torch.randn(8, 4, 3, 3, device=DEVICE)
    opcheck(ops.weight_standardize_forward.default, (cw, 1e-5, 0), test_utils=utils)
    opcheck(ops.noise_inject_forward.default, (x, w, None, 3, 0, 0), test_utils=utils)
    opcheck(ops.noise_inject_backward.default, (x, w, x[:, :1], 0, 0, True, 0), test_utils=utils)
    f = torch.randn(1, 32, 2, 3, device=DEVICE)
    gate_args = (f, f + 1, x, w[:32], b[:32], w[:32], b[:32], w[:32], b[:1], 32, 1e-5, 0)
    opcheck(ops.attention_gate_forward.default, gate_args, test_utils=utils)


@needs_kernels
def test_torch_compile_traces_through_the_ops():
    """fullgraph=True: dynamo must see the autograd Functions and the custom ops (aot_eager backend, so
    no C++ compiler is needed on the CPU; inductor on a GPU is in test_gpu.py)."""

    def block(x, w, gw, gb, nw, noise):
        conv = torch.nn.functional.conv2d(x, weight_standardize(w), padding=1)
        y = group_norm_act(conv, gw, gb, 32, 1e-5, "relu", x, nw, noise)
        # Distinct tensors per argument: Dynamo cannot trace an autograd.Function given one tensor twice.
        gated = attention_gate(y, conv, x, gw, gb, gw * 2, gb + 1, nw / 8, gb[:1], 32, 1e-5)
        return noise_inject(gated, nw, noise)

    gen = torch.Generator().manual_seed(0)
    args = [
        torch.randn(1, 64, 3, 5, generator=gen),
        torch.randn(64, 64, 3, 3, generator=gen) * 0.02,
        torch.randn(64, generator=gen) + 1,
        torch.randn(64, generator=gen),
        torch.randn(64, generator=gen),
        torch.randn(1, 1, 3, 5, generator=gen),
    ]
    args = [a.to(DEVICE) for a in args]
    eager_args = [a.clone().requires_grad_() for a in args[:5]] + [args[5]]
    compiled_args = [a.clone().requires_grad_() for a in args[:5]] + [args[5]]
    torch._dynamo.reset()
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    out_c = compiled(*compiled_args)
    out_e = block(*eager_args)
    assert_close(out_c, out_e, name="compiled output")
    grads_c = torch.autograd.grad(out_c.square().sum(), compiled_args[:5])
    grads_e = torch.autograd.grad(out_e.square().sum(), eager_args[:5])
    for i, (gc, ge) in enumerate(zip(grads_c, grads_e)):
        assert_close(gc, ge, name=f"compiled grad {i}")


def test_unavailable_backend_error_type():
    assert issubclass(KernelsUnavailable, RuntimeError)


def test_kernels_compile_for_a_gpu_without_one():
    """The interpreter never compiles the kernels; compile representative launches for sm_90 with
    Triton's bundled ptxas (no GPU needed), so GPU-only compile errors fail here too."""
    import os
    from pathlib import Path

    import triton

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this Triton build has no bundled ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.kernels.compile_check", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "0 failed" in result.stdout
