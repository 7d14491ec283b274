"""OpenVINO export (colorizer.export.openvino): exact seeded noise, fp32 / bf16 IRs behind their gates,
the runner through load_engine, colorize and eval, and broken engines failing with exit code 3."""

import importlib
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

pytest.importorskip("openvino")

from colorizer.errors import ConfigError  # noqa: E402
from colorizer.export import load_engine  # noqa: E402
from colorizer.export import openvino as xo  # noqa: E402
from colorizer.export.cli import main  # noqa: E402
from colorizer.export.interface import (
    example_inputs,
    generator_input,  # noqa: E402
)
from colorizer.export.verify import eager_noise  # noqa: E402
from tests.export.conftest import TEST_CASES, assert_as_close_as_eager, reuse_traced_graph  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
seeded_noise_module = importlib.import_module("colorizer.export.seeded_noise")
# Functional gate in tests: a few drawings at 128 px (the default is 32 at 256 px).
GATE = dict(cases=TEST_CASES, functional_count=4, functional_size=128)


@pytest.fixture(scope="module")
def ov_exports(generator, exported, tmp_path_factory):
    """precision -> OpenVinoExport of the fixture generator (seeded noise), from its gated ONNX file."""
    folder = tmp_path_factory.mktemp("openvino")
    cache = {}

    def get(precision: str):
        if precision not in cache:
            cache[precision] = xo.export_openvino(
                generator, str(folder / precision), precision=precision, onnx_path=exported("seeded").path, **GATE
            )
        return cache[precision]

    return get


def test_integer_division_rewrite_makes_seeded_noise_exact(exported):
    """The CPU plugin divides int32 through float32 (off by one above 2**24), which scrambles the
    seeded noise; after the rewrite to shifts the IR computes what onnxruntime computes."""
    import onnxruntime as ort
    import openvino as ov

    from colorizer.testing import relative_l2

    path = exported("seeded").path
    sketch, palette, seed = example_inputs("seeded", 2, 256, 128, seed=21)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"sketch": sketch.numpy(), "palette": palette.numpy(), "seed": seed.numpy()})

    def run(model):
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return torch.from_numpy(compiled([sketch.numpy(), palette.numpy(), seed.numpy()])[0])

    model = ov.convert_model(path)
    int32_divides = [
        op
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Divide" and op.get_output_element_type(0) == ov.Type.i32
    ]
    assert relative_l2(run(model), torch.from_numpy(want)) > 0.1  # why the rewrite exists
    assert xo.exact_integer_division(model) == len(int32_divides) > 0
    assert relative_l2(run(model), torch.from_numpy(want)) < 1e-3  # fp32 rounding of two runtimes


def test_fp32_export_files_metadata_and_parity(ov_exports, generator):
    result = ov_exports("fp32")
    assert sorted(os.listdir(result.folder)) == ["gates.json", "model.bin", "model.xml"]
    assert result.parity.passed and len(result.parity.cases) == len(TEST_CASES)
    assert result.functional.passed
    meta = xo.read_openvino_metadata(result.xml)
    assert meta["format"] == xo.FORMAT_NAME and meta["precision"] == "fp32"
    assert meta["inference_precision"] == "f32" and meta["noise_mode"] == "seeded"
    assert meta["source_sha256"].startswith("unknown") and meta["palette_size"] == "9"
    assert result.fp32_nodes == 0
    # Runs through load_engine at a batch and size the gate never saw, and matches eager fp32.
    runner = load_engine(result.xml)
    assert isinstance(runner, xo.OpenVinoRunner)
    inputs = example_inputs("seeded", 3, 128, 384, seed=5)
    out = runner.run(*inputs)
    assert out.shape == (3, 3, 128, 384)
    assert_as_close_as_eager(out, generator, generator_input(*inputs[:2]), eager_noise("seeded", inputs, 128, 384))
    # The folder itself loads too, and per-sample seeds make an image independent of its batch.
    alone = xo.OpenVinoRunner(result.folder).run(inputs[0][1:2], inputs[1][1:2], inputs[2][1:2])
    assert torch.allclose(alone, out[1:2], atol=1e-4)


def test_async_requests_run_each_picture_alone_at_once(ov_exports, generator):
    """requests=N (what colorize serve loads): a batch's pictures go as single-picture requests through an
    AsyncInferQueue, so each comes out bit for bit as it does alone, whatever its companions, and as close
    to eager fp32 as the latency runner."""
    result = ov_exports("fp32")
    queued = xo.OpenVinoRunner(result.xml, requests=2)
    assert queued.requests == 2 and queued.queue is not None
    inputs = example_inputs("seeded", 3, 128, 128, seed=11)
    together = queued.run(*inputs)
    for i in (2, 0):
        alone = queued.run(*(t[i : i + 1] for t in inputs))
        assert torch.equal(alone, together[i : i + 1]), i
    assert_as_close_as_eager(together, generator, generator_input(*inputs[:2]), eager_noise("seeded", inputs, 128, 128))
    assert xo.OpenVinoRunner(result.xml, requests="auto").requests >= 1
    with pytest.raises(ConfigError, match="requests"):
        xo.OpenVinoRunner(result.xml, requests=0)


