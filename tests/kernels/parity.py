"""Parity harness for the Triton ops: forward and every gradient against the float64 reference.

The op runs with NaN-poisoned output buffers (``poisoned_outputs``), so an element a kernel forgets
to write fails the comparison; the reference runs in float64 on the same (rounded) inputs with the
same upstream gradient; tolerances come from ``colorizer.testing.TOLERANCES`` by dtype, one
``assert_close`` per gradient. The tensors run on DEVICE: the GPU when there is one (compiled
kernels), else the CPU under Triton's interpreter.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from colorizer.kernels.tuning import interpreting
from colorizer.testing import assert_close

# Where the parity tests run the kernels: compiled on the GPU when there is one (unless the
# interpreter was asked for explicitly with TRITON_INTERPRET=1), else in Triton's interpreter on CPU
# tensors (tests/conftest.py turns it on when there is no GPU). The tests build their inputs on the
# CPU and ``check_parity`` (or ``on_device``) moves them here.
ON_GPU = torch.cuda.is_available() and not interpreting()
DEVICE = "cuda" if ON_GPU else "cpu"
needs_kernels = pytest.mark.skipif(
    not (ON_GPU or interpreting()),
    reason="Triton kernels need a GPU, or TRITON_INTERPRET=1 on CPU tensors (set by tests/conftest.py without one)",
)
needs_interpreter = needs_kernels  # the former name
# Cases of a parametrised matrix that only the GPU runs (the interpreter takes seconds per case).
gpu_only = pytest.mark.skipif(not ON_GPU, reason="GPU-only case of the matrix (the CPU runs a representative subset)")


def on_device(value):
    """A tensor moved to DEVICE (anything else unchanged)."""
    return value.to(DEVICE) if isinstance(value, torch.Tensor) else value


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def check_parity(
    op: Callable,
    reference: Callable,
    args: dict[str, object],
    grads: tuple[str, ...],
    dtype: torch.dtype = torch.float32,
    op_kwargs: dict | None = None,
    dy_layout_like_output: bool = True,
    dy: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run ``op(**args, **op_kwargs)`` and ``reference(**args in float64)``; compare the output and
    the gradients of the tensor arguments named in ``grads``. Returns the op's output.

    dy: makes the upstream gradient from the output (e.g. a broadcast, zero-stride one); default a
    random one in the output's layout."""
    from colorizer.kernels.backend import poisoned_outputs

    def prepare(value, name, double):
        if not isinstance(value, torch.Tensor):
            return value
        value = on_device(value.detach())
        t = value.double() if double else value.clone()
        return t.requires_grad_(name in grads)

    ours = {k: prepare(v, k, False) for k, v in args.items()}
    theirs = {k: prepare(v, k, True) for k, v in args.items()}
    with poisoned_outputs():
        out = op(**ours, **(op_kwargs or {}))
        if dy is not None:
            upstream = dy(out.detach())
        else:
            gen = torch.Generator().manual_seed(1234)
            upstream = torch.randn(out.shape, generator=gen, dtype=torch.float32).to(out.device, out.dtype)
            if dy_layout_like_output:
                upstream = torch.empty_like(out).copy_(upstream)
        got = torch.autograd.grad(out, [ours[k] for k in grads], upstream)
    expected_out = reference(**theirs)
    expected = torch.autograd.grad(expected_out, [theirs[k] for k in grads], upstream.double())
    assert out.dtype == dtype, f"output dtype {out.dtype}, expected {dtype}"
    assert_close(out, expected_out, dtype=dtype, name="output")
    # One check per gradient (never one norm over all of them), each with the tolerance of its dtype.
    for name, g, e in zip(grads, got, expected):
        assert g is not None, f"no gradient for {name}"
        assert g.dtype == ours[name].dtype, f"d{name} is {g.dtype}, its input {ours[name].dtype}"
        assert_close(g, e, dtype=dtype, name=f"d{name}")
    return out
