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
    assert "broken.png" in err and "1 unusable" in stdout
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
    code, _, err = _run(
        ["colorize", "--checkpoint", run, "--sketch", sketch, "--palette", "#aa5500", "--out", tmp_path / "o.png"],
        capsys,
    )
    assert code == 0, err
    # the warning is one readable line (no source file and line, issue 12 item 20)
    assert [line for line in err.splitlines() if "damaged" in line] == [
        f"warning: skipping damaged checkpoint: {newest} is damaged or was modified: its sha256 does not match "
        "its contents"
    ] or all(line.startswith("warning: skipping damaged checkpoint") for line in err.splitlines() if line), err
    assert (tmp_path / "o.png").exists()
    empty = tmp_path / "empty_run"
    empty.mkdir()
    code, _, err = _run(
        ["colorize", "--checkpoint", empty, "--sketch", sketch, "--palette", "#aa5500", "--out", tmp_path / "p.png"],
        capsys,
    )
    assert code == 2 and "no readable checkpoint" in _one_error_line(err)


# ---- issue 12: no data loss, no traceback ---------------------------------------------------------


def _colorize(capsys, checkpoint, sketch, out, *extra):
    argv = ["colorize", "--checkpoint", checkpoint, "--sketch", sketch, "--palette", "#c04020", "--out", out]
    return _run([*argv, *extra], capsys)


def test_names_differing_only_by_extension_get_distinct_outputs(tmp_path, checkpoint, capsys):
    folder = tmp_path / "sketches"
    folder.mkdir()
    for i, ext in enumerate(("png", "jpg", "webp")):
        _png(folder / f"x.{ext}", 130 + i, 140)  # three sizes: each output must come from its own input
    code, stdout, err = _colorize(capsys, checkpoint, folder, tmp_path / "out")
    assert code == 0, err
    assert "wrote 3 image(s)" in stdout
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg.png", "x.png", "x.webp.png"]
    heights = {p.name: np.asarray(Image.open(p)).shape[0] for p in out.iterdir()}
    assert heights == {"x.png": 130, "x.jpg.png": 131, "x.webp.png": 132}


def test_outputs_that_would_still_collide_are_refused_before_writing(tmp_path, checkpoint, capsys):
    folder = tmp_path / "sketches"
    folder.mkdir()
    _png(folder / "x.jpg")
    _png(folder / "x.png")
    _png(folder / "x.jpg.png")  # x.jpg -> x.jpg.png would meet this one's output
    code, _, err = _colorize(capsys, checkpoint, folder, tmp_path / "out")
    assert code == 2 and "outputs would collide" in _one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_output_never_overwrites_an_input(tmp_path, checkpoint, capsys):
    folder = tmp_path / "sketches"
    folder.mkdir()
    sketch = _png(folder / "s.png")
    before = sketch.read_bytes()
    for out, extra in ((folder, []), (folder, ["--overwrite"]), (sketch, ["--overwrite"])):
        target = sketch if out == sketch else out
        code, _, err = _colorize(capsys, checkpoint, sketch if out == sketch else folder, target, *extra)
        assert code == 2, err
        _one_error_line(err)
        assert sketch.read_bytes() == before
    ref = _png(tmp_path / "ref.png", 200, 200)
    ref_bytes = ref.read_bytes()
    code, _, err = _run(
        ["colorize", "--checkpoint", checkpoint, "--sketch", sketch, "--reference", ref, "--out", ref, "--overwrite"],
        capsys,
    )
    assert code == 2 and "would write over the input" in _one_error_line(err)
    assert ref.read_bytes() == ref_bytes


def test_existing_outputs_are_refused_unless_overwrite(tmp_path, checkpoint, capsys):
    sketch = _png(tmp_path / "s.png")
    out = tmp_path / "o.png"
    out.write_bytes(b"precious")
    code, _, err = _colorize(capsys, checkpoint, sketch, out)
    assert code == 2 and "--overwrite" in _one_error_line(err)
    assert out.read_bytes() == b"precious"
    code, _, err = _colorize(capsys, checkpoint, sketch, out, "--overwrite")
    assert code == 0, err
    assert np.asarray(Image.open(out)).shape == (150, 200, 3)
    folder = tmp_path / "many"
    folder.mkdir()
    _png(folder / "a.png")
    _png(folder / "b.png")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "b.png").write_bytes(b"keep")
    code, _, err = _colorize(capsys, checkpoint, folder, tmp_path / "res")
    assert code == 2 and "b.png" in _one_error_line(err)
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["b.png"]  # nothing written at all


