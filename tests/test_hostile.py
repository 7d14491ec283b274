"""Twenty more hostile cases (issue 12, "then try twenty more"): paths, concurrency, permissions,
sizes and numbers at their limits. Each test names its case; each must end in a result or one line."""

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer.cli import main
from colorizer.errors import ConfigError
from colorizer.models import Sketch2Color
from colorizer.train import Trainer
from colorizer.train.runlock import RunLock, RunLockedError
from tests.test_train_support import run_train, tiny_args, tiny_config

SMALL = (64, 64, 64, 64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "g.pth"
    torch.save({"netG": Sketch2Color(channels=SMALL).state_dict()}, path)
    return path


def _png(path, h=130, w=140):
    arr = np.full((h, w, 3), 255, np.uint8)
    arr[::9] = 0
    Image.fromarray(arr).save(path)
    return path


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    return code, out, lines


def _colorize(capsys, checkpoint, sketch, out, *extra):
    argv = ["colorize", "--checkpoint", checkpoint, "--sketch", sketch, "--palette", "#3060c0", "--out", out]
    return _cli(capsys, *argv, *extra)


# ---- paths ---------------------------------------------------------------------------------------


def test_case01_out_below_a_file_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import colorizer.cli as cli

    monkeypatch.setattr(cli, "_load_runner", lambda args: pytest.fail("the model must not be loaded"))
    (tmp_path / "afile").write_text("x")
    code, _, lines = _colorize(capsys, "unused.pth", _png(tmp_path / "s.png"), tmp_path / "afile" / "o.png")
    target, blocker = tmp_path / "afile" / "o.png", tmp_path / "afile"
    assert code == 2 and lines == [f"error: cannot write {target}: {blocker} is a file, not a folder"]


def test_case02_out_symlinked_to_the_sketch_is_refused(tmp_path, capsys, checkpoint):
    sketch = _png(tmp_path / "s.png")
    before = sketch.read_bytes()
    (tmp_path / "link.png").symlink_to(sketch)
    code, _, lines = _colorize(capsys, checkpoint, sketch, tmp_path / "link.png", "--overwrite")
    assert code == 2 and len(lines) == 1 and "would write over the input" in lines[0]
    assert sketch.read_bytes() == before


def test_case03_unicode_and_spaces_in_names(tmp_path, capsys, checkpoint):
    folder = tmp_path / "skizzen ü"
    folder.mkdir()
    _png(folder / "bild ä 1.png")
    _png(folder / "線画.jpg")
    code, out, lines = _colorize(capsys, checkpoint, folder, tmp_path / "aus gabe")
    assert code == 0, lines
    assert sorted(p.name for p in (tmp_path / "aus gabe").iterdir()) == ["bild ä 1.png", "線画.png"]


def test_case04_triton_model_folder_that_is_a_symlink_is_not_followed(tmp_path, exported_onnx):
    from colorizer.export.triton_repo import write_triton_repo

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "colorizer_onnx").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="not a colorizer_onnx model"):
        write_triton_repo(str(repo), exported_onnx)
    assert os.listdir(elsewhere) == ["precious.txt"] and (repo / "colorizer_onnx").is_symlink()


def test_case05_triton_repo_huge_batch_is_one_line_before_any_work(tmp_path, capsys, checkpoint):
    from colorizer.export.cli import main as export_main

    code = export_main(["--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "m.onnx"), "--triton-repo",
                        str(tmp_path / "repo"), "--batch", f"1:1:{10**20}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --batch: a Triton max batch size must be at most 2147483647")
    assert os.listdir(tmp_path) == []  # not even the ONNX file


def test_case06_failed_start_in_a_project_folder_removes_only_its_own_files(tmp_path, monkeypatch):
    from colorizer.errors import DataError

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text("code")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError):
        Trainer(tiny_config(".", data="folder", data_root=str(tmp_path / "src")), log=lambda m: None)
    assert sorted(os.listdir(tmp_path)) == ["src"] and os.listdir(tmp_path / "src") == ["model.py"]


