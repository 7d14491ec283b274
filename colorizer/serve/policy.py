"""The service's batching defaults, tables keyed by device type and model format, with the measurement
behind each row. ``colorizer serve`` reads them when ``--max-batch`` / ``--batch-shape`` / ``--max-wait-ms``
are not given.

Measured on the 2-core CPU of the development machine (AMD EPYC, 2026-12-07,
``benchmarks/results/serve-cpu-amd-epyc-2c-2026-12-07*``), 256 px, in-process images/s at batch 1 / 2 / 4 / 8
(one run each; the same command moves these by 10-25% on this machine):

- native torch, bundled model: 13.5 / 13.3 / 10.1 / 8.2; reference widths: 5.3 / 5.7 / 5.4 / 4.8;
- OpenVINO fp32, bundled model: 4.0 / 4.4 / 4.5 / 4.6; reference widths: 3.9 / 4.1 / 3.4 / 3.7.

Default ``--batch-shape``: a picture must come out bit for bit the same whether it was served alone or in
a batch (on the CPU engines). The native and eager torch paths are not batch-invariant (a batch of 4
differs from four batches of 1 by up to 3e-5: oneDNN blocks its convolutions by batch size), while at one
batch shape a picture's bits do not depend on its companions: so torch on a CPU pads every batch to
``max_batch`` pictures ("fixed"). OpenVINO's CPU plugin is batch-invariant (batches of 2, 4 and 8 equal
their pictures alone bit for bit; tests/serve/test_batching.py checks it), so it runs batches as they come
("any"). On a GPU the float results are not promised bit-identical, and "any" spends no time on padding.

Default ``--max-batch`` on a CPU: 1, for both. For torch, with its fixed shape a lone request pays for the
whole batch (served ``--max-batch 4``: p50 at concurrency 1 410 ms against 85 ms) and for the bundled model
batching never raised served images/s (at concurrency 16: 9.7 against 12.1); the reference widths gain a
little in-process (batch 2: 7%) but only by giving up the bit-identity (``--batch-shape any --max-batch 2``
is the user's choice). For OpenVINO, unpadded batches of up to 8 served fewer images/s than one picture at a
time in the same runs (bundled model at concurrency 16 / 64: 4.24 / 4.40 against 5.67 / 5.36; reference
widths 3.04 / 3.24 against 3.09 / 3.69). The GPU rows (8) are not measured: no GPU was lent to the session
that wrote them; a GPU is idle between small launches, so some batch pays there, and ``bench_serve`` on a
GPU should set the number.

Default ``--max-wait-ms``: 0 on a CPU. A model call takes 70-350 ms there; requests that arrive during a
call wait for it anyway and go in the next batch together, so waiting for more company only adds to a lone
request's latency. 5 ms on a GPU, where a call takes a few ms (not measured).
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
# (device type, format) -> default --batch-shape; a device's row (format None) for the formats not named.
DEFAULT_BATCH_SHAPE: dict[tuple[str, str | None], str] = {
    ("cpu", None): FIXED,
    ("cpu", "openvino"): ANY,  # batch-invariant: tests/serve/test_batching.py
    ("cuda", None): ANY,
}
DEFAULT_MAX_WAIT_MS: dict[str, float] = {"cpu": 0.0, "cuda": 5.0}
# OpenVINO's own asynchronous infer requests (``--openvino-requests``, OpenVinoRunner(requests=N)) are not
# the default. Measured on the 2-core CPU (256 px, four pictures in-process, 2026-12-07): bundled model 5.05
# images/s through an AsyncInferQueue of 2 requests on a THROUGHPUT compilation, 4.88 as one batch of 4 on
# the LATENCY compilation, 4.50 one by one; reference widths 3.04, 3.13, 3.49. But each request gets one of
# the plugin's two streams (one core): one picture alone took 432 ms against 248 ms on the LATENCY
# compilation (an earlier run), which a lone request pays in full; and one batch on the LATENCY compilation
# is as fast. On a many-core machine, where the plugin makes more streams, measure it.


# Default ``--streams``: pictures run side by side, each on threads // streams threads, when more than one
# waits (a picture alone still runs on all threads: colorizer.serve.batcher). Only a torch model (an engine
# has its own: OpenVINO's --openvino-requests), and only on a CPU (a GPU batches instead). Measured on the
# 2-core CPU (AMD EPYC, 2026-12-07, benchmarks/results/serve-cpu-amd-epyc-2c-2026-12-07-all*, -streams),
# bundled model, 256 px. In-process, two pictures side by side on one thread each gave between 4% less and
# 12% more than one at a time on both threads (images/s in five runs: 15.2 / 14.8, 13.8 / 13.3, 15.0 / 13.3, 13.3 /
# 13.7, 14.0 / 14.2). Served, a worker on one thread has no OpenMP team to stall when the HTTP side takes
# its core: at concurrency 16 the service gave 0.83-0.93x the in-process ceiling in five runs with streams
# (median 0.89), against 0.82-0.92 in three runs with one stream.
# Two streams need the model's bits to be the same on one thread and on two, which the service checks at
# warm-up and otherwise stays at one stream: the native path is (colorizer.ops.reference.sum_projection;
# tests/serve/test_streams.py); the reference widths are not (oneDNN splits the channels of their wide 1x1
# convolutions between threads). Not measured on more cores, so the default is one stream there.
MAX_DEFAULT_STREAM_THREADS = 2


def default_streams(device_type: str, format: str, threads: int) -> int:
    """The default ``--streams`` for a model of ``format`` on ``device_type`` run on ``threads`` threads: one
    per thread for a torch model on a CPU of at most ``MAX_DEFAULT_STREAM_THREADS`` threads, else 1."""
    if device_type == "cpu" and format == "torch" and 1 < threads <= MAX_DEFAULT_STREAM_THREADS:
        return threads
    return 1


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
    """``fixed`` (every batch padded to max_batch: bit-identical pictures) or ``any`` (no padding: a GPU, a
    batch-invariant engine, or a per-picture runner whose pictures never share a shape with others)."""
    if runner is not None and per_picture(runner):
        return ANY
    format = getattr(runner, "format", None)
    return DEFAULT_BATCH_SHAPE.get((device_type, format), DEFAULT_BATCH_SHAPE.get((device_type, None), FIXED))


def default_max_wait_ms(device_type: str) -> float:
    """The default ``--max-wait-ms`` on a ``device_type`` device (5 when unknown)."""
    return DEFAULT_MAX_WAIT_MS.get(device_type, 5.0)