def test_results_folder_inside_the_sketch_folder_is_not_read_as_sketches(tmp_path, checkpoint, capsys):
    folder = tmp_path / "sketches"
    folder.mkdir()
    _png(folder / "a.png")
    code, _, err = _colorize(capsys, checkpoint, folder, folder / "out")
    assert code == 0, err
    code, stdout, err = _colorize(capsys, checkpoint, folder, folder / "out", "--overwrite")
    assert code == 0, err
    assert "wrote 1 image(s)" in stdout and not (folder / "out" / "out").exists()


@pytest.mark.parametrize("name", ["x.gif", "x.txt"])
def test_an_output_extension_we_cannot_write_is_an_error(tmp_path, checkpoint, capsys, name):
    sketch = _png(tmp_path / "s.png")
    code, _, err = _colorize(capsys, checkpoint, sketch, tmp_path / name)
    assert code == 2 and "cannot write" in _one_error_line(err)
    assert not (tmp_path / name).exists()


def test_files_of_other_types_in_a_folder_are_listed_as_skipped(tmp_path, checkpoint, capsys):
    folder = tmp_path / "sketches"
    folder.mkdir()
    _png(folder / "a.png")
    Image.open(folder / "a.png").save(folder / "anim.gif")
    code, stdout, err = _colorize(capsys, checkpoint, folder, tmp_path / "out")
    assert code == 0, err
    assert "skipped:" in err and "anim.gif" in err
    assert "wrote 1 image(s)" in stdout


def test_a_folder_of_unreadable_files_exits_2_with_one_line(tmp_path, checkpoint, capsys):
    folder = tmp_path / "sketches"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        (folder / name).write_bytes(b"not a picture")
    code, stdout, err = _colorize(capsys, checkpoint, folder, tmp_path / "out")
    assert code == 2
    assert "none of the 2 sketch(es) could be read" in _one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_non_finite_weights_are_refused_at_load(tmp_path, checkpoint, capsys):
    sd = torch.load(checkpoint, weights_only=True)["netG"]
    for value, name in ((float("nan"), "nan"), (float("inf"), "inf")):
        bad = {k: v.clone() for k, v in sd.items()}
        bad["decoder.noise3.weight"][0] = value
        path = tmp_path / f"{name}.pth"
        torch.save({"netG": bad}, path)
        code, _, err = _colorize(capsys, checkpoint, _png(tmp_path / "s.png"), tmp_path / f"{name}.png")
        assert code == 0, err  # the good checkpoint still works
        code, _, err = _colorize(capsys, path, tmp_path / "s.png", tmp_path / f"{name}_bad.png")
        assert code == 2 and "non-finite weights" in _one_error_line(err)
        assert not (tmp_path / f"{name}_bad.png").exists()


@pytest.mark.parametrize("seed", ["-1", "2147483648", "4294967296", str(2**64), str(10**30)])
def test_seeds_outside_the_range_are_one_line_errors(tmp_path, checkpoint, capsys, seed):
    sketch = _png(tmp_path / "s.png")
    code, _, err = _colorize(capsys, checkpoint, sketch, tmp_path / "o.png", "--seed", seed)
    assert code == 2 and "2147483647" in _one_error_line(err)
    code, _, err = _run(["palette", sketch, "--seed", seed], capsys)
    assert code == 2 and "2147483647" in _one_error_line(err)
    assert not (tmp_path / "o.png").exists()


def test_largest_seed_works_and_differs_from_seed_zero(tmp_path, checkpoint, capsys):
    sketch = _png(tmp_path / "s.png")
    for seed in ("0", "2147483647"):
        code, _, err = _colorize(capsys, checkpoint, sketch, tmp_path / f"{seed}.png", "--seed", seed)
        assert code == 0, err
    a, b = (np.asarray(Image.open(tmp_path / f"{s}.png")) for s in ("0", "2147483647"))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("k", ["0", "257", "4097", "1000000"])
def test_palette_k_is_bounded(tmp_path, capsys, k):
    code, _, err = _run(["palette", _png(tmp_path / "r.png", 64, 64), "--k", k], capsys)
    assert code == 2 and "from 1 to 256" in _one_error_line(err)


def test_palette_with_fewer_colors_than_k_warns(tmp_path, capsys):
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = (10, 120, 250)
    Image.fromarray(img).save(tmp_path / "two.png")
    code, out, err = _run(["palette", tmp_path / "two.png", "--k", "5"], capsys)
    assert code == 0 and len(out.strip().split(",")) == 5
    assert err.strip() == "warning: the picture has only 2 distinct color(s) for --k 5; the palette repeats them"