def test_case07_checkpoints_path_taken_by_a_file_is_one_line_and_keeps_it(tmp_path):
    (tmp_path / "checkpoints").write_text("not a folder")
    with pytest.raises(ConfigError, match="not writable"):
        Trainer(tiny_config(tmp_path), log=lambda m: None)
    assert sorted(os.listdir(tmp_path)) == ["checkpoints"] and (tmp_path / "checkpoints").read_text() == "not a folder"


# ---- concurrency ---------------------------------------------------------------------------------


def test_case08_two_starts_racing_to_create_the_folder(tmp_path, monkeypatch):
    """The other start creates OUT between our check and our mkdir: not an error, and not ours to remove."""
    out = tmp_path / "run"
    real = os.mkdir

    def racing_mkdir(path, *args, **kwargs):
        if os.fspath(path) == str(out) and not out.exists():
            real(path)  # the other trainer wins the race
            (out / "theirs.txt").write_text("theirs")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", racing_mkdir)
    from colorizer.errors import DataError

    with pytest.raises(DataError):  # our start fails later: it must not delete the other's folder
        Trainer(tiny_config(out, data="folder", data_root=str(tmp_path / "missing")), log=lambda m: None)
    assert (out / "theirs.txt").read_text() == "theirs"


def test_case09_lock_of_a_killed_process_is_taken_over(tmp_path):
    code = f"from colorizer.train.runlock import RunLock; RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); import time; time.sleep(120)"  # noqa: E501
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(str(tmp_path)).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    lock = RunLock(str(tmp_path)).acquire()
    assert lock.took_over and lock.took_over["pid"] == str(holder.pid)
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_case10_second_trainer_in_the_same_process_waits_for_the_first(tmp_path):
    first = Trainer(tiny_config(tmp_path, max_steps=1), log=lambda m: None)
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        Trainer(tiny_config(tmp_path, max_steps=2, resume="auto"), log=lambda m: None)
    first.fit()  # releases on return
    assert Trainer(tiny_config(tmp_path, max_steps=2, resume="auto"), log=lambda m: None).fit().progress.step == 2


def test_case11_lock_path_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / ".lock").mkdir()
    with pytest.raises(ConfigError, match="not writable"):
        Trainer(tiny_config(tmp_path), log=lambda m: None)
    assert os.listdir(tmp_path) == [".lock"]


# ---- permissions / hostile files ------------------------------------------------------------------


def test_case12_lock_file_with_garbage_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_bytes(b"\xff\xfe\x00garbage pid=abc host=\n")
    lock = RunLock(str(tmp_path)).acquire()
    try:
        content = (tmp_path / ".lock").read_text()
        assert content.startswith(f"pid={os.getpid()} host={socket.gethostname()} started=")
    finally:
        lock.release()


def test_case13_output_name_taken_by_a_folder_is_refused_even_with_overwrite(tmp_path, capsys, checkpoint):
    (tmp_path / "o.png").mkdir()
    code, _, lines = _colorize(capsys, checkpoint, _png(tmp_path / "s.png"), tmp_path / "o.png", "--overwrite")
    assert code == 2 and len(lines) == 1 and "a folder of that name exists" in lines[0]


def test_case14_empty_checkpoint_file_is_one_line(tmp_path, capsys):
    (tmp_path / "empty.pth").write_bytes(b"")
    code, _, lines = _colorize(capsys, tmp_path / "empty.pth", _png(tmp_path / "s.png"), tmp_path / "o.png")
    assert code == 2 and len(lines) == 1 and "empty.pth" in lines[0]


