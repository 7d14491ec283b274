"""Fused Triton kernels of the colorizer (installed as ``colorizer.kernels``).

One op per module, each with its Triton forward and backward kernels, launchers registered as
``torch.library`` custom ops (``torch.ops.colorizer_triton.*``, traceable by ``torch.compile``), a
``torch.autograd.Function`` and a functional with the signature of ``colorizer.ops.reference``:

- ``weight_standardize``: WSConv2d's per-output-channel standardization.
- ``group_norm_act``: GroupNorm + residual + ReLU/LeakyReLU + noise injection in one pass (noise
  from a tensor, or drawn in the kernel with ``noise_seed``/``noise_offset``).
- ``noise_inject`` / ``noise_inject_philox`` / ``philox_noise``: noise injection from a tensor or
  from in-kernel Philox noise (seed, offset).
- ``attention_gate``: the Attention U-Net gate after its two 1x1 convolutions.

``make_opset()`` below is the ``triton`` backend of ``colorizer.ops`` (use
``Sketch2Color(kernels="triton")``): ``colorizer.ops.get_ops("triton")`` calls it. It imports Triton only
then, and raises ``KernelsUnavailable`` with one line when Triton cannot be imported, so
``Sketch2Color(kernels="triton")`` fails clearly and the eager path keeps working. ``backend`` holds the
host-side helpers the op modules share; ``tuning`` the block-size heuristics. Tests:
``tests/kernels`` (interpreter parity on the CPU, ``gpu``-marked real-shape checks, and
``python -m tests.kernels.compile_check``, which compiles every kernel variant for a GPU without
one); benchmark: ``python -m benchmarks.gpu_kernels``.

Importing this package does not import Triton (only the op modules do), so a machine without Triton
can import ``colorizer.kernels`` and its Triton-free modules (``backend``, ``tuning``). Import an op
from its module, e.g. ``from colorizer.kernels.group_norm_act import group_norm_act`` (the modules
are named after their ops, so the package does not re-export the functions).
"""

from colorizer.errors import KernelsUnavailable


def make_opset() -> dict:
    """Op name -> callable with the signatures of ``colorizer.ops.reference``."""
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        raise KernelsUnavailable(
            f"kernels='triton' needs the triton package, which cannot be imported ({exc}); "
            "install it (pip install triton) or use kernels='eager'"
        ) from exc
    from colorizer.kernels.attention_gate import attention_gate
    from colorizer.kernels.group_norm_act import group_norm_act
    from colorizer.kernels.kmeans import kmeans_assign_accumulate
    from colorizer.kernels.noise_inject import noise_inject
    from colorizer.kernels.weight_standardize import weight_standardize

    return {
        "weight_standardize": weight_standardize,
        "group_norm_act": group_norm_act,
        "noise_inject": noise_inject,
        "attention_gate": attention_gate,
        "kmeans_assign_accumulate": kmeans_assign_accumulate,
    }
