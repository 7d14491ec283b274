"""What this machine's CPU can do fast: the one place that decides it.

The trainer (``--amp bf16`` on the CPU), the benchmarks and the export side read these answers instead
of probing the CPU themselves.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when torch's bf16 convolutions and matmuls run natively on this CPU (oneDNN with
    AVX-512 BF16 or AMX); False where they would fall back to ``aten::_slow_conv2d_forward``, which
    made a bf16 autocast training step ~28x slower than float32 on an AVX2-only CPU."""
    mkldnn = torch.backends.mkldnn
    if not mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
