"""Crash safety (issue 8): kill -9 at random moments and mid-write, SIGTERM/SIGINT, non-finite losses,
disk full and unwritable output folders."""

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from colorizer import checkpoint as ck
from colorizer.checkpoint import CheckpointManager, read_checkpoint
from colorizer.errors import CheckpointError, ConfigError, run_cli
from colorizer.train import Trainer, TrainingDivergedError
from tests.test_train_support import (
    REPO,
    FixedDataset,
    child_env,
    payload_diffs,
    run_train,
    synthetic_tensors,
    tiny_args,
    tiny_config,
    train_cmd,
)


def _wait_for(predicate, timeout: float, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"trainer exited early ({proc.returncode}): {out[-1500:]} {err[-1500:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the trainer")
        time.sleep(0.05)


def _log_rows(out) -> int:
    path = os.path.join(out, "train_log.csv")
    return max(0, len(open(path).read().splitlines()) - 1) if os.path.exists(path) else 0


def _all_final_checkpoints_verify(out) -> list[int]:
    """Every checkpoint under its final name reads and verifies; returns their steps."""
    mgr = CheckpointManager(os.path.join(out, "checkpoints"))
    steps = []
    for step, path in mgr.checkpoints():
        read_checkpoint(path)  # raises if a kill left a damaged file under a final name
        steps.append(step)
    return steps


