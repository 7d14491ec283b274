"""colorizer-export end to end on a small checkpoint, and its one-line errors."""

import os
import subprocess
import sys

import onnxruntime as ort
import pytest
import torch

from colorizer.export.cli import main
from colorizer.export.tensorrt import tensorrt_missing
from colorizer.models import Color2Sketch
from tests.export.conftest import SMALL, reuse_traced_graph

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def run_main(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_checkpoint_to_onnx_and_triton_repo(checkpoint, exported, tmp_path, capsys, monkeypatch):
    from colorizer.export import verify

    # Keep the gate (two sizes, two batch sizes) but at the test's cheapest sizes; the checkpoint
    # holds the fixture generator, whose graph is already traced (tracing has its own tests).
    monkeypatch.setattr(verify, "DEFAULT_CASES", ((1, 128, 256), (2, 128, 128)))
    reuse_traced_graph(monkeypatch, exported("zero").path)
    onnx_path = tmp_path / "g.onnx"
    repo = tmp_path / "repo"
    code, out, err = run_main(
        ["--checkpoint", checkpoint, "--onnx", str(onnx_path), "--noise", "zero", "--triton-repo", str(repo)],
        capsys,
    )
    assert code == 0, err
    assert f"wrote {onnx_path}" in out and "Triton model repository" in out
    assert "parity of" in err and "FAIL" not in err
    assert (repo / "colorizer_onnx" / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    assert not (repo / "colorizer_tensorrt").exists()  # no plan without TensorRT
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    import hashlib

    assert meta["source_sha256"] == hashlib.sha256(open(checkpoint, "rb").read()).hexdigest()
    assert sorted(os.listdir(tmp_path)) == ["g.onnx", "repo"]


@pytest.mark.skipif(tensorrt_missing() is None, reason="TensorRT and a GPU are available here")
def test_trt_without_tensorrt_exits_2_with_one_line_and_writes_nothing(checkpoint, tmp_path, capsys):
    code, out, err = run_main(
        ["--checkpoint", checkpoint, "--onnx", str(tmp_path / "g.onnx"), "--trt", str(tmp_path / "g.plan")], capsys
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --trt:")
    assert "TensorRT" in lines[0] and ("pip install tensorrt" in lines[0] or "GPU" in lines[0])
    assert os.listdir(tmp_path) == []


def _one_line_error(argv, capsys, tmp_path, expect):
    code, out, err = run_main(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], err
    return lines[0]


def test_bad_inputs_one_line_each(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "g.onnx")
    # A size that is not a multiple of 128.
    _one_line_error(["--checkpoint", checkpoint, "--onnx", out, "--size", "200:256:512"], capsys, tmp_path, "128")
    # An opset too old for the graph.
    _one_line_error(["--checkpoint", checkpoint, "--onnx", out, "--opset", "9"], capsys, tmp_path, "too old")
    # An unwritable output path (its folder does not exist; root ignores permission bits).
    missing = str(tmp_path / "nope" / "g.onnx")
    _one_line_error(["--checkpoint", checkpoint, "--onnx", missing], capsys, tmp_path, "does not exist")
    # A checkpoint of the wrong kind: a Color2Sketch generator, then a file that is no checkpoint.
    c2s = tmp_path / "c2s.pth"
    torch.save({"netG": Color2Sketch(channels=SMALL).state_dict()}, c2s)
    _one_line_error(["--checkpoint", str(c2s), "--onnx", out], capsys, tmp_path, "Sketch2Color")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    _one_line_error(["--checkpoint", str(junk), "--onnx", out], capsys, tmp_path, "junk.pth")
    _one_line_error(["--checkpoint", checkpoint], capsys, tmp_path, "nothing to do")
    assert sorted(os.listdir(tmp_path)) == ["c2s.pth", "junk.pth"]


def test_parity_failure_exit_code_and_no_file(checkpoint, exported, tmp_path, capsys, monkeypatch):
    from colorizer.export import verify

    reuse_traced_graph(monkeypatch, exported("zero").path)
    monkeypatch.setattr(verify, "DEFAULT_CASES", ((1, 128, 128),))
    monkeypatch.setattr(verify, "WHOLE_MODEL_ERROR_FACTOR", 1e-9)  # no export can pass this gate
    monkeypatch.setattr(verify, "ERROR_FLOOR", 0.0)
    argv = ["--checkpoint", checkpoint, "--onnx", str(tmp_path / "g.onnx"), "--noise", "zero"]
    code, out, err = run_main(argv, capsys)
    assert code == 3
    assert err.strip().splitlines()[-1].startswith("error:") and "parity gate" in err
    assert os.listdir(tmp_path) == []


def test_console_script_formats_table():
    exe = os.path.join(os.path.dirname(sys.executable), "colorizer-export")
    result = subprocess.run([exe, "--formats"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "onnx" in result.stdout and "tensorrt" in result.stdout and "triton" in result.stdout
