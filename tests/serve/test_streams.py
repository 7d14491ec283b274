"""Streams: a picture alone runs on every thread, pictures that wait run side by side on fewer
(colorizer.serve.batcher); the service opens them only when the model's bits are the same both ways, and the
native CPU path is built so that they are (colorizer.ops.reference.sum_projection,
colorizer.runtime.runner.one_thread_for_small_convolutions)."""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time

import numpy as np
import pytest
import torch

from colorizer.serve.batcher import Batcher
from tests.serve.conftest import decode_png, png_bytes


class ThreadRecorder:
    """A run function that records the thread count and thread of each call; the first call waits for
    ``gate``; with ``meet``, calls on one thread meet in pairs at a barrier (so they must run side by side)."""

    def __init__(self, gate: threading.Event | None = None, meet: bool = False):
        self.calls: list[tuple[int, str, list[int]]] = []
        self.gate = gate
        self.barrier = threading.Barrier(2, timeout=20) if meet else None
        self.running = 0
        self.most_running = 0
        self.lock = threading.Lock()

    def __call__(self, sketches, palettes, seeds):
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            first = not self.calls
            self.calls.append((torch.get_num_threads(), threading.current_thread().name, list(seeds)))
        try:
            if first and self.gate is not None:
                assert self.gate.wait(30)
            if self.barrier is not None and torch.get_num_threads() == 1:
                self.barrier.wait()  # BrokenBarrierError unless another picture runs beside this one
            return sketches + torch.tensor(seeds, dtype=torch.float32).view(-1, 1, 1, 1)
        finally:
            with self.lock:
                self.running -= 1


def job():
    return torch.zeros(1, 3, 128, 128), torch.zeros(9, 3, dtype=torch.uint8)


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_picture_alone_gets_every_thread_and_pictures_that_wait_run_side_by_side():
    gate = threading.Event()
    run = ThreadRecorder(gate, meet=True)
    batcher = Batcher(run, max_batch=1, max_wait_s=0.0, streams=2, threads=2)
    batcher.start()
    batcher.open_streams()
    assert batcher.open_streams_count == 2 and batcher.narrow_threads == 1
    first = batcher.submit(*job(), seed=0)  # alone: the lead, on both threads (held by the gate)
    wait_until(lambda: run.calls)
    waiting = [batcher.submit(*job(), seed=s) for s in (1, 2)]
    time.sleep(0.2)
    assert run.running == 1 and batcher.depth == 2, "a picture started beside one that runs on every thread"
    gate.set()
    assert [f.result(30).image.mean().item() for f in [first, *waiting]] == [0, 1, 2]
    assert run.calls[0][:2] == (2, "colorizer-batcher")
    side_by_side = run.calls[1:]
    assert [threads for threads, _, _ in side_by_side] == [1, 1]
    assert {name for _, name, _ in side_by_side} == {"colorizer-batcher", "colorizer-batcher-1"}
    assert run.most_running == 2
    # Alone again: every thread. Calls (a reference's palette, a resize) run in the lead.
    assert batcher.submit(*job(), seed=3).result(30).image.mean().item() == 3
    assert run.calls[-1][0] == 2
    assert batcher.call(lambda: threading.current_thread().name).result(30) == "colorizer-batcher"
    assert batcher.call(torch.get_num_threads, threads=1).result(30) == 1
    batcher.stop(30)
    assert not any(t.is_alive() for t in batcher._threads)


def test_streams_stay_closed_until_opened_and_stop_drains_them():
    gate = threading.Event()
    run = ThreadRecorder(gate)
    batcher = Batcher(run, max_batch=1, max_wait_s=0.0, streams=2, threads=2)
    batcher.start()
    futures = [batcher.submit(*job(), seed=s) for s in range(4)]
    wait_until(lambda: run.calls)
    gate.set()
    assert [f.result(30).image.mean().item() for f in futures] == [0, 1, 2, 3]
    assert run.most_running == 1 and {c[:2] for c in run.calls} == {(2, "colorizer-batcher")}

    run2 = ThreadRecorder(threading.Event())
    batcher2 = Batcher(run2, max_batch=1, max_wait_s=0.0, streams=2, threads=2)
    batcher2.start()
    batcher2.open_streams()
    futures = [batcher2.submit(*job(), seed=s) for s in range(5)]
    wait_until(lambda: run2.calls)
    stopper = threading.Thread(target=batcher2.stop, args=(30,))
    stopper.start()
    run2.gate.set()
    stopper.join(30)
    assert not stopper.is_alive()
    assert sorted(f.result(0).image.mean().item() for f in futures) == [0, 1, 2, 3, 4]


