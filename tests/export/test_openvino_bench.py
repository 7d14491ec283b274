"""benchmarks.bench_precision runs end to end in quick mode and its floors use each precision's rate."""

import json

import pytest

pytest.importorskip("openvino")

from benchmarks import bench_precision  # noqa: E402
from benchmarks.ceilings import Ceilings, Work, floor_seconds  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_quick_run_writes_rows_for_every_requested_provider(tmp_path):
    providers = "eager,onnxruntime,onnxruntime-tuned,openvino-fp32,openvino-bf16"
    assert bench_precision.main(["--quick", "--out", str(tmp_path), "--providers", providers]) == 0
    report = json.loads((tmp_path / "precision_speed.json").read_text())
    rows = {r["provider"]: r for r in report["rows"]}
    assert list(rows) == providers.split(",")
    assert all(r["status"] == "ok" for r in rows.values()), [r["reason"] for r in rows.values()]
    assert rows["openvino-bf16"]["precision"] == "bfloat16"
    assert rows["eager"]["vs_reference"] == pytest.approx(1.0)
    # The fp32 engines compute what eager fp32 computes (same weights, input and noise maps; ~1e-3 on
    # random weights, where bf16 is ~0.6).
    for name in ("onnxruntime", "onnxruntime-tuned", "openvino-fp32"):
        assert rows[name]["rel_l2_vs_eager_fp32"] < 1e-2, name
    assert "float32" in report["ceilings"]["matmul_flops_per_s"]
    assert report["engine_versions"]["openvino"]
    assert "openvino-bf16" in (tmp_path / "precision_speed.md").read_text()


def test_unknown_provider_is_one_line_exit_2(tmp_path, capsys):
    assert bench_precision.main(["--quick", "--out", str(tmp_path), "--providers", "openvino-fp8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "openvino-fp8" in err[0]


def test_floor_uses_the_rate_of_the_row_precision():
    ceilings = Ceilings("cpu", matmul_flops_per_s={"float32": 1e11, "bfloat16": 4e11, "int8": 8e11})
    ceilings.copy_bytes_per_s = 1e12
    work = Work(flops=1e11, bytes=1.0, eager_bytes=1.0, items=1)
    assert floor_seconds(work, ceilings, "float32")[0] == pytest.approx(1.0)
    assert floor_seconds(work, ceilings, "bfloat16")[0] == pytest.approx(0.25)
    assert floor_seconds(work, ceilings, "int8")[0] == pytest.approx(0.125)
