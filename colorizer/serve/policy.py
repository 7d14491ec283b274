"""The service's batching defaults, one table keyed by device type and model format, with the measurement
behind each row. ``colorizer serve`` reads it when ``--max-batch`` / ``--batch-shape`` are not given.

Default ``--max-batch``: the batch size with the most images/s as served. On the 2-core CPU of the
development machine (AMD EPYC, quiet, 2026-12-07, ``benchmarks/results/serve-cpu-amd-epyc-2c-2026-12-07``):
the bundled model at 256 px on the native torch path gave 7.2 / 7.9 / 8.5 / 7.3 images/s in-process at
batch 1 / 2 / 4 / 8 (runs of one command move these by up to 25%), and OpenVINO fp32 4.0 at batch 1 and 5.2
at batch 8; but served with ``--max-batch 4`` a lone request paid for the whole batch (p50 573 ms against
111 ms for torch, 854 against 222 ms for OpenVINO) and images/s never rose at any concurrency (at 16:
8.0 against 8.2, 4.5 against 5.9). So the CPU rows are 1: a service that never waits for company costs
nothing against ``--max-batch 1``. The GPU rows (8) are not measured: no GPU was lent to the session that
wrote them; a GPU is idle between small launches, so some batch pays there, and ``bench_serve`` on a GPU
should set the number.

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
# OpenVINO's own asynchronous infer requests (``--openvino-requests``, OpenVinoRunner(requests=N)) are not
# the default: measured on the 2-core CPU (bundled model, 256 px, benchmarks/results/serve-*), a THROUGHPUT
# compilation with 2 streams gave one picture alone 432 ms against 248 ms on the LATENCY compilation (a
# request gets one stream, one core) and served 4.55 images/s at concurrency 16 against 5.17 for one
# synchronous request at a time under the same conditions. On a many-core machine, where the plugin makes
# more streams, measure it.


def per_picture(runner) -> bool:
    """True when the runner runs each picture of a batch as its own request (OpenVINO's async queue): then
    a batch of the engine's request count is what it serves at once, and it needs no padding to give every
    picture the bits it has alone."""
    return getattr(getattr(runner, "engine", None), "queue", None) is not None


def default_max_batch(device_type: str, format: str, runner=None) -> int:
    """The default ``--max-batch`` for a model of ``format`` on a ``device_type`` device (1 when unknown);
    for a per-picture runner, its number of requests."""
    if runner is not None and per_picture(runner):
        return int(runner.engine.requests)
    return DEFAULT_MAX_BATCH.get((device_type, format), 1)


def default_batch_shape(device_type: str, runner=None) -> str:
    """``fixed`` (every batch padded to max_batch: bit-identical pictures) or ``any`` (no padding: a GPU,
    or a per-picture runner whose pictures never share a shape with others)."""
    if runner is not None and per_picture(runner):
        return ANY
    return DEFAULT_BATCH_SHAPE.get(device_type, FIXED)
