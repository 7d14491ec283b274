"""The small set of functional ops the model is built from, and the backends that implement them.

Every backend implements the same four functions with the same signatures as
``colorizer.ops.reference``:

- ``weight_standardize(w, eps=1e-5)``
- ``group_norm_act(x, weight, bias, groups=32, eps=1e-5, act=None, residual=None,
  noise_weight=None, noise=None)``
- ``noise_inject(x, weight, noise)``
- ``attention_gate(g_proj, x_proj, x, g_norm_weight, g_norm_bias, x_norm_weight, x_norm_bias,
  psi_weight, psi_bias, groups=32, eps=1e-5)``

Backends: ``eager`` (pure torch, the oracle and the export path), ``triton`` (colorizer.kernels),
``native`` (the compiled colorizer._C extension). A backend may leave a function out; the eager one
is used in its place. Models take ``kernels="eager" | "triton" | "native"``.
"""

from colorizer.ops import reference
from colorizer.ops.backends import (
    BACKENDS,
    KernelsUnavailable,
    OpSet,
    available_backends,
    get_ops,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "KernelsUnavailable",
    "OpSet",
    "available_backends",
    "get_ops",
    "reference",
    "register_backend",
]
