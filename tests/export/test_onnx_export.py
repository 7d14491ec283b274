import copy
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import colorizer
from colorizer.errors import CheckpointError, ConfigError
from colorizer.export import GeneratorForExport, export_onnx, generator_input, input_names, read_metadata
from colorizer.export.interface import example_inputs
from colorizer.export.onnx_export import MIN_OPSET
from colorizer.export.seeded_noise import seeded_noise
from colorizer.export.verify import ParityError
from colorizer.models import Color2Sketch
from colorizer.testing import assert_close, relative_l2
from tests.export.conftest import (
    SMALL,
    TEST_CASES,
    assert_as_close_as_eager,
    reuse_traced_graph,
    small_generator,
)


def test_export_graph_equals_unfolded_eager_model_in_float64(generator):
    """Folded weights, two-level GroupNorm and in-graph palette broadcast change nothing but rounding."""
    model64 = copy.deepcopy(generator).double()
    wrapper = GeneratorForExport(model64, "input")
    inputs = tuple(t.double() for t in example_inputs("input", 1, 128, 256, seed=3))
    with torch.no_grad():
        got = wrapper(*inputs)
        want = model64(generator_input(inputs[0], inputs[1]), noise=list(inputs[2:]))
    assert_close(got, want, atol=1e-9, rtol=1e-9, name="export graph vs eager (float64)")


def test_palette_planes_layout_matches_palette_module():
    from colorizer.palette import palette_planes

    palette = torch.randint(0, 256, (2, 9, 3), dtype=torch.uint8)
    sketch = torch.zeros(2, 3, 4, 8)
    x = generator_input(sketch, palette.float() / 255 * 2 - 1)
    assert torch.allclose(x[:, 3:], palette_planes(palette, 4, 8), atol=1e-6)


@pytest.mark.parametrize("noise", ["seeded", "zero", "input"])
def test_export_passes_checker_and_parity(exported, noise):
    result = exported(noise)
    assert os.path.isfile(result.path)
    assert result.parity.passed and len(result.parity.cases) == len(TEST_CASES)
    onnx.checker.check_model(result.path, full_check=True)
    model = onnx.load(result.path)
    assert [i.name for i in model.graph.input] == input_names(noise)
    assert [o.name for o in model.graph.output] == ["image"]
    sketch = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in sketch] == ["batch", 3, "height", "width"]
    # No stray temporary files next to the result.
    assert not [f for f in os.listdir(os.path.dirname(result.path)) if f.startswith(".")]


def test_metadata(exported):
    meta = read_metadata(exported("seeded").path)
    assert meta["noise_mode"] == "seeded"
    assert meta["palette_size"] == "9"
    assert meta["value_range"] == "[-1, 1]"
    assert meta["layout"] == "NCHW"
    assert meta["source_sha256"] == "ab" * 32
    assert meta["colorizer_version"] == colorizer.__version__
    assert meta["channels"] == str(list(SMALL))
    assert meta["inputs"] == "sketch,palette,seed"
    assert meta["noise_algorithm"].startswith("colorizer-feistel")


def test_seeded_export_runs_at_unseen_batch_and_size(exported, generator):
    """Dynamic dims: batch 3 at 128x384 was never traced or verified; matches eager with the same noise."""
    session = ort.InferenceSession(exported("seeded").path, providers=["CPUExecutionProvider"])
    sketch, palette, seed = example_inputs("seeded", 3, 128, 384, seed=11)
    (out,) = session.run(None, {"sketch": sketch.numpy(), "palette": palette.numpy(), "seed": seed.numpy()})
    assert out.shape == (3, 3, 128, 384)
    x = generator_input(sketch, palette)
    assert_as_close_as_eager(torch.from_numpy(out), generator, x, seeded_noise(seed, 128, 384))
    # The seed matters (noise weights are non-zero) and is per sample.
    seed2 = seed.clone()
    seed2[1] += 1
    (out2,) = session.run(None, {"sketch": sketch.numpy(), "palette": palette.numpy(), "seed": seed2.numpy()})
    assert np.array_equal(out[0], out2[0]) and np.array_equal(out[2], out2[2])
    assert not np.allclose(out[1], out2[1])


def test_input_mode_with_seeded_maps_equals_seeded_mode(exported):
    sketch, palette, seed = example_inputs("seeded", 2, 128, 128, seed=5)
    maps = seeded_noise(seed, 128, 128)
    s_seeded = ort.InferenceSession(exported("seeded").path, providers=["CPUExecutionProvider"])
    s_input = ort.InferenceSession(exported("input").path, providers=["CPUExecutionProvider"])
    (a,) = s_seeded.run(None, {"sketch": sketch.numpy(), "palette": palette.numpy(), "seed": seed.numpy()})
    feed = {"sketch": sketch.numpy(), "palette": palette.numpy()}
    feed |= {f"noise{7 - i}": m.numpy() for i, m in enumerate(maps)}
    (b,) = s_input.run(None, feed)
    # In-graph vs PyTorch log/cos differ by ulps; the deep GroupNorm stack amplifies that at 128 px.
    assert relative_l2(torch.from_numpy(a), torch.from_numpy(b)) < 1e-4


def test_parity_failure_leaves_no_file_and_keeps_the_old_one(tmp_path, exported, monkeypatch):
    """A graph that does not match the model is rejected; nothing new appears, an old file survives."""
    # The graph of the fixture generator, gated against a generator with other weights: a stand-in
    # for any exporter bug.
    reuse_traced_graph(monkeypatch, exported("zero").path)
    target = tmp_path / "model.onnx"
    shutil.copyfile(exported("zero").path, target)  # a previous export (only an export of ours is replaced)
    previous = target.read_bytes()
    with pytest.raises(ParityError) as info:
        export_onnx(small_generator(seed=1), str(target), noise="zero", cases=TEST_CASES[:1])
    assert "failed its parity gate" in str(info.value) and "\n" not in str(info.value)
    assert info.value.report is not None and not info.value.report.passed
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]
    assert target.read_bytes() == previous


def test_bad_options_fail_before_any_work(tmp_path, generator):
    with pytest.raises(ConfigError, match="too old"):
        export_onnx(generator, str(tmp_path / "a.onnx"), opset=MIN_OPSET - 1)
    with pytest.raises(ConfigError, match="noise mode"):
        export_onnx(generator, str(tmp_path / "a.onnx"), noise="gaussian")
    with pytest.raises(ConfigError, match="does not exist"):
        export_onnx(generator, str(tmp_path / "missing" / "a.onnx"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        export_onnx(generator, str(tmp_path / "file" / "a.onnx"))
    with pytest.raises(CheckpointError, match="Color2Sketch|input channels"):
        export_onnx(Color2Sketch(channels=SMALL), str(tmp_path / "a.onnx"))
    assert sorted(os.listdir(tmp_path)) == ["file"]
