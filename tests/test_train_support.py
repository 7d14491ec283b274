"""Shared helpers for the trainer tests (no tests here): tiny configs, a CLI runner, payload diffs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import torch

from colorizer.train.config import TrainConfig, apply, preset_path, read_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(out, **overrides) -> TrainConfig:
    """The tiny preset (narrowest nets, 128 px, synthetic) writing to ``out``, without a progress bar."""
    config = apply(TrainConfig(), read_config_file(preset_path("tiny")), "tiny preset")
    values = {"out": str(out), "progress": False, "length": 8, "batch_size": 2, "samples": 1}
    values.update(overrides)
    return dataclasses.replace(config, **values).validate()


def tiny_args(out, *extra: str) -> list[str]:
    return ["--preset", "tiny", "--out", str(out), "--no-progress", "--length", "8", "--samples", "1", *extra]


def child_env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # two cores are shared by every process of a test
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("WORLD_SIZE", None)
    return env


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "colorizer.train", *args]


def run_train(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(*args), capture_output=True, text=True, timeout=timeout, env=child_env(), cwd=REPO)


def payload_diffs(a, b, path: str = "") -> list[str]:
    """Paths where two checkpoint payloads differ (tensors compared bit for bit, dtype included)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
        ok = ok and a.shape == b.shape and torch.equal(a, b)
        return [] if ok else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path} keys {sorted(map(str, set(a) ^ set(b)))[:4]}"]
        return [d for k in a for d in payload_diffs(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in payload_diffs(x, y, f"{path}/{i}")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


class FixedDataset(torch.utils.data.Dataset):
    """Sample dicts from fixed tensors: color (N, 3, S, S) and sketch (N, 3, S, S) in [-1, 1].

    ``poison``: indices whose sketch is all NaN (a broken sample, for the non-finite policy).
    """

    def __init__(self, color: torch.Tensor, sketch: torch.Tensor, poison=()):
        self.color, self.sketch, self.poison = color, sketch, set(poison)

    def __len__(self) -> int:
        return self.color.shape[0]

    def __getitem__(self, i: int) -> dict:
        sketch = self.sketch[i].clone()
        if i in self.poison:
            sketch.fill_(float("nan"))
        return {"color": self.color[i].clone(), "sketch": sketch, "index": i, "skipped": 0}


def synthetic_tensors(n: int, size: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(color, sketch) of the first ``n`` synthetic drawings, unaugmented."""
    from colorizer.data import build_dataset

    ds = build_dataset("synthetic", size=size, seed=seed, length=n, augment=False)
    items = [ds[i] for i in range(n)]
    return torch.stack([s["color"] for s in items]), torch.stack([s["sketch"] for s in items])
