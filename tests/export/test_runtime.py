"""load_engine: the runner the colorizer CLI uses for --engine model.onnx / model.plan."""

import pytest
import torch

from colorizer.errors import ConfigError, MissingDependencyError
from colorizer.export import load_engine
from colorizer.export.interface import example_inputs, generator_input
from colorizer.export.seeded_noise import seeded_noise
from colorizer.testing import relative_l2
from tests.export.conftest import assert_as_close_as_eager


def test_onnx_runner_matches_eager_model_with_the_same_noise(exported, generator):
    runner = load_engine(exported("seeded").path)
    assert runner.noise == "seeded"
    sketch, palette, _ = example_inputs("seeded", 2, 128, 128, seed=8)
    x = generator_input(sketch, palette)
    out = runner(x, seed=40)
    assert out.shape == (2, 3, 128, 128) and out.dtype == torch.float32
    assert_as_close_as_eager(out, generator, x, seeded_noise(torch.tensor([40, 41]), 128, 128))
    # Per-sample seeds as a tensor give the same; an input-mode export given the same seeds too.
    assert torch.equal(runner(x, seed=torch.tensor([40, 41])), out)
    input_runner = load_engine(exported("input").path)
    assert input_runner.noise == "input"
    assert relative_l2(input_runner(x, seed=40), out) < 1e-4  # in-graph vs PyTorch log/cos: ulps apart


def test_runner_works_inside_the_colorizer(exported, generator):
    from colorizer.inference import Colorizer

    colorizer = Colorizer(exported("zero").path, device="cpu")
    assert colorizer.runner.format == "onnx" and colorizer.runner.noise == "zero"
    sketches = torch.rand(1, 3, 128, 128) * 2 - 1
    palette = torch.randint(0, 256, (9, 3), dtype=torch.uint8)
    out = colorizer.colorize_batch(sketches, palette, seed=3)
    eager = Colorizer(generator).colorize_batch(sketches, palette, seed=3)  # seed unused by zero-noise engine
    assert out.shape == (1, 3, 128, 128) and out.abs().max() <= 1 + 1e-6
    assert not torch.equal(out, eager)  # the eager model injects seeded noise; the engine does not


def test_bad_engine_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_engine(str(tmp_path / "none.onnx"))
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="unknown engine file type"):
        load_engine(str(tmp_path / "m.bin"))
    (tmp_path / "m.onnx").write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match="cannot load"):
        load_engine(str(tmp_path / "m.onnx"))
    (tmp_path / "m.plan").write_bytes(b"x")
    with pytest.raises((MissingDependencyError, ConfigError)):
        load_engine(str(tmp_path / "m.plan"))


@pytest.mark.gpu
def test_tensorrt_engine_build_run_and_gate(exported, generator, tmp_path):
    """On a GPU with TensorRT: build fp16 with the gate, run it through load_engine, reuse the cache."""
    pytest.importorskip("tensorrt")
    from colorizer.export import build_engine

    plan = tmp_path / "g.plan"
    built = build_engine(
        exported("seeded").path, str(plan), precision="fp16", batch="1:2:2", size="128:128:256", model=generator
    )
    assert built.parity.passed and plan.is_file() and (tmp_path / "g.plan.json").is_file()
    assert (tmp_path / "timing.cache").is_file()
    runner = load_engine(str(plan), device="cuda")
    x = generator_input(*example_inputs("seeded", 2, 128, 256, seed=1)[:2]).cuda()
    out = runner(x, seed=5)
    onnx_out = load_engine(exported("seeded").path)(x.cpu(), seed=5)
    assert out.is_cuda and relative_l2(out.cpu(), onnx_out) < 2e-2
    again = build_engine(
        exported("seeded").path,
        str(tmp_path / "h.plan"),
        precision="fp16",
        batch="1:1:2",
        size="128:128:256",
        model=generator,
    )
    assert again.build_seconds <= built.build_seconds * 1.5  # the timing cache was reused
