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

from colorizer import atomic
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
    from colorizer import atomic
    from colorizer.errors import run_cli
    from colorizer.train.__main__ import main

    real = atomic._write_fully

    def write(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if "step_000000002" in target and target.endswith(".tmp"):
            real(fd, bytes(data)[: len(data) // 2])
            os.fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)  # dies with half the checkpoint written
        real(fd, data)

    atomic._write_fully = write
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
    real = atomic._write_fully

    def write(fd, data):
        if len(data) > 100_000 and os.path.exists(tmp_path / "checkpoints" / "step_000000001.safetensors"):
            real(fd, bytes(data)[:4096])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(atomic, "_write_fully", write)
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


# ---- issue 12: one trainer per run folder, failed starts leave nothing behind -----------------------


def test_second_trainer_on_the_same_out_exits_2_naming_the_first(tmp_path):
    out = tmp_path / "run"
    args = tiny_args(out, "--max-steps", "400", "--epochs", "100", "--log-every", "1", "--workers", "0")
    first = subprocess.Popen(
        train_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=REPO
    )
    try:
        _wait_for(lambda: _log_rows(out) >= 1, 120, first)
        second = run_train([*tiny_args(out), "--max-steps", "2", "--resume", "auto"])
        assert first.poll() is None, "the first trainer must still be running"
        rows_before = _log_rows(out)
        assert second.returncode == 2, second.stdout[-1000:] + second.stderr[-1000:]
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), second.stderr
        assert f"in use by another trainer (pid {first.pid} on host" in lines[0]
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGTERM
    assert not (out / ".lock").exists(), "the lock is released on exit"
    assert _log_rows(out) >= rows_before
    steps = [int(line.split(",")[0]) for line in open(out / "train_log.csv").read().splitlines()[1:]]
    assert steps == sorted(set(steps)), "every step logged once (no second writer)"


def test_a_live_lock_refuses_in_process_and_touches_nothing(tmp_path):
    from colorizer.train.runlock import RunLock, RunLockedError

    tmp_path.joinpath("keep.txt").write_text("mine")
    with RunLock(str(tmp_path)):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on host"):
            Trainer(tiny_config(tmp_path), log=lambda m: None)
        assert sorted(os.listdir(tmp_path)) == [".lock", "keep.txt"]
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"pid={dead.pid} host={socket.gethostname()} started=2020-01-01T00:00:00Z\n")
    messages = []
    result = Trainer(tiny_config(tmp_path, max_steps=1), log=messages.append).fit()
    assert result.exit_code == 0
    assert any(f"took over the lock of a trainer that is no longer running (pid {dead.pid}" in m for m in messages)
    assert not (tmp_path / ".lock").exists()


def test_a_lock_whose_live_owner_is_recorded_is_refused_even_if_flock_is_granted(tmp_path):
    import socket

    from colorizer.train.runlock import RunLock, RunLockedError

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"pid={alive.pid} host={socket.gethostname()}\n")
        with pytest.raises(RunLockedError, match=f"pid {alive.pid}.*delete"):
            RunLock(str(tmp_path)).acquire()
    finally:
        alive.kill()
        alive.wait()


def test_failed_starts_leave_nothing_behind(tmp_path):
    from colorizer.errors import DataError

    out = tmp_path / "new_run"
    with pytest.raises(DataError):  # fails while building the data set
        Trainer(tiny_config(out, data="folder", data_root=str(tmp_path / "no_such_data")), log=lambda m: None)
    assert not out.exists()
    color, sketch = synthetic_tensors(2)
    trainer = Trainer(tiny_config(out, samples=1), dataset=_BrokenDataset(color, sketch), log=lambda m: None)
    with pytest.raises(DataError):  # fails after config.yaml was written, before the first step
        trainer.fit()
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        Trainer(tiny_config(existing, samples=1), dataset=_BrokenDataset(color, sketch), log=lambda m: None).fit()
    assert sorted(os.listdir(existing)) == ["notes.txt"]


