"""Backend registry: maps a name (``eager``, ``triton``, ``native``, ``onnx``) to an OpSet.

``OpSet`` has one field per name in ``reference.OP_NAMES`` (written out, so grep and type checkers
find ``ops.group_norm_act``; ``check_op_fields`` fails at import when the two differ), each defaulting
to the reference (``eager``) function of that name, so a backend that leaves an op out runs the eager
one in its place. Fast backends register lazily: their module is imported only when
the backend is asked for, so ``import colorizer`` never needs Triton, the compiled extension or the
export package. The command-line choices (``--kernels``) are the names in ``BACKENDS``, read when the
parser is built, so a backend added with ``register_backend`` is accepted there too.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

from colorizer.errors import KernelsUnavailable
from colorizer.ops import reference
from colorizer.ops.reference import OP_NAMES

__all__ = [
    "BACKENDS",
    "EAGER",
    "OP_NAMES",
    "KernelsUnavailable",
    "OpSet",
    "available_backends",
    "check_op_fields",
    "get_ops",
    "register_backend",
]


@dataclasses.dataclass(frozen=True)
class OpSet:
    """The functions a model calls, one field per name in ``reference.OP_NAMES`` (same order), and the
    backend's name. Frozen, compared by value; every op defaults to the reference function of that
    name, so ``OpSet(name="x", group_norm_act=f)`` is eager except for that op. ``check_op_fields``
    (run at import) fails when the fields and OP_NAMES drift apart."""

    name: str
    weight_standardize: Callable = reference.weight_standardize
    group_norm_act: Callable = reference.group_norm_act
    noise_inject: Callable = reference.noise_inject
    attention_gate: Callable = reference.attention_gate
    kmeans_assign_accumulate: Callable = reference.kmeans_assign_accumulate


def check_op_fields(op_names: tuple[str, ...] = OP_NAMES) -> None:
    """Raise TypeError unless OpSet has a field per name in ``op_names`` (in order, after ``name``),
    each defaulting to ``reference.<op>``: an op added to OP_NAMES but not to OpSet fails at import."""
    ops = [f for f in dataclasses.fields(OpSet) if f.name != "name"]
    have = [f.name for f in ops]
    if have != list(op_names):
        missing = [n for n in op_names if n not in have]
        extra = [n for n in have if n not in op_names]
        raise TypeError(
            f"OpSet (colorizer/ops/backends.py): its op fields must be reference.OP_NAMES in order: "
            f"missing {', '.join(missing) or '-'}; not in OP_NAMES {', '.join(extra) or '-'}"
        )
    for f in ops:
        if f.default is not getattr(reference, f.name, None):
            raise TypeError(f"OpSet.{f.name} must default to colorizer.ops.reference.{f.name}")


check_op_fields()

EAGER = OpSet(name="eager")

# name -> module path whose ``make_opset()`` returns a dict of op name -> callable (a subset of
# OP_NAMES); it raises KernelsUnavailable with a one-line reason when the backend cannot run here.
BACKENDS: dict[str, str | None] = {
    "eager": None,
    "triton": "colorizer.kernels",
    "native": "colorizer.native",
    "onnx": "colorizer.export.graph_ops",  # the ops the ONNX graph is traced with
}
_CACHE: dict[str, OpSet] = {"eager": EAGER}


def register_backend(name: str, module_path: str) -> None:
    """Add (or replace) a backend: ``module_path`` names a module with ``make_opset()``."""
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
    if name in _CACHE:  # the module asked for its own OpSet while it was imported (export.graph_ops)
        return _CACHE[name]
    ops = module.make_opset()
    unknown = sorted(set(ops) - set(OP_NAMES))
    if unknown:
        raise TypeError(f"backend {name!r} gives ops that are not in reference.OP_NAMES: {', '.join(unknown)}")
    _CACHE[name] = OpSet(name=name, **ops)
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
