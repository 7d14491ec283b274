"""Dynamic batching for the service: requests that share a model input size run as one batch.

One worker thread owns the runner. Requests wait in a queue keyed by their padded model size (H, W):
pictures of different sizes cannot share a batch. The worker takes the oldest waiting request, then
waits at most ``max_wait_s`` (counted from that request's arrival) for up to ``max_batch - 1`` more of the
same size, and runs them as one ``runner.colorize`` call. ``max_batch=1`` never waits.

Why a batcher of our own and not LitServe / Ray Serve / BentoML: the loop is this one file (about 150
lines). The libraries bring their own server process model (LitServe spawns worker processes that each
load the model; Ray and BentoML a cluster runtime), and their batch key is a request count, not the
padded picture size this model needs to stack pictures. The README ("Serving") has the reasoning.

Every picture keeps its own seed (``Runner.colorize`` takes one seed per picture and makes picture i's
noise from seeds[i] alone), so a picture does not depend on its batch companions. Whether the engine's
arithmetic is bit-identical across batch sizes is the engine's matter: ``split_batches=True`` runs the
collected pictures one by one (the service's choice when it is not; see ``colorizer.serve.policy``).

Inference runs in this thread, never on the event loop: the HTTP side only waits on a Future. So does every
other torch operation of the service (``call``: a reference picture's palette, a resize to the requested
size; ``finish``: the resize back): torch gives each thread that runs a parallel op an OpenMP team of its
own, and with more OpenMP threads in the process than cores libgomp stops them spinning between ops (the
model call slowed by 10-40%; ``colorizer.serve.cli`` loads the model in a thread of its own for the same
reason). With all of it here the process has one team, the model's.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable

import torch


class QueueFull(Exception):
    """The queue holds ``max_queue`` pictures already: the caller answers 503 with Retry-After."""


class Stopped(Exception):
    """The batcher stopped (the service is shutting down) before the request was queued."""


@dataclasses.dataclass
class Job:
    """One picture: sketch float32 (1, 3, H, W) in [-1, 1] (H, W multiples of 128), palette uint8 (9, 3)."""

    sketch: torch.Tensor
    palette: torch.Tensor
    seed: int
    future: concurrent.futures.Future
    arrived: float  # time.monotonic()
    finish: Callable[[torch.Tensor], object] | None = None  # applied to the picture in the worker thread

    @property
    def key(self) -> tuple[int, int]:
        return int(self.sketch.shape[-2]), int(self.sketch.shape[-1])


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """What a Job's future holds: the picture float32 (3, H, W) in [-1, 1] (CPU), or what the Job's
    ``finish`` made of it; its batch's size, the seconds it waited in the queue and the seconds its batch ran."""

    image: object
    batch_size: int
    queued_s: float
    model_s: float


class Batcher:
    """Collects Jobs into batches and runs ``run(sketches (N,3,H,W), palettes (N,9,3), seeds [N])``.

    on_batch(size, seconds) and on_depth(pending) are called from the worker thread (metrics).
    """

    def __init__(
        self,
        run: Callable[[torch.Tensor, torch.Tensor, list[int]], torch.Tensor],
        *,
        max_batch: int = 1,
        max_wait_s: float = 0.005,
        max_queue: int = 64,
        split_batches: bool = False,
        on_batch: Callable[[int, float], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run, self.max_batch, self.max_wait_s, self.max_queue = run, int(max_batch), float(max_wait_s), max_queue
        self.split_batches = split_batches
        self.on_batch, self.on_depth = on_batch, on_depth
        self._pending: dict[tuple[int, int], deque[Job]] = {}
        self._calls: deque[tuple[Callable[[], object], concurrent.futures.Future]] = deque()
        self._count = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Work waiting for the worker thread: pictures not yet in a running batch, and calls."""
        return self._count + len(self._calls)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="colorizer-batcher", daemon=True)
        self._thread.start()

    def submit(
        self,
        sketch: torch.Tensor,
        palette: torch.Tensor,
        seed: int,
        finish: Callable[[torch.Tensor], object] | None = None,
    ) -> concurrent.futures.Future:
        """Queue one picture; its Future gets a BatchResult (or the batch's exception). ``finish`` (optional)
        turns the picture into what the result holds, in the worker thread, after the batch ran.

        QueueFull when ``max_queue`` pictures wait already; Stopped after ``stop``.
        """
        job = Job(sketch, palette, int(seed), concurrent.futures.Future(), time.monotonic(), finish)
        with self._cond:
            if self._stopping:
                raise Stopped("the service is shutting down")
            if self.depth >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} waiting)")
            self._pending.setdefault(job.key, deque()).append(job)
            self._count += 1
            self._cond.notify()
        self._report_depth()
        return job.future

    def call(self, fn: Callable[[], object]) -> concurrent.futures.Future:
        """Run ``fn()`` in the worker thread, before the next batch (calls are short tensor work); its Future
        gets the value or the exception. Bounded by ``max_queue`` with the pictures: QueueFull, Stopped."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._stopping:
                raise Stopped("the service is shutting down")
            if self.depth >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} waiting)")
            self._calls.append((fn, future))
            self._cond.notify()
        self._report_depth()
        return future

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new pictures, run every queued one, then end the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _report_depth(self) -> None:
        if self.on_depth is not None:
            self.on_depth(self.depth)

    def _oldest_key(self) -> tuple[int, int] | None:
        heads = [(q[0].arrived, key) for key, q in self._pending.items() if q]
        return min(heads)[1] if heads else None

    def _take(self) -> list[Job] | tuple | None:
        """The next call (fn, future) or batch (blocking), or None once stopped and drained."""
        with self._cond:
            while True:
                if self._calls:
                    return self._calls.popleft()
                key = self._oldest_key()
                if key is None:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                queue = self._pending[key]
                deadline = queue[0].arrived + self.max_wait_s
                # Wait for company only while the batch is short, the oldest picture's budget lasts and the
                # service is not draining (a drain runs what is there at once).
                while len(queue) < self.max_batch and not self._stopping and not self._calls:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._calls and len(queue) < self.max_batch and not self._stopping:
                    continue  # run the call while the batch may still fill
                jobs = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
                if not queue:
                    del self._pending[key]
                self._count -= len(jobs)
                return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            self._report_depth()
            if isinstance(jobs, tuple):
                fn, future = jobs
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:  # noqa: BLE001 - the caller's error, raised where it waits
                        future.set_exception(exc)
                continue
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if jobs:
                self._run(jobs)

    def _run(self, jobs: list[Job]) -> None:
        start = time.monotonic()
        try:
            if self.split_batches:
                images = [self.run(j.sketch, j.palette[None], [j.seed])[0] for j in jobs]
            else:
                sketches = jobs[0].sketch if len(jobs) == 1 else torch.cat([j.sketch for j in jobs])
                out = self.run(sketches, torch.stack([j.palette for j in jobs]), [j.seed for j in jobs])
                images = list(out)
        except Exception as exc:  # noqa: BLE001 - the error goes to every waiting request (a bug: 500)
            for j in jobs:
                j.future.set_exception(exc)
            return
        seconds = time.monotonic() - start
        if self.on_batch is not None:
            self.on_batch(len(jobs), seconds)
        for j, image in zip(jobs, images):
            try:
                value = image if j.finish is None else j.finish(image)
            except Exception as exc:  # noqa: BLE001 - this picture's error only
                j.future.set_exception(exc)
                continue
            j.future.set_result(BatchResult(value, len(jobs), start - j.arrived, seconds))
