"""The host-side helpers shared by the Triton ops (the backend's ``make_opset`` is in the package,
``colorizer.kernels``, so that the op modules import these helpers and the package imports the ops,
never the other way round).

Devices:
- CUDA tensors run the Triton kernels.
- CPU tensors run the same kernels in Triton's interpreter when ``TRITON_INTERPRET=1`` was set before
  Triton was imported (that is how the tests run; slow, for correctness only).
- CPU tensors without the interpreter fall back to the pure-torch reference
  (``colorizer.ops.reference``) with a one-time warning: a model switched to ``triton`` still runs on
  the CPU, with the eager math. Nothing else falls back silently.

torch.compile: the launchers are ``torch.library`` custom ops with fake kernels, called from
``torch.autograd.Function``s, so Dynamo traces the ops (opaque to Inductor, which fuses around them).
Dynamo cannot trace an autograd.Function that receives the same tensor for two arguments (it falls
back to a graph break); the model never does that.

Everything here is import-light: importing this module does not import Triton.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch

from colorizer.kernels.tuning import interpreting

OP_LIBRARY = "colorizer_triton"  # torch.library namespace of the ops (torch.ops.colorizer_triton.*)

_POISON = False
_WARNED_FALLBACK = False


def use_triton(x: torch.Tensor) -> bool:
    """Whether an op on ``x`` runs the Triton kernels (CUDA, or CPU under the interpreter); False
    means the caller uses the reference (a one-time warning says so)."""
    global _WARNED_FALLBACK
    if x.is_cuda or (interpreting() and x.device.type == "cpu"):
        return True
    if not _WARNED_FALLBACK:
        _WARNED_FALLBACK = True
        warnings.warn(
            f"colorizer triton kernels: {x.device.type} tensors run the pure-torch reference "
            "(Triton needs CUDA, or TRITON_INTERPRET=1 for the CPU interpreter)",
            stacklevel=3,
        )
    return False


@contextlib.contextmanager
def poisoned_outputs(enabled: bool = True):
    """Fill every buffer the launchers allocate with NaN before the kernels write it (a test aid:
    an element a kernel forgets to write then shows up as NaN)."""
    global _POISON
    previous, _POISON = _POISON, enabled
    try:
        yield
    finally:
        _POISON = previous


def new_empty(shape, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """torch.empty, or NaN-filled under ``poisoned_outputs()``."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if _POISON and out.is_floating_point():
        out.fill_(float("nan"))
    return out


def new_empty_like(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """torch.empty_like keeping x's memory format (NCHW or channels_last), NaN under poisoning."""
    out = torch.empty_like(x, dtype=dtype)
    if _POISON and out.is_floating_point():
        out.fill_(float("nan"))
    return out


def flat_spatial(t: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """View a 4-D (N, C, H, W) tensor as (N, C, H*W) by strides, without copying when H and W can be
    merged (contiguous NCHW, channels_last, and broadcast views with zero strides can).

    Returns (tensor, stride_n, stride_c, stride_hw) in elements; the tensor is a contiguous copy only
    when H and W cannot be merged.
    """
    n, c, h, w = t.shape
    if h == 1:
        s_hw = t.stride(3)
    elif w == 1 or t.stride(2) == w * t.stride(3):
        s_hw = t.stride(3) if w > 1 else t.stride(2)
    else:
        t = t.contiguous()
        s_hw = 1
    return t, t.stride(0), t.stride(1), s_hw


def device_guard(t: torch.Tensor):
    """Make t's CUDA device the current one while a launcher runs (Triton launches on the current
    device: without this, tensors on cuda:1 would be launched on device 0). A no-op on the CPU."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def on_device_of_first_tensor(fn):
    """Decorator for the launchers: run fn under ``device_guard`` of its first tensor argument (the
    signature, which torch.library reads, is kept through functools.wraps)."""

    @functools.wraps(fn)
    def launcher(*args, **kwargs):
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is None:
            return fn(*args, **kwargs)
        with device_guard(first):
            return fn(*args, **kwargs)

    return launcher


KERNEL_MODULES = ("group_norm_act", "attention_gate", "noise_inject", "weight_standardize", "kmeans")


def compiled_variants() -> list[tuple[str, object]]:
    """(kernel name, compiled kernel) for every variant Triton's launcher has compiled so far in
    this process, read from ``JITFunction.device_caches`` (triton 3.x: each device's entry is a
    tuple whose first item maps a specialisation key to its CompiledKernel). Count them before and
    after a warm-up step to see how many variants a model compiles (``benchmarks.gpu_check``)."""
    import importlib

    out = []
    for module in KERNEL_MODULES:
        mod = importlib.import_module(f"colorizer.kernels.{module}")
        for name in sorted(vars(mod)):
            caches = getattr(getattr(mod, name), "device_caches", None)
            if not name.endswith("_kernel") or not caches:
                continue
            for entry in list(caches.values()):
                cache = entry[0] if isinstance(entry, tuple) else entry
                out.extend((name, compiled) for compiled in list(getattr(cache, "values", list)()))
    return out
