"""Parity-testing helpers shared by tests and export gates: one tolerance table keyed by dtype.

Fast paths are compared against a float64 oracle (the pure-torch reference run in float64). A
failure message says where the worst element is and by how much.
"""

from __future__ import annotations

import torch

# dtype -> (atol, rtol) for a single fused op against its float64 reference.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-4),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float16: (5e-3, 5e-3),
}

# Whole-model fast paths are judged by relative L2 error against the float64 model: at most this
# factor times the eager path's own error in the same precision (deep GroupNorm stacks amplify
# rounding, so a fixed elementwise tolerance would be either too loose or too tight).
WHOLE_MODEL_ERROR_FACTOR = 2.0

# Reduced-precision CPU engines (colorizer.export.openvino), by export precision: allowed relative L2
# vs the float64 model = factor x the eager model's own error in the reference precision (fp32: eager
# fp32; bf16 and int8: torch.autocast("cpu", torch.bfloat16) on the eager model, same inputs). int8
# has no eager counterpart; its factor is justified with measurements in export/openvino.py.
LOW_PRECISION_GATES: dict[str, float] = {
    "fp32": WHOLE_MODEL_ERROR_FACTOR,
    "bf16": WHOLE_MODEL_ERROR_FACTOR,
    "int8": 4.0,
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    try:
        return TOLERANCES[dtype]
    except KeyError:
        raise KeyError(f"no tolerance for {dtype}; add it to colorizer.testing.TOLERANCES") from None


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64."""
    a, e = actual.double(), expected.double()
    denom = e.norm().item()
    return (a - e).norm().item() / (denom if denom > 0 else 1.0)


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    name: str = "tensor",
    atol: float | None = None,
    rtol: float | None = None,
) -> None:
    """Assert |actual - expected| <= atol + rtol * |expected| elementwise, with a useful message.

    Tolerances come from TOLERANCES[dtype] (dtype defaults to actual's) unless given.
    """
    dtype = dtype or actual.dtype
    table_atol, table_rtol = tolerance(dtype)
    atol = table_atol if atol is None else atol
    rtol = table_rtol if rtol is None else rtol
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    finite_mismatch = torch.isfinite(a) != torch.isfinite(e)
    if finite_mismatch.any():
        idx = tuple(int(i) for i in finite_mismatch.nonzero()[0])
        raise AssertionError(f"{name}: non-finite mismatch at {idx}: got {a[idx].item()}, expected {e[idx].item()}")
    err = (a - e).abs().nan_to_num(0.0)
    allowed = atol + rtol * e.abs().nan_to_num(0.0)
    excess = err - allowed
    if (excess > 0).any():
        flat = int(excess.argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape))
        count = int((excess > 0).sum())
        raise AssertionError(
            f"{name} ({dtype}): {count}/{a.numel()} elements out of tolerance (atol={atol:g}, rtol={rtol:g}); "
            f"worst at {idx}: got {a[idx].item():.6g}, expected {e[idx].item():.6g}, "
            f"|diff|={err[idx].item():.3g}; max |diff|={err.max().item():.3g}, rel L2={relative_l2(a, e):.3g}"
        )