def test_bf16_keeps_marked_groups_in_fp32(ov_exports):
    result = ov_exports("bf16")
    assert result.parity.passed and result.functional.passed
    assert result.keep_fp32 == xo.DEFAULT_KEEP_FP32 and result.fp32_nodes > 0
    runner = xo.OpenVinoRunner(result.xml)
    assert runner.metadata["inference_precision"] == "bf16"
    assert xo.count_fp32_marks(runner.model) == result.fp32_nodes
    groups = xo.node_groups(runner.model)
    assert all(groups[g] for g in xo.KEEP_FP32)
    # What the plugin really runs: convolutions in bf16 (where the CPU has it), the kept ones in f32.
    runtime = {
        op.get_friendly_name(): op.get_rt_info()["runtimePrecision"].astype(str)
        for op in runner.compiled.get_runtime_model().get_ordered_ops()
    }
    kept = set().union(*(groups[g] for g in result.keep_fp32))
    kept_convs = [n for n in kept if n in runtime and "Conv" in n]
    assert kept_convs and all(runtime[n] == "f32" for n in kept_convs)
    if xo.openvino_has_bf16():  # the one check of OpenVINO's bf16 hardware
        assert any(p == "bf16" for p in runtime.values())
        assert not any("not faster" in note for note in result.notes)


def test_verify_artifact_rechecks_the_folder_or_its_xml(ov_exports, generator):
    """An existing IR is re-checked with the row's verifier, at the precision its rt_info records."""
    from colorizer.export import verify_artifact
    from colorizer.testing import LOW_PRECISION_GATES

    for precision, which in (("fp32", "folder"), ("bf16", "xml")):
        result = ov_exports(precision)
        before = sorted(os.listdir(result.folder))
        report = verify_artifact(getattr(result, which), generator, cases=TEST_CASES[:1])
        assert report.passed and report.artifact == result.xml
        assert [c.backend for c in report.cases] == [f"openvino:{precision}"]
        assert report.factor == LOW_PRECISION_GATES[precision]
        # The builder's gate on the same inputs (OpenVINO compiled again: the same numbers, up to threading).
        assert report.cases[0].error == pytest.approx(result.parity.cases[0].error, rel=1e-2)
        assert report.cases[0].reference_error == result.parity.cases[0].reference_error
        assert sorted(os.listdir(result.folder)) == before


def test_parity_header_states_the_factor_applied(ov_exports, generator):
    """int8's gate allows 4x eager autocast bf16's error, bf16's 2x: the report's header says which."""
    from colorizer.export.verify import ERROR_FLOOR
    from colorizer.testing import LOW_PRECISION_GATES, WHOLE_MODEL_ERROR_FACTOR

    runner = xo.OpenVinoRunner(ov_exports("fp32").xml)
    report = xo.verify_openvino(runner, generator, precision="int8", cases=TEST_CASES[:1])
    assert report.factor == LOW_PRECISION_GATES["int8"] != WHOLE_MODEL_ERROR_FACTOR
    head = report.format().splitlines()[0]
    assert head.endswith(f"allowed = {LOW_PRECISION_GATES['int8']}x eager autocast bfloat16)"), head
    case = report.cases[0]
    assert case.allowed == LOW_PRECISION_GATES["int8"] * max(case.reference_error, ERROR_FLOOR)
    bf16 = ov_exports("bf16").parity.format().splitlines()[0]
    assert bf16.endswith(f"allowed = {LOW_PRECISION_GATES['bf16']}x eager autocast bfloat16)"), bf16
    fp32 = ov_exports("fp32").parity.format().splitlines()[0]
    assert fp32.endswith(f"allowed = {LOW_PRECISION_GATES['fp32']}x eager fp32)"), fp32


def test_mark_fp32_writes_the_precise_attribute(ov_exports, tmp_path):
    result = ov_exports("bf16")
    tree = ET.parse(result.xml)
    marked = [
        layer.get("name")
        for layer in tree.getroot().iter("layer")
        if any(a.get("name") == xo.PRECISE_ATTRIBUTE for a in layer.iter("attribute"))
    ]
    assert len(marked) == result.fp32_nodes


def _perturb_convolutions(monkeypatch, scale: float):
    """Make convert_onnx return a broken engine: every convolution weight scaled (a wrong quantizer)."""
    import openvino.opset13 as ops

    real = xo.convert_onnx

    def broken(path):
        model = real(path)
        for op in model.get_ordered_ops():
            if op.get_type_name() == "Convolution":
                weight = op.input_value(1).get_node()
                if weight.get_type_name() == "Constant":
                    op.input(1).replace_source_output(ops.constant(weight.get_data() * scale).output(0))
        return model

    monkeypatch.setattr(xo, "convert_onnx", broken)


