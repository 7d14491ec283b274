"""DDP on the CPU: 2 processes (torchrun, gloo). Smoke run plus exact resume against an uninterrupted run."""

import os
import shutil
import subprocess
import sys

import torch

from colorizer.checkpoint import read_checkpoint
from tests.test_train_support import REPO, child_env, payload_diffs, tiny_args


def _torchrun(out, *extra, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "colorizer.train", *tiny_args(out, "--batch-size", "1", "--epochs", "2", *extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_ddp_two_processes_smoke_and_exact_resume(tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    # length 8 over 2 processes at batch 1: 4 steps per epoch; 5 steps cross an epoch boundary.
    proc = _torchrun(full, "--max-steps", "5", "--ckpt-every", "3", "--keep-last", "5", "--log-every", "1")
    assert "on 2 x cpu" in proc.stdout and proc.stdout.count("training 5 steps") == 1  # rank 0 logs only
    final, meta = read_checkpoint(str(full / "checkpoints" / "step_000000005.safetensors"))
    assert meta["world_size"] == 2 and set(final["rng"]) == {"rank0", "rank1"}
    assert not torch.equal(final["rng"]["rank0"]["torch"], final["rng"]["rank1"]["torch"])  # own noise streams
    assert len((full / "train_log.csv").read_text().splitlines()) == 6

    # Resume a second run from the uninterrupted run's step-3 checkpoint: it must end identical.
    os.makedirs(split / "checkpoints")
    shutil.copy(full / "checkpoints" / "step_000000003.safetensors", split / "checkpoints")
    proc = _torchrun(split, "--max-steps", "5", "--resume", "auto")
    assert "resumed from" in proc.stdout and "at step 3" in proc.stdout
    resumed, _ = read_checkpoint(str(split / "checkpoints" / "step_000000005.safetensors"))
    assert payload_diffs(final, resumed) == []
