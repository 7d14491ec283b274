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

Inference runs in the worker threads, never on the event loop: the HTTP side only waits on a Future. So does
every other torch operation of the service (``call``: a reference picture's palette, a resize to the
requested size, in the lead worker; ``finish``: the resize back): torch gives each thread that runs a
parallel op an OpenMP team of its own, and with more OpenMP threads in the process than cores libgomp stops
them spinning between ops (the model call slowed by 10-40%; ``colorizer.serve.cli`` loads the model in a
thread of its own for the same reason). With all of it here the process has one team, the lead's.

Streams (``streams`` > 1, a torch model on a CPU): a picture alone runs in the lead on all threads (the
lowest latency); when pictures wait, the workers run one each side by side on ``threads // streams`` threads
(on a 2-core CPU: two pictures on one thread each, which served more images/s than one after another on
both, see ``colorizer.serve.policy``; a worker on one thread has no OpenMP team). Nothing starts beside a
picture that runs on all threads.
A picture's bits must then not depend on the thread count: ``colorizer.serve.app.Service.check_streams``
opens the streams only when the warm-up picture comes out the same both ways.
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

    streams > 1 (a torch model on a CPU; ``colorizer.serve.policy``): that many worker threads. A picture alone
    (nothing else waiting or running) runs in the lead worker on all ``threads``; when more wait, each worker
    runs one batch at a time on ``threads // streams`` threads, side by side. The lead starts with ``start``;
    the others only after ``open_streams`` (the service calls it once its warm-up found the model's bits the
    same at both thread counts), so until then the lead alone runs everything, on all threads.

    on_batch(size, seconds, threads) and on_depth(pending) are called from the worker threads (metrics).
    """

    def __init__(
        self,
        run: Callable[[torch.Tensor, torch.Tensor, list[int]], torch.Tensor],
        *,
        max_batch: int = 1,
        max_wait_s: float = 0.005,
        max_queue: int = 64,
        split_batches: bool = False,
        streams: int = 1,
        threads: int | None = None,
        on_batch: Callable[[int, float, int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        self.run, self.max_batch, self.max_wait_s, self.max_queue = run, int(max_batch), float(max_wait_s), max_queue
        self.split_batches = split_batches
        self.streams = int(streams)
        self.threads = int(threads) if threads is not None else torch.get_num_threads()
        self.narrow_threads = max(1, self.threads // self.streams)
        self.on_batch, self.on_depth = on_batch, on_depth
        self._pending: dict[tuple[int, int], deque[Job]] = {}
        self._calls: deque[tuple[Callable[[], object], concurrent.futures.Future, int | None]] = deque()
        self._count = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._streams_open = False  # open_streams was called: the other workers take work too
        self._running = 0  # workers inside a run or call
        self._wide = False  # the lead runs a picture alone on all threads: the others wait for it
        self._threads: list[threading.Thread] = []

    @property
    def depth(self) -> int:
        """Work waiting for the worker threads: pictures not yet in a running batch, and calls."""
        return self._count + len(self._calls)

    @property
    def open_streams_count(self) -> int:
        """Workers taking work now: 1 until ``open_streams``."""
        return self.streams if self._streams_open else 1

    def start(self) -> None:
        """Start the lead worker (it runs every call, and every picture while it is the only worker)."""
        self._start_worker(0)

    def open_streams(self) -> None:
        """Start the other ``streams - 1`` workers (after ``start``)."""
        with self._cond:
            self._streams_open = True
            self._cond.notify_all()
        for k in range(1, self.streams):
            self._start_worker(k)

    def _start_worker(self, k: int) -> None:
        name = "colorizer-batcher" if k == 0 else f"colorizer-batcher-{k}"
        thread = threading.Thread(target=self._loop, args=(k,), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

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
            self._cond.notify_all()
        self._report_depth()
        return job.future

    def call(self, fn: Callable[[], object], threads: int | None = None) -> concurrent.futures.Future:
        """Run ``fn()`` in the lead worker, before its next batch (calls are short tensor work); its Future
        gets the value or the exception. ``threads``: run it on that many threads (default: as a batch would
        run now). Bounded by ``max_queue`` with the pictures: QueueFull, Stopped."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._stopping:
                raise Stopped("the service is shutting down")
            if self.depth >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} waiting)")
            self._calls.append((fn, future, threads))
            self._cond.notify_all()
        self._report_depth()
        return future

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new pictures, run every queued one, then end the worker threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        end = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(None if end is None else max(0.0, end - time.monotonic()))

    def _report_depth(self) -> None:
        if self.on_depth is not None:
            self.on_depth(self.depth)

    def _oldest_key(self) -> tuple[int, int] | None:
        heads = [(q[0].arrived, key) for key, q in self._pending.items() if q]
        return min(heads)[1] if heads else None

    def _threads_now(self) -> int:
        """Threads for the work just taken (called with the lock held, after the take): all of them when
        this is the only work, running or waiting, and fewer side by side otherwise."""
        if not self._streams_open:
            return self.threads
        alone = self._running == 0 and self._count == 0 and not self._calls
        return self.threads if alone else self.narrow_threads

    def _may_take(self, worker: int) -> bool:
        """A worker other than the lead joins in only while the lead does not run a picture alone, and only
        when there is company: something running already, or two pictures waiting (one alone is the lead's,
        on all threads)."""
        if worker == 0:
            return True
        if self._wide:  # (the other workers start only once the streams are open)
            return False
        return self._running > 0 or self._count >= 2

    def _take(self, worker: int):
        """(threads, call) or (threads, jobs) for ``worker`` (blocking), or None once stopped and drained."""
        with self._cond:
            while True:
                if worker == 0 and self._calls:
                    fn, future, threads = self._calls.popleft()
                    return self._begin(threads or self._threads_now()), (fn, future)
                key = self._oldest_key()
                if key is None or not self._may_take(worker):
                    if self._stopping and key is None:
                        return None
                    self._cond.wait()
                    continue
                queue = self._pending[key]
                # Wait for company only while the batch is short, the oldest picture's budget lasts and the
                # service is not draining (a drain runs what is there at once); a call for the lead goes first.
                if len(queue) < self.max_batch and not self._stopping and not (worker == 0 and self._calls):
                    left = queue[0].arrived + self.max_wait_s - time.monotonic()
                    if left > 0:
                        self._cond.wait(left)
                        continue  # look again: another worker may have taken the queue meanwhile
                jobs = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
                if not queue:
                    del self._pending[key]
                self._count -= len(jobs)
                return self._begin(self._threads_now()), jobs

    def _begin(self, threads: int) -> int:
        """Count a worker as running (lock held); a run on all threads while streams are open is 'wide'."""
        self._running += 1
        self._wide = self._streams_open and threads == self.threads > self.narrow_threads
        return threads

    def _end(self) -> None:
        with self._cond:
            self._running -= 1
            self._wide = False
            self._cond.notify_all()

    def _loop(self, worker: int) -> None:
        while True:
            taken = self._take(worker)
            if taken is None:
                return
            threads, work = taken
            self._report_depth()
            try:
                if self.streams > 1 and torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)  # this thread's OpenMP setting (and MKL's)
                if isinstance(work, tuple):
                    fn, future = work
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(fn())
                        except BaseException as exc:  # noqa: BLE001 - the caller's error, raised where it waits
                            future.set_exception(exc)
                else:
                    jobs = [j for j in work if j.future.set_running_or_notify_cancel()]
                    if jobs:
                        self._run(jobs, threads)
            finally:
                self._end()

    def _run(self, jobs: list[Job], threads: int) -> None:
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
            self.on_batch(len(jobs), seconds, threads)
        for j, image in zip(jobs, images):
            try:
                value = image if j.finish is None else j.finish(image)
            except Exception as exc:  # noqa: BLE001 - this picture's error only
                j.future.set_exception(exc)
                continue
            j.future.set_result(BatchResult(value, len(jobs), start - j.arrived, seconds))