class ThreadDependent:
    """A runner whose pictures carry the thread count they ran on in their last bits."""

    def __init__(self, runner):
        self.inner = runner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def colorize(self, sketches, palettes, seeds):
        return self.inner.colorize(sketches, palettes, seeds) + 1e-6 * torch.get_num_threads()


@pytest.fixture(scope="module")
def native_runner(tiny_checkpoint):
    from colorizer.runtime.load import load_runner

    pytest.importorskip("colorizer._C", reason="the native extension is not built")
    return load_runner(str(tiny_checkpoint), device="cpu", kernels="native")


def test_the_warm_up_opens_streams_only_where_the_bits_agree(make_client, native_runner, caplog):
    from colorizer.serve.settings import ServeSettings

    settings = ServeSettings(warmup_size=128, streams=2, threads=2)
    same = make_client(settings, model=native_runner)
    assert same.get("/v1/model").json()["limits"]["streams"] == 2
    assert native_runner._small_conv_hooks  # turned on for the check (runner.keep_bits_across_thread_counts)
    with caplog.at_level("WARNING", logger="colorizer.serve"):
        differs = make_client(settings, model=ThreadDependent(native_runner))
    assert differs.get("/v1/model").json()["limits"]["streams"] == 1
    assert not native_runner._small_conv_hooks  # and off again when the bits differ anyway
    assert any("one stream" in r.getMessage() and "differ" in r.getMessage() for r in caplog.records)
    # One stream: every picture on every thread, however many wait.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        files = {"sketch": ("s.png", png_bytes(128, 128), "image/png")}

        def post(seed):
            return differs.post("/v1/colorize", files=files, data={"seed": seed, "palette": "#ff0000"}).status_code

        statuses = list(pool.map(post, range(6)))
    assert statuses == [200] * 6
    text = differs.get("/metrics").text
    assert 'colorizer_pictures_by_threads_total{threads="2"} 6.0' in text
    assert 'threads="1"' not in text


def _in_a_thread_on(threads: int, fn):
    box = {}

    def run():
        torch.set_num_threads(threads)
        box["value"] = fn()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return box["value"]


@pytest.mark.parametrize("model", ["tiny", "demo"])
def test_the_native_cpu_path_gives_the_same_bits_on_one_thread_and_on_two(model, native_runner):
    """What the streams rest on. Without sum_projection the attention gates' 1x1 convolution to one channel
    differs from 32x32 on; without the small convolutions on one thread a 384x256 picture's 3x2 level does."""
    from colorizer.runtime.load import load_runner

    runner = native_runner if model == "tiny" else load_runner("demo", device="cpu", kernels="native")
    assert runner.keep_bits_across_thread_counts()  # what the service turns on before it opens streams
    sizes = [(128, 128), (256, 256), (384, 256), (128, 640)] if model == "tiny" else [(256, 256), (384, 256)]
    gen = torch.Generator().manual_seed(7)
    for h, w in sizes:
        sketch = torch.rand(1, 3, h, w, generator=gen) * 2 - 1
        palette = torch.randint(0, 256, (1, 9, 3), dtype=torch.uint8, generator=gen)

        def colorize(sketch=sketch, palette=palette, seed=h + w):
            return runner.colorize(sketch, palette, [seed])

        two, one = _in_a_thread_on(2, colorize), _in_a_thread_on(1, colorize)
        assert torch.equal(one, two), f"{model} {h}x{w}: {float((one - two).abs().max()):.1e} apart"


@pytest.mark.timeout(180)
def test_a_served_picture_is_the_same_alone_and_in_a_busy_service(serve):
    server = serve("--streams", "2", env={"OMP_NUM_THREADS": "2"})
    server.wait_ready()
    limits = server.client.get("/v1/model").json()["limits"]
    assert (limits["streams"], limits["threads"]) == (2, 2), limits

    def colorize(i):
        files = {"sketch": ("s.png", png_bytes(384, 256 + 128 * (i % 2), seed=i), "image/png")}
        response = server.client.post("/v1/colorize", files=files, data={"palette": "#d04020,#2050c0", "seed": i})
        assert response.status_code == 200, response.text
        return decode_png(response.content)

    alone = [colorize(i) for i in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        busy = list(pool.map(colorize, range(6)))
    for i in range(6):
        assert np.array_equal(alone[i], busy[i]), f"picture {i} differs in a busy service"
    text = server.client.get("/metrics").text
    series = r'^colorizer_pictures_by_threads_total\{threads="(\d+)"\} (\S+)$'
    by_threads = {int(n): float(v) for n, v in re.findall(series, text, re.M)}
    assert set(by_threads) <= {1, 2} and sum(by_threads.values()) == 12, by_threads
    assert by_threads[2] >= 6, by_threads  # the six alone ran on both threads
