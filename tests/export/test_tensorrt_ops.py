"""Without TensorRT: the exported graphs use only ops (and tensor types) the TensorRT ONNX parser supports."""

import json
import os

import onnx
import pytest

import colorizer.export
from colorizer.errors import ConfigError, MissingDependencyError
from colorizer.export.tensorrt import ShapeRange, _gate_cases, profile_shapes, require_tensorrt, tensorrt_missing

OPS_FILE = os.path.join(os.path.dirname(colorizer.export.__file__), "tensorrt_onnx_ops.json")
TYPE_NAMES = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.BOOL: "BOOL",
}


def load_support():
    with open(OPS_FILE) as f:
        return json.load(f)


def test_support_list_records_its_source():
    doc = load_support()
    assert doc["tensorrt_version"].startswith("10.")
    assert doc["source"].startswith("https://github.com/onnx/onnx-tensorrt/")
    assert doc["opset_min"] <= 18 <= doc["opset_max"]
    assert "Conv" in doc["operators"] and "BitShift" not in doc["operators"]


@pytest.mark.parametrize("noise", ["seeded", "zero", "input"])
def test_every_exported_op_and_type_is_supported_by_tensorrt(exported, noise):
    doc = load_support()
    model = onnx.shape_inference.infer_shapes(onnx.load(exported(noise).path))
    assert model.opset_import[0].version <= doc["opset_max"]
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input)}
    types |= {i.name: i.data_type for i in model.graph.initializer}
    unsupported, bad_types = set(), set()
    for node in model.graph.node:
        if node.op_type not in doc["operators"]:
            unsupported.add(node.op_type)
            continue
        for name in node.input:  # the parser's type column is about an op's inputs
            t = types.get(name)
            if t is not None and TYPE_NAMES.get(t, str(t)) not in doc["operators"][node.op_type]:
                bad_types.add((node.op_type, TYPE_NAMES.get(t, str(t))))
    assert not unsupported, f"ops TensorRT {doc['tensorrt_version']} cannot parse: {sorted(unsupported)}"
    assert not bad_types, f"op/type pairs TensorRT does not list: {sorted(bad_types)}"


def test_without_tensorrt_the_reason_is_one_line():
    reason = tensorrt_missing()
    if reason is None:
        pytest.skip("TensorRT and a GPU are available here")
    assert "\n" not in reason and ("pip install tensorrt" in reason or "GPU" in reason)
    with pytest.raises(MissingDependencyError):
        require_tensorrt()


def test_shape_range_parsing_and_profile():
    assert ShapeRange.parse("1:4:8", "batch") == ShapeRange(1, 4, 8)
    assert ShapeRange.parse("2", "batch") == ShapeRange(2, 2, 2)
    for bad in ("0:1:2", "4:2:8", "1:2", "a:b:c"):
        with pytest.raises(ConfigError):
            ShapeRange.parse(bad, "batch")
    names = ["sketch", "palette", "seed", "noise0", "noise7"]
    shapes = profile_shapes(names, ShapeRange(1, 2, 4), ShapeRange(256, 512, 1024))
    assert shapes["sketch"] == {"min": [1, 3, 256, 256], "opt": [2, 3, 512, 512], "max": [4, 3, 1024, 1024]}
    assert shapes["palette"]["max"] == [4, 9, 3] and shapes["seed"]["opt"] == [2]
    assert shapes["noise7"]["min"] == [1, 1, 2, 2] and shapes["noise0"]["max"] == [4, 1, 1024, 1024]
    cases = _gate_cases(ShapeRange(1, 2, 4), ShapeRange(256, 512, 1024))
    assert {c[0] for c in cases} == {1, 2} and {c[1] for c in cases} | {c[2] for c in cases} == {256}
