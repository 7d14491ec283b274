"""Parity harness for the Triton ops: forward and every gradient against the float64 reference.

The op runs with NaN-poisoned output buffers (``poisoned_outputs``), so an element a kernel forgets
to write fails the comparison; the reference runs in float64 on the same (rounded) inputs with the
same upstream gradient; tolerances come from ``colorizer.testing.TOLERANCES`` by dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from colorizer.kernels.tuning import interpreting
from colorizer.testing import assert_close

# The CPU parity tests run the kernels in Triton's interpreter (tests/conftest.py turns it on when
# there is no GPU). On a CUDA machine CPU tensors would take the reference fallback, so those tests
# skip there and the ``gpu`` tests check the kernels instead.
needs_interpreter = pytest.mark.skipif(
    not interpreting(), reason="CPU Triton tests need TRITON_INTERPRET=1 (set by tests/conftest.py without a GPU)"
)


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
) -> torch.Tensor:
    """Run ``op(**args, **op_kwargs)`` and ``reference(**args in float64)``; compare the output and
    the gradients of the tensor arguments named in ``grads``. Returns the op's output."""
    from colorizer.kernels.backend import poisoned_outputs

    def prepare(value, name, double):
        if not isinstance(value, torch.Tensor):
            return value
        t = value.detach().double() if double else value.detach().clone()
        return t.requires_grad_(name in grads)

    ours = {k: prepare(v, k, False) for k, v in args.items()}
    theirs = {k: prepare(v, k, True) for k, v in args.items()}
    with poisoned_outputs():
        out = op(**ours, **(op_kwargs or {}))
        gen = torch.Generator().manual_seed(1234)
        dy = torch.randn(out.shape, generator=gen, dtype=torch.float32).to(out.dtype)
        if dy_layout_like_output:
            dy = torch.empty_like(out).copy_(dy)
        got = torch.autograd.grad(out, [ours[k] for k in grads], dy)
    expected_out = reference(**theirs)
    expected = torch.autograd.grad(expected_out, [theirs[k] for k in grads], dy.double())
    assert out.dtype == dtype, f"output dtype {out.dtype}, expected {dtype}"
    assert_close(out, expected_out, dtype=dtype, name="output")
    for name, g, e in zip(grads, got, expected):
        assert g is not None, f"no gradient for {name}"
        assert_close(g, e, dtype=dtype, name=f"d{name}")
    return out
