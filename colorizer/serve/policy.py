"""The service's batching defaults, one table keyed by device type and model format, with the measurement
behind each row. ``colorizer serve`` reads it when ``--max-batch`` / ``--batch-shape`` are not given.

Default ``--max-batch``: the batch size with the most images/s for the model called in-process
(``Runner.colorize``) at 256 px. On the 2-core CPU of the development machine no batch size above 1
paid for the torch module path (eager or native) or for the OpenVINO engine (the issue's measurement:
2.5 images/s at batch 1 against 1.8 at batch 8, eager torch path, WS folded; ``benchmarks/bench_serve.py``
writes the in-process rows again with every run), so the CPU rows are 1: a service that never waits for
company costs nothing against ``--max-batch 1``. A GPU is idle between small launches, so a batch pays
there; 8 is where the generator's images/s levels off at 256 px on one GPU (``benchmarks/gpu_check.py``).

Default ``--batch-shape``: a picture must come out bit for bit the same whether it was served alone or in
a batch (on the CPU engines). Measured on this CPU, a batch of 4 differs from four batches of 1 by up to
3e-5 for the eager and native torch paths (oneDNN picks its blocking by batch size), while a picture's bits
at one batch shape do not depend on its companions (tests/serve/test_batching.py checks both). So on a
CPU every batch is padded to ``max_batch`` pictures ("fixed"): the model always sees one shape. With the
CPU default of 1 that is free. On a GPU the float results are not promised bit-identical, and "any"
spends no time on padding.
"""

from __future__ import annotations

FIXED, ANY = "fixed", "any"
BATCH_SHAPES = (FIXED, ANY)

# (device type, format) -> default --max-batch (see the module docstring for the measurement).
DEFAULT_MAX_BATCH: dict[tuple[str, str], int] = {
    ("cpu", "torch"): 1,
    ("cpu", "onnx"): 1,
    ("cpu", "openvino"): 1,
    ("cuda", "torch"): 8,
    ("cuda", "onnx"): 8,
    ("cuda", "tensorrt"): 8,
}
DEFAULT_BATCH_SHAPE: dict[str, str] = {"cpu": FIXED, "cuda": ANY}


def default_max_batch(device_type: str, format: str) -> int:
    """The default ``--max-batch`` for a model of ``format`` on a ``device_type`` device (1 when unknown)."""
    return DEFAULT_MAX_BATCH.get((device_type, format), 1)


def default_batch_shape(device_type: str) -> str:
    """``fixed`` (every batch padded to max_batch: bit-identical pictures) or ``any``."""
    return DEFAULT_BATCH_SHAPE.get(device_type, FIXED)
