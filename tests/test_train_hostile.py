"""The trainer against hostile starts (issue 22): copied run folders, outputs that are files, bundled
names given to --resume, folders holding files a run would replace, --amp bf16 on CPUs with and without
native bf16, and the progress line of a run without the GAN term."""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch

from colorizer.errors import ConfigError
from colorizer.train import Trainer
from colorizer.train.__main__ import main
from colorizer.train.config import resolve_config
from colorizer.train.loop import _Run
from tests.test_train_support import tiny_args, tiny_config


def _quiet(_message: str) -> None:
    pass


def _steps(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder / "checkpoints") if n.startswith("step_"))


def test_a_copied_run_folder_resumes_in_the_copy_not_the_original(tmp_path, capsys):
    """config.yaml records ``out:`` where it was written; the copy's config must not send the run there."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    assert main(tiny_args(original, "--max-steps", "1")) == 0
    shutil.copytree(original, copy)
    capsys.readouterr()
    assert main(["--config", str(copy / "config.yaml"), "--resume", "auto", "--max-steps", "2"]) == 0
    assert _steps(copy) == ["step_000000001.safetensors", "step_000000002.safetensors"]
    assert _steps(original) == ["step_000000001.safetensors"]  # untouched
    assert f"is the config of the run folder {copy}" in capsys.readouterr().err
    # An explicit --out still wins, and a config file that is not a run's keeps its out.
    config, _ = resolve_config(["--config", str(copy / "config.yaml"), "--out", str(tmp_path / "elsewhere")])
    assert config.out == str(tmp_path / "elsewhere")
    template = tmp_path / "template"
    template.mkdir()
    (template / "checkpoints").mkdir()
    (template / "config.yaml").write_text(f"data: synthetic\nout: {tmp_path / 'planned'}\n")
    config, _ = resolve_config(["--config", str(template / "config.yaml")])
    assert config.out == str(tmp_path / "planned")


def test_a_run_config_read_from_inside_its_folder_runs_there(tmp_path, monkeypatch):
    """A relative ``out:`` (runs/x) read from inside the run folder named runs/x/runs/x before."""
    run = tmp_path / "runs" / "x"
    monkeypatch.chdir(tmp_path)
    assert main(tiny_args("runs/x", "--max-steps", "1")) == 0
    monkeypatch.chdir(run)
    config, _ = resolve_config(["--config", "config.yaml", "--resume", "auto"])
    assert os.path.realpath(config.out) == os.path.realpath(run)


def test_an_output_path_that_is_a_file_says_so_and_keeps_it(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    for out, where in ((blocker, "it is a file"), (blocker / "run", f"{blocker} is a file")):
        with pytest.raises(ConfigError, match=f"is not writable: {where}, not a folder"):
            Trainer(tiny_config(out), log=_quiet)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "samples").write_text("mine")
    with pytest.raises(ConfigError, match="samples is not writable: it is a file, not a folder"):
        Trainer(tiny_config(tmp_path / "run"), log=_quiet)
    assert blocker.read_text() == "mine" and os.listdir(tmp_path / "run") == ["samples"]


def test_resume_from_a_bundled_name_says_it_has_no_optimizer_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file called demo here
    with pytest.raises(ConfigError, match="resume: demo is a bundled generator, not a training checkpoint"):
        tiny_config(tmp_path / "run", resume="demo")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["config.yaml", "train_log.csv", "loss_curve.png"])
def test_files_of_the_users_in_the_output_folder_are_not_replaced(tmp_path, name):
    out = tmp_path / "project"
    out.mkdir()
    (out / name).write_text("the user's own file")
    with pytest.raises(ConfigError, match=f"holds {name} that no run of this trainer wrote"):
        Trainer(tiny_config(out, max_steps=1), log=_quiet)
    assert os.listdir(out) == [name] and (out / name).read_text() == "the user's own file"


@pytest.mark.parametrize("name", ["config.yaml", "train_log.csv"])
def test_a_run_file_that_is_a_folder_is_one_line(tmp_path, name):
    Trainer(tiny_config(tmp_path, max_steps=1), log=_quiet).fit()
    path = tmp_path / name
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError, match=f"{name} is not a file"):
        Trainer(tiny_config(tmp_path, max_steps=2, resume="auto"), log=_quiet)
    assert _steps(tmp_path) == ["step_000000001.safetensors"]


def test_a_run_of_ours_is_still_resumed_with_its_files(tmp_path):
    Trainer(tiny_config(tmp_path, max_steps=1), log=_quiet).fit()
    result = Trainer(tiny_config(tmp_path, max_steps=2, resume="auto"), log=_quiet).fit()
    assert result.progress.step == 2


@pytest.mark.parametrize("fast", [True, False])
def test_amp_bf16_on_the_cpu_follows_the_cpus_bf16(tmp_path, monkeypatch, fast):
    """bf16 autocast on a CPU with native bf16; float32 and a note where bf16 would be ~28x slower.
    The CPU probe is replaced, so the test runs the same on every CPU."""
    import colorizer.hardware

    monkeypatch.setattr(colorizer.hardware, "cpu_has_fast_bf16", lambda: fast)
    messages = []
    trainer = Trainer(tiny_config(tmp_path, amp="bf16", max_steps=1, device="cpu"), log=messages.append)
    assert trainer.gan.amp_dtype == (torch.bfloat16 if fast else None)
    notes = [m for m in messages if "bf16" in m]
    if fast:
        assert notes == []
        with trainer.gan.autocast():
            out = trainer.G(torch.zeros(1, 30, 128, 128), noise="zero")
        assert out.dtype == torch.bfloat16
    else:
        assert len(notes) == 1 and "no native bf16" in notes[0] and "training in float32" in notes[0]
    result = trainer.fit()
    assert result.exit_code == 0 and result.progress.bad_total == 0


class _Bar:
    def __init__(self):
        self.postfix = {}

    def update(self, n):
        pass

    def set_postfix(self, refresh=True, **fields):
        self.postfix = fields


@pytest.mark.parametrize("w_gan", [0.0, 1.0])
def test_the_progress_line_shows_only_trained_losses(tmp_path, w_gan):
    trainer = Trainer(tiny_config(tmp_path, w_gan=w_gan), log=_quiet)
    bar = _Bar()
    try:
        stats = trainer.train_step(trainer._preview_batch())
        trainer._bar = bar
        run = _Run(sampler=None, steps_per_epoch=1, total=1)
        run.start_clock()
        trainer._show_progress(stats, run)
    finally:
        trainer._bar = None
        trainer._release_lock()
    assert ("d" in bar.postfix) == bool(w_gan) and "g" in bar.postfix and "l1" in bar.postfix
    assert not any("nan" in str(v) for v in bar.postfix.values()), bar.postfix
    assert math.isnan(stats["loss_d"]) == (not w_gan)  # train_log.csv keeps its columns


def test_an_output_folder_inside_the_data_folder_is_refused(tmp_path):
    """Its sample grids (PNG) would be found as training pictures by the folder data set on resume."""
    data = tmp_path / "pictures"
    data.mkdir()
    for out in (data / "run", data):
        with pytest.raises(ConfigError, match="is inside the data folder"):
            tiny_config(out, data="folder", data_root=str(data))
    tiny_config(tmp_path / "run", data="folder", data_root=str(data))  # beside it is fine
    assert os.listdir(data) == []
