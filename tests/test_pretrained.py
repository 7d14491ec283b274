"""The bundled model: registry and file, loading by name, a palette swap, colorize without --checkpoint."""

import dataclasses
import os

import numpy as np
import pytest
import torch

from colorizer import pretrained
from colorizer.checkpoint import load_generator
from colorizer.cli import main as cli_main
from colorizer.data import load_image, save_image
from colorizer.data.synthetic import render_drawing
from colorizer.demo import asset, panel_palettes
from colorizer.errors import CheckpointError
from colorizer.inference import Colorizer
from colorizer.models import Sketch2Color

MAX_BYTES = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def demo_model():
    return load_generator("demo")


@pytest.mark.parametrize("name", pretrained.names())
def test_registered_files_are_shipped_and_match_their_sha256(name):
    model = pretrained.get(name)
    path = os.path.join(pretrained.folder(), model.file)
    assert os.path.getsize(path) <= MAX_BYTES
    assert pretrained.sha256_of(path) == model.sha256
    assert pretrained.weights_path(name) == path
    card = open(os.path.join(pretrained.folder(), model.card)).read()
    assert "synthetic" in card and "python -m colorizer.train" in card


def test_load_generator_by_name(demo_model):
    assert isinstance(demo_model, Sketch2Color) and not demo_model.training
    assert demo_model.in_channels == 30
    assert sum(p.numel() for p in demo_model.parameters()) * 4 <= MAX_BYTES


def test_a_damaged_bundled_file_is_refused(monkeypatch):
    wrong = dataclasses.replace(pretrained.MODELS["demo"], sha256="0" * 64)
    monkeypatch.setitem(pretrained.MODELS, "demo", wrong)
    pretrained._verified.clear()
    with pytest.raises(CheckpointError, match="sha256"):
        load_generator("demo")
    pretrained._verified.clear()


def test_an_unknown_name_lists_the_bundled_models():
    with pytest.raises(CheckpointError, match="neither a file nor a bundled model: demo"):
        load_generator("no-such-model")


def _colored(truth: np.ndarray, sketch: np.ndarray) -> np.ndarray:
    """Shape pixels of a synthetic drawing: away from the outlines, not the (lightest) background."""
    luma = truth.astype(float) @ np.array([0.299, 0.587, 0.114])
    background = np.abs(truth.astype(int) - truth[0, 0].astype(int)).max(axis=2) <= 6
    return (sketch >= 250) & ~background & (luma > 30)


def _mean_nearest(pixels: np.ndarray, palette: np.ndarray) -> float:
    d = np.linalg.norm(pixels[:, None, :].astype(float) - palette[None].astype(float), axis=2)
    return float(d.min(axis=1).mean())


def test_the_bundled_model_follows_a_palette_swap(demo_model):
    # The demo sketch is synthetic drawing 0/16; its truth tells which pixels are shapes.
    sketch = load_image(asset("demo_sketch.png"))
    truth, lines = render_drawing(0, 16)
    gray = sketch[..., 0] if sketch.ndim == 3 else sketch
    assert np.array_equal(lines, gray)
    mask = _colored(truth, gray)
    assert mask.sum() > 2000
    palettes = [p for _, p in panel_palettes()[:2]]  # the reference's (blue-violet) and a yellow one
    colorizer = Colorizer(demo_model)
    outputs = [colorizer.colorize(sketch, torch.from_numpy(p), seed=0)[mask] for p in palettes]
    for k, out in enumerate(outputs):
        own, other = _mean_nearest(out, palettes[k]), _mean_nearest(out, palettes[1 - k])
        assert own < other, (k, own, other)


def test_colorize_without_checkpoint_uses_the_bundled_model(tmp_path, capsys):
    out = tmp_path / "out.png"
    code = cli_main(
        ["colorize", "--sketch", str(asset("demo_sketch.png")), "--palette", "#f0e8f8,#6070d0", "--out", str(out)]
    )
    assert code == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "bundled model 'demo'" in err[0] and "synthetic" in err[0]
    picture = load_image(out)
    assert picture.shape == (256, 256, 3) and picture.std() > 10


def test_colorize_with_an_unknown_name_is_one_line_and_exit_2(tmp_path, capsys):
    sketch = save_image(tmp_path / "s.png", np.full((128, 128), 255, np.uint8))
    args = ["colorize", "--checkpoint", "nosuchmodel", "--sketch", str(sketch), "--palette", "#ff0000"]
    code = cli_main([*args, "--out", str(tmp_path / "o.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "nosuchmodel" in err and "demo" in err
    assert not (tmp_path / "o.png").exists()
