"""The one timing helper every benchmark uses: warm-up excluded, median with p20/p80 spread.

How a round is timed:
- CPU: ``time.perf_counter`` around each call (CPU work is synchronous).
- CUDA: a pair of CUDA events recorded on the current stream around each call; the elapsed times are
  read after one synchronize at the end, so the host never stalls the queue between rounds. Events
  measure what the device stream saw, including idle gaps when the host cannot launch fast enough.
- CUDA graphs (``cuda_graph=True``): the callable is warmed up on a side stream, captured once into a
  ``torch.cuda.CUDAGraph`` and the replays are timed. The callable must then use static inputs
  (tensors captured by closure) and must not synchronize or copy from the host.

Warm-up rounds (module load, cuDNN/oneDNN primitive creation, Triton and Inductor compilation) are run
and discarded. Then rounds are timed until ``max_rounds`` is reached, or at least ``min_rounds`` have
run and their total exceeds ``target_s``. The garbage collector is paused while timing so a collection
does not land inside one round.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

QUANTILES = (0.2, 0.5, 0.8)


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one timed callable.

    median_s, p20_s, p80_s: the 50th, 20th and 80th percentiles of the per-round times (seconds).
    samples_s: every timed round, in order. method: ``perf_counter``, ``cuda_events`` or
    ``cuda_graph_replay``.
    """

    median_s: float
    p20_s: float
    p80_s: float
    rounds: int
    warmup: int
    method: str
    samples_s: tuple[float, ...]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["samples_s"] = list(self.samples_s)
        return out

    @property
    def spread(self) -> float:
        """(p80 - p20) / median: the relative width of the middle 60% of rounds."""
        return (self.p80_s - self.p20_s) / self.median_s if self.median_s > 0 else math.nan


def quantile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method) of ``samples``; q in [0, 1]."""
    if not samples:
        raise ValueError("quantile of no samples")
    ordered = sorted(samples)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(samples: Sequence[float], warmup: int, method: str) -> Timing:
    """Build a Timing from per-round seconds."""
    return Timing(
        median_s=statistics.median(samples),
        p20_s=quantile(samples, 0.2),
        p80_s=quantile(samples, 0.8),
        rounds=len(samples),
        warmup=warmup,
        method=method,
        samples_s=tuple(samples),
    )


def device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def synchronize(device: str | torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if device_type(device) == "cuda":
        torch.cuda.synchronize(device)


def synchronized(run: Callable[[], object], device: str | torch.device) -> Callable[[], object]:
    """``run`` followed by a device synchronize, for timers that read the host clock (pytest-benchmark)."""
    if device_type(device) != "cuda":
        return run

    def call():
        run()
        torch.cuda.synchronize()

    return call


def capture_cuda_graph(fn: Callable[[], object], warmup: int = 3) -> Callable[[], None]:
    """Capture ``fn`` into a CUDA graph and return its ``replay``.

    The warm-up runs on a side stream, as torch requires before capture (it lets cuDNN/cuBLAS pick
    algorithms and allocate workspaces outside the graph).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(max(warmup, 1)):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph.replay


def measure(
    fn: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    warmup: int = 1,
    min_rounds: int = 3,
    max_rounds: int = 20,
    target_s: float = 2.0,
    cuda_graph: bool = False,
) -> Timing:
    """Time ``fn()`` and return the median and p20/p80 of its per-call seconds.

    fn: the work of one round (one inference batch, one train step, ...), taking no arguments.
    device: where the work runs; ``cuda`` switches to CUDA-event timing.
    warmup: rounds run first and discarded. min_rounds / max_rounds / target_s: timing stops at
    max_rounds, or once min_rounds have run and the timed total exceeds target_s seconds.
    cuda_graph: capture fn into a CUDA graph (CUDA only) and time its replays.
    """
    if min_rounds < 1 or max_rounds < min_rounds:
        raise ValueError(f"need 1 <= min_rounds <= max_rounds, got {min_rounds}, {max_rounds}")
    on_cuda = device_type(device) == "cuda"
    if cuda_graph and not on_cuda:
        raise ValueError("cuda_graph=True needs a CUDA device")
    if cuda_graph:
        fn = capture_cuda_graph(fn, warmup=warmup)
    for _ in range(warmup):
        fn()
    synchronize(device)

    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        if on_cuda:
            samples = _rounds_cuda(fn, min_rounds, max_rounds, target_s)
        else:
            samples = _rounds_host(fn, min_rounds, max_rounds, target_s)
    finally:
        if gc_was_enabled:
            gc.enable()
    method = "cuda_graph_replay" if cuda_graph else ("cuda_events" if on_cuda else "perf_counter")
    return summarize(samples, warmup, method)


def _rounds_host(fn, min_rounds: int, max_rounds: int, target_s: float) -> list[float]:
    samples: list[float] = []
    while len(samples) < max_rounds and (len(samples) < min_rounds or sum(samples) < target_s):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def _rounds_cuda(fn, min_rounds: int, max_rounds: int, target_s: float) -> list[float]:
    # The stop rule uses the host clock (events cannot be read without a sync); the recorded times
    # come from the events.
    events = []
    host_start = time.perf_counter()
    while len(events) < max_rounds and (len(events) < min_rounds or time.perf_counter() - host_start < target_s):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in events]
