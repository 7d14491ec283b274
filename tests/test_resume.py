"""Exact resume on the CPU: N steps == k steps + resume + (N - k) steps, bit for bit."""

import os
import shutil

import pytest

from colorizer.checkpoint import read_checkpoint
from colorizer.errors import CheckpointError
from colorizer.train import Trainer
from tests.test_train_support import payload_diffs, tiny_config


def _fit(out, **overrides):
    return Trainer(tiny_config(out, **overrides), log=lambda m: None).fit()


@pytest.mark.parametrize("workers", [0, 1])
def test_two_plus_two_steps_equal_four(tmp_path, workers):
    # length 6, batch 2: 3 steps per epoch, so the resumed run also crosses an epoch boundary.
    common = dict(workers=workers, length=6, epochs=2, log_every=1)
    full = _fit(tmp_path / "full", max_steps=4, **common)
    _fit(tmp_path / "split", max_steps=2, **common)
    resumed = _fit(tmp_path / "split", max_steps=4, resume="auto", **common)
    assert resumed.progress.step == 4 and resumed.progress.epoch == 1 and resumed.progress.batch_in_epoch == 1
    a, meta_a = read_checkpoint(full.checkpoint)
    b, meta_b = read_checkpoint(resumed.checkpoint)
    assert payload_diffs(a, b) == []  # models, optimizers, progress and every RNG state
    # The log of the resumed run holds the same rows as the uninterrupted one (timings aside).
    cols = slice(0, 8)
    rows_a = [r.split(",")[cols] for r in (tmp_path / "full" / "train_log.csv").read_text().splitlines()]
    rows_b = [r.split(",")[cols] for r in (tmp_path / "split" / "train_log.csv").read_text().splitlines()]
    assert rows_a == rows_b


def test_resume_explicit_file_and_folder_and_refusals(tmp_path):
    first = _fit(tmp_path / "a", max_steps=1)
    # An explicit file in another run folder, and a folder: both continue from step 1.
    assert _fit(tmp_path / "b", max_steps=2, resume=first.checkpoint).progress.step == 2
    assert _fit(tmp_path / "c", max_steps=2, resume=str(tmp_path / "a" / "checkpoints")).progress.step == 2
    # --resume auto with nothing there starts fresh.
    assert _fit(tmp_path / "d", max_steps=1, resume="auto").progress.step == 1
    # A generator-only file cannot resume training.
    from colorizer.checkpoint import load_generator, save_generator

    only_g = str(tmp_path / "g.safetensors")
    save_generator(only_g, load_generator(first.checkpoint))
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        _fit(tmp_path / "e", max_steps=2, resume=only_g)


def test_resume_auto_skips_a_damaged_newest_checkpoint(tmp_path):
    out = tmp_path / "run"
    _fit(out, max_steps=2, ckpt_every=1, keep_last=3)
    newest = out / "checkpoints" / "step_000000002.safetensors"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    messages = []
    result = Trainer(tiny_config(out, max_steps=3, resume="auto"), log=messages.append).fit()
    assert any("skipping damaged checkpoint" in m for m in messages)
    assert any("resumed from" in m and "step_000000001" in m for m in messages)
    assert result.progress.step == 3


def test_changed_config_on_resume_warns_with_the_differences(tmp_path):
    _fit(tmp_path, max_steps=1)
    messages = []
    Trainer(tiny_config(tmp_path, max_steps=2, resume="auto", w_tv=0.5), log=messages.append).fit()
    assert any("different config" in m and "w_tv: 0.01 -> 0.5" in m for m in messages), messages


def test_all_checkpoints_damaged_is_an_error(tmp_path):
    _fit(tmp_path, max_steps=1)
    ck = tmp_path / "checkpoints" / "step_000000001.safetensors"
    ck.write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        _fit(tmp_path, max_steps=2, resume="auto")
    shutil.rmtree(tmp_path / "checkpoints")
    assert not os.path.exists(tmp_path / "checkpoints")
