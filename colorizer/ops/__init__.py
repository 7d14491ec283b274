"""The small set of functional ops the model is built from, and the backends that implement them.

The ops are listed once, in ``colorizer.ops.reference.OP_NAMES``; each is a function of
``colorizer.ops.reference`` (the oracle) with the signature every backend implements:

- ``weight_standardize(w, eps=1e-5)``
- ``group_norm_act(x, weight, bias, groups=32, eps=1e-5, act=None, residual=None,
  noise_weight=None, noise=None)``
- ``noise_inject(x, weight, noise)``
- ``attention_gate(g_proj, x_proj, x, g_norm_weight, g_norm_bias, x_norm_weight, x_norm_bias,
  psi_weight, psi_bias, groups=32, eps=1e-5)``
- ``kmeans_assign_accumulate(points, centers, weights=None, with_labels=True)``: the palette's
  K-means step (``colorizer.palette``).

Backends (``BACKENDS``): ``eager`` (pure torch, the oracle), ``triton`` (colorizer.kernels),
``native`` (the compiled colorizer._C extension), ``onnx`` (the ops the ONNX graph is traced with,
``colorizer.export.graph_ops``). A backend may leave a function out; the eager one is used in its
place. Models take ``kernels=`` one of the names in ``BACKENDS``; ``register_backend`` adds one.
"""

from colorizer.ops import reference
from colorizer.ops.backends import (
    BACKENDS,
    OP_NAMES,
    KernelsUnavailable,
    OpSet,
    available_backends,
    get_ops,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "OP_NAMES",
    "KernelsUnavailable",
    "OpSet",
    "available_backends",
    "get_ops",
    "reference",
    "register_backend",
]