@pytest.mark.parametrize("sig, group", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_signal_finishes_the_step_checkpoints_and_says_how_to_resume(tmp_path, sig, group):
    out = tmp_path / "run"
    # SIGINT goes to the whole process group, as Ctrl-C in a terminal does, DataLoader worker included.
    args = tiny_args(
        out, "--max-steps", "200", "--epochs", "50", "--log-every", "1", "--workers", "1" if group else "0"
    )
    proc = subprocess.Popen(
        train_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=REPO,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: _log_rows(out) >= 1, 120, proc)
        os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, stdout[-1000:] + stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert f"stopped by {signal.Signals(sig).name} at step" in stdout and "--resume auto" in stdout
    steps = _all_final_checkpoints_verify(out)
    assert len(steps) == 1 and steps[0] >= 1
    resumed = run_train([*tiny_args(out), "--max-steps", str(steps[0] + 1), "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {out}/checkpoints/step_{steps[0]:09d}" in resumed.stdout


def test_kill_9_at_random_moments_then_resume(tmp_path):
    out = tmp_path / "run"
    args = [*tiny_args(out, "--max-steps", "200", "--epochs", "50", "--ckpt-every", "1", "--keep-last", "2")]
    rng = random.Random(8)  # fixed moments: the test is deterministic in what it asks, not in timing
    last = 0
    for round_ in range(3):
        proc = subprocess.Popen(
            train_cmd(*args, "--resume", "auto"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=child_env(), cwd=REPO,
        )  # fmt: skip
        try:
            # Wait until this round has written a checkpoint, then kill at a random moment after it
            # (often inside the next checkpoint write: with ckpt-every 1 there is one per step).
            _wait_for(lambda last=last: any(s > last for s in _all_final_checkpoints_verify(out)), 120, proc)
            time.sleep(rng.uniform(0.0, 1.5))
            proc.kill()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        steps = _all_final_checkpoints_verify(out)
        assert steps and steps[-1] > last, f"round {round_}: no progress ({steps}, before {last})"
        path, _, meta = CheckpointManager(str(out / "checkpoints")).load_latest_good()
        assert meta["step"] == steps[-1]
        last = steps[-1]
    final = run_train([*tiny_args(out, "--epochs", "50"), "--max-steps", str(last + 1), "--resume", "auto"])
    assert final.returncode == 0, final.stderr[-2000:]
    assert f"at step {last}" in final.stdout and f"done: step {last + 1}" in final.stdout


KILL_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from colorizer import checkpoint as ck
    from colorizer.errors import run_cli
    from colorizer.train.__main__ import main

    real = ck._write_fully

    def write(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if "step_000000002" in target and target.endswith(".tmp"):
            real(fd, bytes(data)[: len(data) // 2])
            os.fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)  # dies with half the checkpoint written
        real(fd, data)

    ck._write_fully = write
    sys.exit(run_cli(main, sys.argv[1:]))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc/self/fd")
def test_kill_9_in_the_middle_of_a_checkpoint_write(tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "kill_mid_write.py"
    script.write_text(KILL_MID_WRITE)
    args = tiny_args(out, "--max-steps", "3", "--ckpt-every", "1")
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=child_env(), cwd=REPO, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    names = sorted(os.listdir(out / "checkpoints"))
    assert "step_000000001.safetensors" in names and "step_000000002.safetensors" not in names
    assert any(n.endswith(".tmp") for n in names)  # the torn write, never under a final name
    assert _all_final_checkpoints_verify(out) == [1]
    resumed = run_train([*args, "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "removed an incomplete file" in resumed.stdout and "at step 1" in resumed.stdout
    assert not any(n.endswith(".tmp") for n in os.listdir(out / "checkpoints"))
    assert _all_final_checkpoints_verify(out)[-1] == 3


def _poisoned_trainer(out, poison, **overrides):
    color, sketch = synthetic_tensors(4)
    dataset = FixedDataset(color, sketch, poison=poison)
    config = tiny_config(out, batch_size=1, length=4, **overrides)
    return Trainer(config, dataset=dataset, log=lambda m: None), dataset


def test_non_finite_step_is_skipped_and_leaves_weights_and_optimizers_untouched(tmp_path):
    trainer, dataset = _poisoned_trainer(tmp_path, poison={2})
    from colorizer.data import collate

    trainer.train_step(collate([dataset[0]]))  # Adam moments exist now
    before = trainer.state_payload([{}])
    stats = trainer.train_step(collate([dataset[2]]))
    assert stats["bad"] == 1.0 and not torch.isfinite(torch.tensor(stats["loss_g"]))
    assert payload_diffs(before, trainer.state_payload([{}])) == []
    assert trainer.train_step(collate([dataset[1]]))["bad"] == 0.0


def test_isolated_bad_steps_are_counted_and_training_goes_on(tmp_path):
    trainer, _ = _poisoned_trainer(tmp_path, poison={1}, max_bad_steps=2)
    result = trainer.fit()  # 4 steps, one of them on the poisoned sample
    assert result.exit_code == 0 and result.progress.bad_total == 1 and result.progress.bad_in_row == 0
    payload, _ = read_checkpoint(result.checkpoint)
    assert all(torch.isfinite(v).all() for v in payload["netG"].values() if v.is_floating_point())


def test_too_many_bad_steps_in_a_row_stop_and_keep_the_last_good_checkpoint(tmp_path, capsys):
    good, _ = _poisoned_trainer(tmp_path, poison=(), max_steps=1)
    first = good.fit().checkpoint
    before = open(first, "rb").read()
    bad, _ = _poisoned_trainer(tmp_path, poison={0, 1, 2, 3}, max_bad_steps=2, resume="auto", ckpt_every=1)
    with pytest.raises(TrainingDivergedError) as info:
        bad.fit()
    message = str(info.value)
    assert "2 steps in a row had a non-finite loss or gradient" in message and first in message
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_000000001.safetensors"]
    assert open(first, "rb").read() == before
    assert run_cli(lambda argv: (_ for _ in ()).throw(info.value)) == TrainingDivergedError.exit_code
    assert capsys.readouterr().err.startswith("error: stopping at step 3")


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    real = ck._write_fully

    def write(fd, data):
        if len(data) > 100_000 and os.path.exists(tmp_path / "checkpoints" / "step_000000001.safetensors"):
            real(fd, bytes(data)[:4096])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(ck, "_write_fully", write)
    trainer = Trainer(tiny_config(tmp_path, max_steps=3, ckpt_every=1), log=lambda m: None)
    with pytest.raises(CheckpointError) as info:
        trainer.fit()
    assert "no space left on device" in str(info.value) and "step_000000001.safetensors is intact" in str(info.value)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_000000001.safetensors"]
    assert read_checkpoint(str(tmp_path / "checkpoints" / "step_000000001.safetensors"))[1]["step"] == 1


def test_unwritable_output_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="output folder .* is not writable"):
        Trainer(tiny_config(blocker / "run"), log=lambda m: None)
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(ConfigError, match="not writable"):
                Trainer(tiny_config(ro), log=lambda m: None)
        finally:
            ro.chmod(0o700)


class _BrokenDataset(FixedDataset):
    def __getitem__(self, i):
        from colorizer.errors import DataError

        raise DataError("every file in /data failed to load (3 skipped)")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_data_error_in_a_worker_stays_one_line(tmp_path, workers):
    from colorizer.errors import DataError

    color, sketch = synthetic_tensors(2)
    trainer = Trainer(tiny_config(tmp_path, workers=workers, samples=1), dataset=_BrokenDataset(color, sketch))
    trainer._preview_batch = lambda: None
    with pytest.raises(DataError) as info:
        trainer.fit()
    assert str(info.value) == "every file in /data failed to load (3 skipped)"