# ---- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["0", "-128", "16512", str(10**13)])
def test_case15_colorize_size_out_of_range_is_one_line(tmp_path, capsys, size):
    code, _, lines = _colorize(capsys, "unused.pth", _png(tmp_path / "s.png"), tmp_path / "o.png", "--size", size)
    assert code == 2 and lines == [f"error: --size must be a multiple of 128 from 128 to 16384, got {size}"]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--size", str(128 * 10**10), "size: must be at most 16384 px"),
        ("--workers", "1000000", "workers: must be at most 64 processes"),
        ("--length", str(10**12), "length: must be at most 10,000,000 samples"),
    ],
)
def test_case16_trainer_numbers_beyond_their_limits(tmp_path, flag, value, message):
    result = run_train([*tiny_args(tmp_path / "run"), flag, value])
    assert result.returncode == 2 and result.stderr.strip().startswith(f"error: {message}"), result.stderr[-800:]
    assert not (tmp_path / "run").exists()


def test_case17_one_pixel_reference_gives_a_palette_and_a_warning(tmp_path, capsys):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "one.png")
    code, out, lines = _cli(capsys, "palette", tmp_path / "one.png")
    assert code == 0 and out.strip() == ",".join(["#0a141e"] * 9)
    assert lines == ["warning: the picture has only 1 distinct color(s) for --k 9; the palette repeats them"]


# ---- numbers at their limits ----------------------------------------------------------------------


def test_case18_palette_k_at_its_limit(tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    code, out, _ = _cli(capsys, "palette", tmp_path / "noise.png", "--k", "256")
    assert code == 0 and len(set(out.strip().split(","))) == 256
    code, _, lines = _cli(capsys, "palette", tmp_path / "noise.png", "--k", "257")
    assert code == 2 and lines == ["error: --k must be from 1 to 256 colors, got 257"]


def test_case19_largest_seed_on_a_batch_wraps_to_zero_not_past_int32(exported_onnx):
    from colorizer.export.runtime import load_engine

    runner = load_engine(exported_onnx)
    x = torch.zeros(2, 30, 128, 128)
    top = runner(x, seed=2**31 - 1)
    pair = runner(torch.zeros(1, 30, 128, 128), seed=0)
    assert torch.allclose(top[1:], pair, atol=1e-5)  # image 1 used seed (2**31 - 1 + 1) mod 2**31 = 0
    with pytest.raises(ConfigError):
        runner(x, seed=2**31)


@pytest.mark.parametrize(
    "batch, size, message",
    [
        ("-1:2:4", "256:512:1024", "--batch needs 1 <= MIN <= OPT <= MAX, got '-1:2:4'"),
        ("1:1:8", "-128:256:512", "--size"),
    ],
)
def test_case20_negative_ranges_name_the_value(tmp_path, capsys, checkpoint, batch, size, message):
    from colorizer.export.cli import main as export_main

    argv = ["--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "m.onnx"), "--batch", batch, "--size", size]
    code = export_main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def exported_onnx(tmp_path_factory):
    from colorizer.export import export_onnx

    torch.manual_seed(0)
    model = Sketch2Color(channels=SMALL).eval()
    for name, p in model.named_parameters():
        if "noise" in name:
            p.data.fill_(0.3)
    path = str(tmp_path_factory.mktemp("onnx") / "g.onnx")
    return export_onnx(model, path, noise="seeded", cases=((1, 128, 128),)).path


# ---- issue 22, round two: the colorizer command (colorize, sketch, eval) -------------------------


def test_r2_a_dangling_link_as_out_is_an_existing_output_not_a_race(tmp_path, capsys, checkpoint):
    # It was planned as free (exists() follows the link), then reported as "appeared during the run".
    out = tmp_path / "o.png"
    out.symlink_to(tmp_path / "elsewhere" / "x.png")
    for argv in (
        ["colorize", "--checkpoint", checkpoint, "--sketch", _png(tmp_path / "s.png"), "--palette", "#3060c0"],
        ["sketch", tmp_path / "s.png"],
    ):
        code, _, lines = _cli(capsys, *argv, "--out", out)
        assert code == 2 and len(lines) == 1 and "already exist" in lines[0] and "--overwrite" in lines[0], lines
        assert out.is_symlink() and not (tmp_path / "elsewhere").exists()


def test_r2_one_sketch_too_large_for_the_model_is_skipped_not_the_end_of_the_run(tmp_path, capsys, checkpoint):
    # A 16500 px wide sketch (under the pixel cap, over the largest model side) stopped a folder run after
    # the pictures before it were written, and the error did not say so.
    folder = tmp_path / "sk"
    folder.mkdir()
    _png(folder / "a.png")
    _png(folder / "wide.png", 130, 16500)
    _png(folder / "z.png")
    code, out, lines = _colorize(capsys, checkpoint, folder, tmp_path / "out")
    assert code == 0 and "wrote 2 image(s)" in out and "1 unusable sketch(es) skipped" in out, lines
    assert any("wide.png" in line and "16384" in line for line in lines), lines
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "z.png"]


def test_r2_a_disk_that_fills_mid_run_says_how_many_pictures_were_written(tmp_path, capsys, checkpoint, monkeypatch):
    import errno

    from colorizer import atomic

    folder = tmp_path / "sk"
    folder.mkdir()
    for name in "abc":
        _png(folder / f"{name}.png")
    real, calls = atomic.write_with, []

    def fills_up(path, write, exclusive=False):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write, exclusive)

    monkeypatch.setattr(atomic, "write_with", fills_up)
    code, out, lines = _colorize(capsys, checkpoint, folder, tmp_path / "out")
    assert code == 2 and len(lines) == 1 and "No space left on device" in lines[0], lines
    assert "1 of 3 picture(s) were written" in lines[0] and out == ""
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]  # no temporary left either