def test_a_failed_write_probe_is_removed(tmp_path, monkeypatch):
    real = os.fsync

    def fsync(fd):
        if ".write_probe." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="No space left"):
        Trainer(tiny_config(tmp_path / "run"), log=lambda m: None)
    monkeypatch.undo()
    assert os.listdir(tmp_path / "run") == []
    (tmp_path / "run" / f".write_probe.{os.getpid() + 1}").write_bytes(b"")  # left by a killed start
    messages = []
    Trainer(tiny_config(tmp_path / "run", max_steps=1), log=messages.append).fit()
    assert not [n for n in os.listdir(tmp_path / "run") if n.startswith(".write_probe")]


def test_each_bad_data_file_is_counted_and_named_once(tmp_path):
    import csv

    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(data / f"good{i}.png")
    for name in ("bad0.png", "bad1.png", "bad2.jpg", "bad3.png"):  # bad0/bad1 next to each other: retried
        (data / name).write_bytes(b"not a picture")
    messages = []
    config = tiny_config(tmp_path / "run", data="folder", data_root=str(data), epochs=2, workers=1, augment=False)
    result = Trainer(config, log=messages.append).fit()
    assert result.exit_code == 0
    assert result.progress.skipped_files == 4
    named = sorted(m.split(": ")[1] for m in messages if m.startswith("skipped a bad data file"))
    assert named == sorted(str(data / n) for n in ("bad0.png", "bad1.png", "bad2.jpg", "bad3.png"))
    with open(tmp_path / "run" / "train_log.csv") as f:
        counts = [int(row["skipped_files"]) for row in csv.DictReader(f)]
    assert max(counts) == 4 and counts == sorted(counts)


def test_resuming_with_other_channels_is_refused_before_loading(tmp_path):
    Trainer(tiny_config(tmp_path, max_steps=1), log=lambda m: None).fit()
    messages = []
    with pytest.raises(CheckpointError, match="channels 64, this run has 128: a model of another shape cannot resume"):
        Trainer(tiny_config(tmp_path, max_steps=2, resume="auto", channels=(128,)), log=messages.append).fit()
    assert not any("resuming anyway" in m for m in messages)


def test_train_seed_out_of_range_is_one_line(tmp_path):
    for seed in ("2147483648", str(2**64 + 1)):
        result = run_train([*tiny_args(tmp_path / "run"), "--seed", seed])
        assert result.returncode == 2, result.stderr[-1500:]
        assert result.stderr.strip().startswith("error: seed: must be in [0, 2147483647]"), result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_progress_is_plain_lines_without_a_terminal(tmp_path):
    import io

    from colorizer.progress import LineProgress, progress_bar

    stream = io.StringIO()
    bar = progress_bar(5, desc="train", unit="step", file=stream)
    assert isinstance(bar, LineProgress)
    bar.every_s = 0.0
    for _ in range(5):
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 6 and lines[-2].startswith("train: 5/5 step (100%)")
    # The trainer with its progress display on, stderr a pipe (a log file): no carriage returns.
    result = run_train([*tiny_args(tmp_path / "run"), "--progress", "--max-steps", "3"])
    assert result.returncode == 0, result.stderr[-1500:]
    assert "\r" not in result.stderr and "\r" not in result.stdout


def test_vgg_weights_errors_are_one_line_of_our_own(tmp_path):
    import argparse

    bad = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(1), "args": argparse.Namespace(a=1)}, bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80\x02 not a pickle at all")
    for path in (bad, junk):
        result = run_train([*tiny_args(tmp_path / "run"), "--vgg-weights", str(path), "--max-steps", "1"])
        assert result.returncode == 2, result.stderr[-1500:]
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: cannot read VGG16 weights"), result.stderr
        assert "weights_only" not in lines[0] and "file an issue" not in lines[0]
    assert not (tmp_path / "run").exists()
