"""End-to-end tests of the `colorizer` command: success paths and every bad input it must refuse."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer.cli import main
from colorizer.models import NoiseInjection, Sketch2Color

SMALL = (64, 64, 64, 64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    g = Sketch2Color(channels=SMALL)
    for m in g.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(0.3)  # make the seed matter
    path = tmp_path_factory.mktemp("ckpt") / "reference_format.pth"
    torch.save({"netG": g.state_dict()}, path)  # the public reference's checkpoint layout
    return path


def _png(path, h=150, w=200, mode="RGB"):
    rng = np.random.default_rng(0)
    arr = np.full((h, w, 3), 255, np.uint8)
    arr[rng.random((h, w)) < 0.05] = 0
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def _run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_colorize_file_keeps_size_and_is_seed_deterministic(tmp_path, checkpoint, capsys):
    sketch = _png(tmp_path / "s.png")
    ref = _png(tmp_path / "r.png", 256, 256)
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    for out, seed in ((a, 1), (b, 1), (c, 2)):
        code, _, err = _run(
            [
                "colorize",
                "--checkpoint",
                checkpoint,
                "--sketch",
                sketch,
                "--reference",
                ref,
                "--out",
                out,
                "--seed",
                seed,
            ],
            capsys,
        )
        assert code == 0, err
    ia, ib, ic = (np.asarray(Image.open(p)) for p in (a, b, c))
    assert ia.shape == (150, 200, 3)
    assert np.array_equal(ia, ib)
    assert not np.array_equal(ia, ic)


def test_colorize_folder_with_palette_and_resize(tmp_path, checkpoint, capsys):
    folder = tmp_path / "sketches"
    (folder / "sub").mkdir(parents=True)
    _png(folder / "one.png", 130, 140, mode="L")  # grayscale: converted
    _png(folder / "sub" / "two.png", 300, 129, mode="RGBA")  # RGBA: converted
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    code, stdout, err = _run(
        [
            "colorize",
            "--checkpoint",
            checkpoint,
            "--sketch",
            folder,
            "--palette",
            "#ff0000,#00ff00,#0000ff",
            "--out",
            out,
            "--size",
            128,
        ],
        capsys,
    )
    assert code == 0, err
    assert "broken.png" in err and "1 unreadable" in stdout
    assert np.asarray(Image.open(out / "one.png")).shape == (130, 140, 3)
    assert np.asarray(Image.open(out / "sub" / "two.png")).shape == (300, 129, 3)
    assert not (out / "broken.png").exists()


@pytest.mark.parametrize(
    "case",
    [
        "corrupt",
        "truncated",
        "not_image",
        "tiny",
        "missing",
        "bad_palette",
        "bad_size",
        "both_palettes",
        "missing_keys",
        "extra_keys",
        "not_checkpoint",
    ],
)
def test_colorize_bad_input_one_line_nonzero_nothing_written(tmp_path, checkpoint, capsys, case):
    sketch = _png(tmp_path / "s.png")
    args = {"--checkpoint": checkpoint, "--sketch": sketch, "--palette": "#102030", "--out": tmp_path / "o.png"}
    extra = []
    if case == "corrupt":
        sketch.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif case == "truncated":
        data = sketch.read_bytes()
        sketch.write_bytes(data[: len(data) // 2])
    elif case == "not_image":
        sketch.write_text("this is not a picture\n")
    elif case == "tiny":
        _png(sketch, 64, 64)
    elif case == "missing":
        args["--sketch"] = tmp_path / "nope.png"
    elif case == "bad_palette":
        args["--palette"] = "#12345g"
    elif case == "bad_size":
        extra = ["--size", "100"]
    elif case == "both_palettes":
        args["--reference"] = sketch
    elif case in ("missing_keys", "extra_keys"):
        sd = torch.load(checkpoint, weights_only=True)["netG"]
        if case == "missing_keys":
            sd.pop("decoder.noise3.weight")
        else:
            sd["decoder.surprise.weight"] = torch.zeros(3)
        args["--checkpoint"] = tmp_path / "bad.pth"
        torch.save({"netG": sd}, args["--checkpoint"])
    elif case == "not_checkpoint":
        args["--checkpoint"] = tmp_path / "junk.pth"
        args["--checkpoint"].write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    argv = ["colorize"] + [str(x) for kv in args.items() for x in kv] + extra
    code, _, err = _run(argv, capsys)
    assert code == 2
    line = _one_error_line(err)
    if case in ("missing_keys", "extra_keys"):
        assert "noise3" in line or "surprise" in line
    assert not (tmp_path / "o.png").exists()
    assert not list(tmp_path.glob("*.tmp*")), "a temporary file was left behind"


def test_palette_and_info_commands(tmp_path, capsys):
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :32] = (200, 30, 40)
    img[:, 32:] = (10, 120, 250)
    Image.fromarray(img).save(tmp_path / "two.png")
    code, out, err = _run(["palette", tmp_path / "two.png"], capsys)
    assert code == 0, err
    colors = out.strip().split(",")
    assert len(colors) == 9 and {"#c81e28", "#0a78fa"} <= set(colors)
    code, out, _ = _run(["info"], capsys)
    assert code == 0 and "kernels=eager: ok" in out


def test_console_script_exit_code(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "colorizer.cli",
            "colorize",
            "--checkpoint",
            str(tmp_path / "none.pth"),
            "--sketch",
            str(tmp_path / "none.png"),
            "--palette",
            "#000000",
            "--out",
            str(tmp_path / "o.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr


def test_colorize_from_run_folder_uses_newest_good_checkpoint(tmp_path, capsys):
    from colorizer.checkpoint import CheckpointManager, save_generator

    torch.manual_seed(1)
    run = tmp_path / "run"
    manager = CheckpointManager(str(run / "checkpoints"))
    (run / "checkpoints").mkdir(parents=True)
    save_generator(manager.path_for(10), Sketch2Color(channels=SMALL))
    newest = manager.path_for(20)
    save_generator(newest, Sketch2Color(channels=SMALL))
    with open(newest, "r+b") as f:  # damage the newest: it must be skipped with a warning
        f.seek(-64, 2)
        f.write(b"\0" * 64)
    sketch = _png(tmp_path / "s.png")
    with pytest.warns(UserWarning, match="damaged"):
        code, _, err = _run(
            ["colorize", "--checkpoint", run, "--sketch", sketch, "--palette", "#aa5500", "--out", tmp_path / "o.png"],
            capsys,
        )
    assert code == 0, err
    assert (tmp_path / "o.png").exists()
    empty = tmp_path / "empty_run"
    empty.mkdir()
    code, _, err = _run(
        ["colorize", "--checkpoint", empty, "--sketch", sketch, "--palette", "#aa5500", "--out", tmp_path / "p.png"],
        capsys,
    )
    assert code == 2 and "no readable checkpoint" in _one_error_line(err)
