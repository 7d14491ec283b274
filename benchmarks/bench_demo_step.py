"""The demo preset's training step (``colorizer/configs/demo.yaml``) per backend, in images/s.

What ``make demo`` trains, measured through the trainer itself (``Trainer.train_step``: the palette
k-means of the batch, the generator forward and backward, the Adam update; the discriminator too when
the preset's ``w_gan`` is not 0) on one fixed batch of synthetic drawings, so data loading is left out.
Backends:

- ``eager``: PyTorch ops (the preset as it is);
- ``native``: ``--kernels native``, the C++ extension's fused ops (skipped when it is not built);
- ``channels_last``: eager on channels_last tensors and weights;
- ``compile``: ``torch.compile`` of the generator (the first rounds compile; they are warm-up).

Run: ``pytest benchmarks/bench_demo_step.py --benchmark-only`` (``--bench-rounds``, ``--bench-warmup``
as for every benchmark; the preset fixes batch, size and widths). images/s = batch / seconds per round.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

BACKENDS = ("eager", "native", "channels_last", "compile")


def _trainer(backend: str, out: str):
    from colorizer.train import Trainer
    from colorizer.train.config import TrainConfig, apply, preset_path, read_config_file

    config = apply(TrainConfig(), read_config_file(preset_path("demo")), "demo preset")
    overrides = {"out": out, "progress": False, "device": "cpu", "workers": 0}
    if backend == "native":
        overrides["kernels"] = "native"
    elif backend == "channels_last":
        overrides["channels_last"] = True
    elif backend == "compile":
        overrides["compile"] = True
    return Trainer(dataclasses.replace(config, **overrides).validate())


def _batch(trainer) -> dict:
    from colorizer.data import collate

    return collate([trainer.dataset[i] for i in range(trainer.cfg.batch_size)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_demo_train_step(benchmark, bench_options, backend, tmp_path):
    from colorizer.errors import MissingDependencyError

    if bench_options.device != "cpu":
        pytest.skip("the demo preset is the CPU demo; run with --bench-device cpu")
    try:
        trainer = _trainer(backend, str(tmp_path / "run"))
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    batch = _batch(trainer)
    cfg = trainer.cfg
    benchmark.group = f"demo preset train step {cfg.batch_size}x{cfg.size} cpu ({torch.get_num_threads()} threads)"
    benchmark.extra_info.update(
        backend=backend, batch=cfg.batch_size, size=cfg.size, threads=torch.get_num_threads(), w_gan=cfg.w_gan
    )
    benchmark.pedantic(
        trainer.train_step, args=(batch,), rounds=bench_options.rounds, warmup_rounds=bench_options.warmup + 1
    )