def test_a_color2sketch_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    from colorizer.models import Color2Sketch

    path = tmp_path / "c2s.pth"
    torch.save({"netG": Color2Sketch(channels=SMALL).state_dict()}, path)
    code, _, err = _colorize(capsys, path, _png(tmp_path / "s.png"), tmp_path / "o.png")
    assert code == 2 and "Color2Sketch" in _one_error_line(err)


def test_a_discriminator_passed_as_generator_says_so(tmp_path, capsys):
    from colorizer.models import Discriminator

    path = tmp_path / "d.pth"
    torch.save(Discriminator(channels=(32, 32, 32, 32)).state_dict(), path)
    code, _, err = _colorize(capsys, path, _png(tmp_path / "s.png"), tmp_path / "o.png")
    assert code == 2 and "holds a discriminator state dict, not a generator" in _one_error_line(err)


@pytest.mark.parametrize("device", ["bogus", "cuda", "cuda:7", "meta", "mps"])
def test_unusable_devices_are_one_line_errors(tmp_path, checkpoint, capsys, device):
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    code, _, err = _colorize(capsys, checkpoint, _png(tmp_path / "s.png"), tmp_path / "o.png", "--device", device)
    assert code == 2 and device.split(":")[0] in _one_error_line(err)


def test_out_of_memory_is_one_line_naming_the_size(tmp_path, checkpoint, capsys, monkeypatch):
    from colorizer.inference import Colorizer

    def no_memory(self, *args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 123456789012 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(Colorizer, "colorize", no_memory)
    code, _, err = _colorize(capsys, checkpoint, _png(tmp_path / "s.png"), tmp_path / "o.png")
    line = _one_error_line(err)
    assert code == 2 and "not enough memory" in line and "200x150" in line and "--size" in line
    assert not (tmp_path / "o.png").exists()


def test_checkpoint_errors_never_advise_weights_only_false(tmp_path, capsys):
    import argparse

    path = tmp_path / "objects.pth"
    torch.save({"netG": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, path)  # a pickled object
    code, _, err = _colorize(capsys, path, _png(tmp_path / "s.png"), tmp_path / "o.png")
    line = _one_error_line(err)
    assert code == 2 and "weights_only" not in line and "Python objects" in line


def test_warnings_are_one_readable_line(tmp_path, capsys):
    import warnings

    from colorizer.errors import run_cli

    def noisy(argv):
        warnings.warn("first line\nsecond line", UserWarning, stacklevel=1)
        return 0

    assert run_cli(noisy) == 0
    assert capsys.readouterr().err == "warning: first line\n"


@pytest.mark.parametrize(
    "entry, argv, says",
    [
        ("colorizer", ["--colour"], "colorizer: the following arguments are required: command"),
        ("colorizer", ["info", "--colour"], "colorizer: unrecognized arguments: --colour"),
        ("colorizer", ["frob"], "invalid choice: 'frob'"),
        ("colorizer", ["colorize", "--sketch", "s.png"], "colorizer colorize: the following arguments are required"),
        ("colorizer", ["colorize", "--kernels", "zzz", "--sketch", "s", "--out", "o"], "invalid choice: 'zzz'"),
        ("colorizer", ["eval", "demo", "--kernels", "zzz"], "colorizer eval: argument --kernels"),
        ("eval", ["demo", "--frob"], "colorizer: unrecognized arguments: --frob"),
        ("train", ["--bogus"], "python -m colorizer.train: unrecognized arguments: --bogus"),
        ("train", ["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
        ("export", ["--frob"], "colorizer-export: unrecognized arguments: --frob"),
    ],
)
def test_usage_errors_are_one_line(entry, argv, says, capsys):
    """A mistyped option or subcommand is one 'error:' line naming the command and pointing at --help,
    exit 2, not argparse's multi-line usage block (the same for every command we ship)."""
    if entry == "colorizer":
        fn = main
    elif entry == "eval":

        def fn(argv):
            return main(["eval", *argv])
    elif entry == "train":
        from colorizer.errors import run_cli
        from colorizer.train.__main__ import main as train_main

        def fn(argv):
            return run_cli(train_main, argv)
    else:
        from colorizer.export.cli import main as fn
    code = fn(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    line = _one_error_line(err)
    assert says in line and line.endswith("--help)"), line
    assert "usage:" not in err


def test_sketch_follows_colorizes_output_rules(tmp_path, capsys):
    # Issue 22 item 2: `sketch IMG --out IMG` replaced its own input; `--out EXISTING` replaced silently.
    picture = _png(tmp_path / "p.png")
    before = picture.read_bytes()
    code, _, err = _run(["sketch", picture, "--out", picture], capsys)
    assert code == 2 and "would write over the input" in _one_error_line(err)
    assert picture.read_bytes() == before
    (tmp_path / "mine.png").write_bytes(b"the user's file")
    code, _, err = _run(["sketch", picture, "--out", tmp_path / "mine.png"], capsys)
    assert code == 2 and "--overwrite" in _one_error_line(err)
    assert (tmp_path / "mine.png").read_bytes() == b"the user's file"
    code, out, err = _run(["sketch", picture, "--out", tmp_path / "mine.png", "--overwrite"], capsys)
    assert code == 0 and np.asarray(Image.open(tmp_path / "mine.png")).shape[:2] == (150, 200), err
    code, out, err = _run(["sketch", picture, "--out", tmp_path / "lines"], capsys)  # a folder: its name .png
    assert code == 0 and (tmp_path / "lines" / "p.png").is_file() and "lines/p.png" in out, err


def test_sketch_keeps_a_file_that_appears_during_the_run(tmp_path, capsys, monkeypatch):
    import colorizer.sketch

    picture, out = _png(tmp_path / "p.png"), tmp_path / "o.png"
    real = colorizer.sketch.xdog

    def xdog_then_race(image):
        out.write_bytes(b"theirs")  # another process writes the same output meanwhile
        return real(image)

    monkeypatch.setattr(colorizer.sketch, "xdog", xdog_then_race)
    code, _, err = _run(["sketch", picture, "--out", out], capsys)
    assert code == 2 and "appeared during the run" in _one_error_line(err)
    assert out.read_bytes() == b"theirs"


def test_concurrent_colorize_runs_never_replace_each_others_pictures(tmp_path, checkpoint, capsys, monkeypatch):
    # Issue 22 item 3: two runs into one --out both passed the existence check, and the second silently
    # replaced the first's pictures. Here the "other run" writes b.png after the check, mid-run.
    import colorizer.cli as cli

    folder = tmp_path / "sketches"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        _png(folder / name)
    out = tmp_path / "out"
    real = cli._colorize_one

    def racing(colorizer, sketch, palette, seed, size, path):
        if path.name == "a.png":
            out.mkdir(exist_ok=True)
            (out / "b.png").write_bytes(b"the other run's picture")
        return real(colorizer, sketch, palette, seed, size, path)

    monkeypatch.setattr(cli, "_colorize_one", racing)
    code, stdout, err = _colorize(capsys, checkpoint, folder, out)
    line = _one_error_line(err)
    assert code == 2 and "1 picture(s) not written" in line and "b.png" in line and "wrote 2 image(s)" in line
    assert (out / "b.png").read_bytes() == b"the other run's picture"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"] and "wrote" not in stdout
    # With --overwrite the user asked for replacement: the picture is replaced, exit 0.
    monkeypatch.setattr(cli, "_colorize_one", real)
    code, stdout, err = _colorize(capsys, checkpoint, folder, out, "--overwrite")
    assert code == 0 and (out / "b.png").read_bytes() != b"the other run's picture", err


def test_a_link_loop_in_the_sketch_folder_is_listed_once_with_true_reasons(tmp_path, checkpoint, capsys):
    # Issue 22 item 13: a dangling link was listed 42 times, a folder called "not a picture type".
    folder = tmp_path / "sketches"
    (folder / "sub").mkdir(parents=True)
    _png(folder / "a.png")
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "sub" / "gone.png").symlink_to(tmp_path / "deleted.png")
    code, stdout, err = _colorize(capsys, checkpoint, folder, tmp_path / "out")
    assert code == 0 and "wrote 1 image(s)" in stdout, err
    skipped = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 2, err
    assert any("gone.png: a broken link" in line for line in skipped)
    assert any("loop: a link to a folder searched already" in line for line in skipped)
    assert "not a picture type" not in err


@pytest.mark.parametrize("command", ["colorize", "eval"])
def test_a_text_file_as_model_is_not_a_checkpoint(tmp_path, capsys, command):
    # Issue 22 item 14: a 19-byte text file was said to "hold Python objects, not only tensors".
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model at all\n")
    if command == "colorize":
        code, _, err = _colorize(capsys, notes, _png(tmp_path / "s.png"), tmp_path / "o.png")
    else:
        code, _, err = _run(["eval", notes, "--count", 2, "--size", 128, "--out", tmp_path / "ev"], capsys)
    line = _one_error_line(err)
    assert code == 2 and "not a checkpoint" in line and "safetensors" in line and "Python objects" not in line
