"""Backend registry: maps a name (``eager``, ``triton``, ``native``) to an OpSet.

Fast backends register lazily: their module is imported only when the backend is asked for, so
``import colorizer`` never needs Triton or the compiled extension.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from colorizer.ops import reference

OP_NAMES = ("weight_standardize", "group_norm_act", "noise_inject", "attention_gate")


class KernelsUnavailable(RuntimeError):
    """A requested kernel backend cannot be used here (missing package, library or device)."""


@dataclass(frozen=True)
class OpSet:
    name: str
    weight_standardize: Callable
    group_norm_act: Callable
    noise_inject: Callable
    attention_gate: Callable


EAGER = OpSet(
    name="eager",
    weight_standardize=reference.weight_standardize,
    group_norm_act=reference.group_norm_act,
    noise_inject=reference.noise_inject,
    attention_gate=reference.attention_gate,
)

# name -> module path whose ``make_opset()`` returns a dict of op name -> callable; it raises
# KernelsUnavailable with a one-line reason when the backend cannot run here.
BACKENDS: dict[str, str | None] = {
    "eager": None,
    "triton": "colorizer.kernels.backend",
    "native": "colorizer.native",
}
_CACHE: dict[str, OpSet] = {"eager": EAGER}


def register_backend(name: str, module_path: str) -> None:
    BACKENDS[name] = module_path
    _CACHE.pop(name, None)


def get_ops(name: str | OpSet = "eager") -> OpSet:
    """Return the OpSet for a backend name; raises KernelsUnavailable with the reason."""
    if isinstance(name, OpSet):
        return name
    if name in _CACHE:
        return _CACHE[name]
    if name not in BACKENDS:
        raise ValueError(f"unknown kernels backend {name!r}; choose from {sorted(BACKENDS)}")
    try:
        module = importlib.import_module(BACKENDS[name])
    except ImportError as exc:
        raise KernelsUnavailable(f"kernels={name!r} is not available: {exc}") from exc
    ops = module.make_opset()
    merged = {op: ops.get(op) or getattr(EAGER, op) for op in OP_NAMES}
    _CACHE[name] = OpSet(name=name, **merged)
    return _CACHE[name]


def available_backends() -> dict[str, str]:
    """Name -> 'ok' or the reason it is unavailable."""
    status = {}
    for name in BACKENDS:
        try:
            get_ops(name)
            status[name] = "ok"
        except KernelsUnavailable as exc:
            status[name] = str(exc)
        except Exception as exc:  # a diagnostics listing must not die on one broken backend
            status[name] = f"broken: {type(exc).__name__}: {exc}"
    return status
