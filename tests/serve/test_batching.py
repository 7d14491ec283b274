"""The Batcher: batches by model size, up to max_batch, waiting at most max_wait; a full queue; a drain;
and the property the service's batch shapes rest on (colorizer.serve.policy): at one batch shape a
picture's bits do not depend on its companions."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from colorizer.serve.batcher import Batcher, QueueFull, Stopped


class Recorder:
    """A run function that records its batches and returns sketch + seed (so results are checkable)."""

    def __init__(self, gate: threading.Event | None = None):
        self.batches: list[tuple[tuple[int, int], list[int]]] = []
        self.gate = gate

    def __call__(self, sketches, palettes, seeds):
        if self.gate is not None:
            assert self.gate.wait(30)
        assert sketches.shape[0] == palettes.shape[0] == len(seeds)
        self.batches.append((tuple(sketches.shape[-2:]), list(seeds)))
        return sketches + torch.tensor(seeds, dtype=torch.float32).view(-1, 1, 1, 1)


def job(side=128, width=None):
    return torch.zeros(1, 3, side, width or side), torch.zeros(9, 3, dtype=torch.uint8)


def test_batches_group_by_size_up_to_max_batch():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, max_batch=3, max_wait_s=0.0, max_queue=16)
    batcher.start()
    blocker = batcher.submit(*job(), seed=100)  # holds the worker until the rest are queued
    time.sleep(0.05)
    futures = [batcher.submit(*job(128 if i % 2 else 256), seed=i) for i in range(7)]
    assert batcher.depth == 7
    gate.set()
    results = [f.result(30) for f in [blocker, *futures]]
    batcher.stop(30)
    sizes = [(shape, len(seeds)) for shape, seeds in run.batches]
    assert sizes[0] == ((128, 128), 1)
    # 256 px: seeds 0, 2, 4, 6 (oldest first); 128 px: 1, 3, 5; never more than 3, never sizes mixed
    assert sorted(sizes[1:]) == [((128, 128), 3), ((256, 256), 1), ((256, 256), 3)]
    for i, result in enumerate(results[1:]):
        assert result.image.shape == (3, 256 if i % 2 == 0 else 128, 256 if i % 2 == 0 else 128)
        assert float(result.image.mean()) == i  # each picture got its own seed back
    assert results[1].batch_size == 3


def test_waits_at_most_max_wait_for_company():
    run = Recorder()
    batcher = Batcher(run, max_batch=8, max_wait_s=0.2, max_queue=16)
    batcher.start()
    start = time.monotonic()
    first = batcher.submit(*job(), seed=1)
    second = batcher.submit(*job(), seed=2)
    assert first.result(30).batch_size == 2 and second.result(30).batch_size == 2
    assert time.monotonic() - start >= 0.2  # a short batch waited for company until the oldest's deadline
    batcher.stop(30)


def test_max_batch_one_never_waits():
    run = Recorder()
    batcher = Batcher(run, max_batch=1, max_wait_s=30.0, max_queue=4)
    batcher.start()
    assert batcher.submit(*job(), seed=5).result(10).batch_size == 1  # a 30 s wait would time this out
    batcher.stop(10)


def test_full_queue_and_stop_drains():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, max_batch=2, max_wait_s=0.0, max_queue=2)
    batcher.start()
    running = batcher.submit(*job(), seed=0)
    deadline = time.monotonic() + 10
    while batcher.depth and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = [batcher.submit(*job(), seed=s) for s in (1, 2)]
    with pytest.raises(QueueFull):
        batcher.submit(*job(), seed=3)
    stopper = threading.Thread(target=batcher.stop, args=(30,))
    stopper.start()
    time.sleep(0.05)
    with pytest.raises(Stopped):
        batcher.submit(*job(), seed=4)
    gate.set()
    stopper.join(30)
    assert [f.result(0).image.mean().item() for f in [running, *queued]] == [0, 1, 2]


def test_an_exception_reaches_every_picture_of_the_batch_and_the_worker_goes_on():
    calls = []

    def run(sketches, palettes, seeds):
        calls.append(list(seeds))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return sketches

    batcher = Batcher(run, max_batch=1, max_wait_s=0.0)
    batcher.start()
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit(*job(), seed=1).result(10)
    assert batcher.submit(*job(), seed=2).result(10).batch_size == 1
    batcher.stop(10)


def test_fixed_batch_shape_gives_the_same_bits_whatever_the_companions(runner):
    """The service pads a CPU batch to max_batch pictures (policy FIXED); a picture's output at one shape must
    not depend on what else is in the batch, or on its place. (Across batch sizes oneDNN may differ in the
    last bits: that is why the shape is fixed.)"""
    from colorizer.serve.app import Service
    from colorizer.serve.settings import ServeSettings

    torch.manual_seed(3)
    sketches = torch.rand(6, 3, 128, 128) * 2 - 1
    palettes = torch.randint(0, 256, (6, 9, 3), dtype=torch.uint8)
    service = Service(runner, ServeSettings(max_batch=4, fixed_batch=True))
    alone = [service._run_batch(sketches[i : i + 1], palettes[i : i + 1], [i]) for i in range(4)]
    together = service._run_batch(sketches[:4], palettes[:4], [0, 1, 2, 3])
    shuffled = service._run_batch(sketches[[3, 5, 1]], palettes[[3, 5, 1]], [3, 5, 1])
    for i in range(4):
        assert torch.equal(alone[i][0], together[i]), i
    assert torch.equal(shuffled[0], together[3]) and torch.equal(shuffled[2], together[1])


@pytest.mark.parametrize("model", ["tiny", "demo"])
def test_openvino_gives_a_picture_the_same_bits_in_any_batch(model, tiny_checkpoint, tmp_path):
    """Why the service batches OpenVINO on a CPU without padding (policy: ``any`` shape): its CPU plugin is
    batch-invariant, a picture comes out bit for bit the same alone and in batches of 2, 3 and 8."""
    pytest.importorskip("openvino")
    from colorizer.export.openvino import export_openvino
    from colorizer.runtime.load import load_colorizer, load_runner

    generator, _ = load_colorizer(str(tiny_checkpoint) if model == "tiny" else "demo")
    xml = export_openvino(generator, str(tmp_path / "ov"), precision="fp32", verify=False, functional=False).xml
    runner = load_runner(xml, device="cpu")
    torch.manual_seed(5)
    sketches = torch.rand(8, 1, 128, 256) * 2 - 1
    palettes = torch.randint(0, 256, (8, 9, 3), dtype=torch.uint8)
    alone = torch.cat([runner.colorize(sketches[i : i + 1], palettes[i : i + 1], [i]) for i in range(8)])
    for n in (2, 3, 8):
        together = runner.colorize(sketches[:n], palettes[:n], list(range(n)))
        assert torch.equal(together, alone[:n]), n