def test_r2_what_a_killed_run_left_in_out_is_swept_and_nothing_else(tmp_path, capsys, checkpoint):
    # kill -9 during a write leaves the atomic writer's temporary; the next run into --out removes those of
    # its own outputs (their writer is gone), and nothing of the user's or of other outputs.
    from colorizer import atomic

    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs: the writer that was killed
    stale, other = f".s.png.p{dead.pid}_x1y2.tmp", f".other.png.p{dead.pid}_x1y2.tmp"
    assert atomic.is_temp_name(stale) and not atomic.writer_alive(stale)
    (out / stale).write_bytes(b"half a picture")
    (out / other).write_bytes(b"another output's temporary")
    (out / ".notes").write_text("the user's hidden file")
    code, _, lines = _colorize(capsys, checkpoint, _png(tmp_path / "s.png"), out / "s.png")
    assert code == 0, lines
    assert sorted(os.listdir(out)) == [".notes", other, "s.png"]


def test_r2_a_pipe_named_like_a_sketch_is_skipped_without_hanging(tmp_path, capsys, checkpoint):
    folder = tmp_path / "sk"
    folder.mkdir()
    _png(folder / "a.png")
    os.mkfifo(folder / "b.png")  # opening it for reading would block until a writer comes
    code, out, lines = _colorize(capsys, checkpoint, folder, tmp_path / "out")
    assert code == 0 and "wrote 1 image(s)" in out, lines
    assert any("b.png: not a regular file" in line for line in lines), lines


def test_r2_two_evals_into_one_out_keep_each_others_files(tmp_path, monkeypatch):
    # The existence check ran before the work; a report written meanwhile by another eval was replaced.
    import colorizer.evaluation as evaluation
    from colorizer.errors import ColorizerError
    from colorizer.evaluation import Report

    report = Report({}, {}, {}, [], np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setattr(Report, "to_json", lambda self: "{}")
    monkeypatch.setattr(Report, "to_markdown", lambda self: "ours\n")
    out = tmp_path / "out"
    out.mkdir()
    real_check = evaluation.check_outputs

    def check_then_race(folder):
        real_check(folder)
        (out / "eval.md").write_text("the other run's report")  # the other eval finishes right after the check

    monkeypatch.setattr(evaluation, "check_outputs", check_then_race)
    with pytest.raises(ColorizerError, match="eval.md appeared during the run .* wrote eval.json, contact_sheet.png"):
        report.write(out, overwrite=False)
    assert (out / "eval.md").read_text() == "the other run's report"
    monkeypatch.setattr(evaluation, "check_outputs", real_check)
    report.write(out, overwrite=True)
    assert (out / "eval.md").read_text() == "ours\n"