def _cli(checkpoint, folder, capsys, *extra):
    code = main(["--checkpoint", checkpoint, "--openvino", str(folder), "--noise", "zero", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _fast_cli(monkeypatch, exported):
    from colorizer.export import verify

    reuse_traced_graph(monkeypatch, exported("zero").path)
    monkeypatch.setattr(verify, "DEFAULT_CASES", TEST_CASES)
    monkeypatch.setattr(xo, "FUNCTIONAL_COUNT", 4)
    monkeypatch.setattr(xo, "FUNCTIONAL_SIZE", 128)


def test_cli_fp32_then_colorize_and_eval(checkpoint, exported, tmp_path, capsys, monkeypatch):
    _fast_cli(monkeypatch, exported)
    folder = tmp_path / "ov"
    code, out, err = _cli(checkpoint, folder, capsys)
    assert code == 0, err
    assert f"wrote {folder / 'model.xml'}" in out and "functional gate" in err and "FAIL" not in err
    assert xo.read_openvino_metadata(str(folder / "model.xml"))["noise_mode"] == "zero"
    # colorize --engine DIR/model.xml
    from importlib.resources import files

    from colorizer.cli import main as colorizer_main
    from colorizer.data.images import load_image

    sketch = str(files("colorizer.assets") / "demo_sketch.png")
    out_png = tmp_path / "out.png"
    argv = ["colorize", "--engine", str(folder / "model.xml"), "--sketch", sketch, "--palette", "#e0a0a0,#304070"]
    assert colorizer_main([*argv, "--out", str(out_png)]) == 0
    assert load_image(str(out_png)).shape[:2] == load_image(sketch).shape[:2]
    # colorizer eval reads the engine as any other
    from colorizer.evaluation import evaluate

    report = evaluate(str(folder / "model.xml"), count=2, size=128, device="cpu")
    assert report.settings["model_kind"] == "engine" and report.metrics["l1"] is not None


def test_broken_engine_fails_numerical_gate_exit_3_no_files(checkpoint, exported, tmp_path, capsys, monkeypatch):
    _fast_cli(monkeypatch, exported)
    _perturb_convolutions(monkeypatch, 1.5)
    # fp32: its gate is tight (2x eager fp32's ~1e-4); on random weights bf16's is loose (2x autocast's ~0.6).
    code, out, err = _cli(checkpoint, tmp_path / "ov", capsys)
    assert code == 3, err
    assert err.strip().splitlines()[-1].startswith("error:") and "parity gate" in err
    assert os.listdir(tmp_path) == []


def test_broken_engine_fails_functional_gate_exit_3_no_files(checkpoint, exported, tmp_path, capsys, monkeypatch):
    _fast_cli(monkeypatch, exported)
    _perturb_convolutions(monkeypatch, -1.0)  # flips every convolution: a wrong sign in a quantizer
    # Let the numerical gate pass anything, so the functional gate is the one that must catch it.
    from colorizer import testing

    monkeypatch.setitem(testing.LOW_PRECISION_GATES, "fp32", 1e9)
    code, out, err = _cli(checkpoint, tmp_path / "ov", capsys)
    assert code == 3, err
    assert "functional gate" in err.strip().splitlines()[-1]
    assert os.listdir(tmp_path) == []


def test_missing_openvino_is_one_line_exit_2(checkpoint, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    code, out, err = _cli(checkpoint, tmp_path / "ov", capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: --openvino:") and "pip install" in lines[0]
    assert os.listdir(tmp_path) == []


def test_bad_openvino_options_one_line_each(checkpoint, tmp_path, capsys):
    for extra, expect in (
        (["--precision", "fp16"], "--openvino takes fp32, bf16, int8"),
        (["--keep-fp32", "norms"], "unknown fp32 node group"),
        (["--calibration", str(tmp_path)], "only used with"),
        (["--precision", "int8", "--calibration", str(tmp_path / "nope")], "not a folder"),
    ):
        code, out, err = _cli(checkpoint, tmp_path / "ov", capsys, *extra)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and expect in lines[0], (extra, err)
    assert os.listdir(tmp_path) == []


def test_runner_rejects_foreign_ir(tmp_path):
    import openvino as ov
    import openvino.opset13 as ops

    p = ops.parameter([1, 3], ov.Type.f32, name="x")
    ov.save_model(ov.Model([ops.relu(p)], [p]), str(tmp_path / "model.xml"))
    from colorizer.errors import ConfigError

    with pytest.raises(ConfigError, match="not a colorizer OpenVINO export"):
        load_engine(str(tmp_path / "model.xml"))


def test_calibration_samples_feed_the_graph_inputs():
    samples = xo.calibration_samples("seeded", count=2, size=128)
    assert len(samples) == 2
    assert set(samples[0]) == {"sketch", "palette", "seed"}
    assert samples[0]["sketch"].shape == (1, 3, 128, 128) and samples[0]["palette"].shape == (1, 9, 3)
    assert np.abs(samples[1]["palette"]).max() <= 1.0 and samples[1]["seed"].dtype == np.int32
