"""The Triton model repository, parsed with Triton's own ModelConfig message (from tritonclient)."""

import os

import pytest
from google.protobuf import text_format

from colorizer.errors import ConfigError
from colorizer.export.triton_repo import ONNX_MODEL_NAME, TENSORRT_MODEL_NAME, write_triton_repo

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")


def parse(path):
    with open(path) as f:
        return text_format.Parse(f.read(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("noise", ["seeded", "input"])
def test_repository_configs_parse_as_triton_model_config(exported, tmp_path, noise):
    onnx_path = exported(noise).path
    plan = tmp_path / "g.plan"
    plan.write_bytes(b"engine bytes")  # the repository only copies the plan
    repo = tmp_path / "repo"
    configs = write_triton_repo(str(repo), onnx_path, str(plan), max_batch_size=8, preferred_batch_sizes=(4, 8))
    assert len(configs) == 2
    for path in configs:
        assert os.path.isfile(path)
        cfg = parse(path)
        assert cfg.max_batch_size == 8
        assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
        inputs = {i.name: i for i in cfg.input}
        assert list(inputs["sketch"].dims) == [3, -1, -1]
        assert list(inputs["palette"].dims) == [9, 3]
        assert inputs["sketch"].data_type == model_config_pb2.TYPE_FP32
        (out,) = cfg.output
        assert out.name == "image" and list(out.dims) == [3, -1, -1]
        assert cfg.parameters["noise_mode"].string_value == noise
        if noise == "seeded":
            assert inputs["seed"].data_type == model_config_pb2.TYPE_INT32
            assert list(inputs["seed"].dims) == [1] and list(inputs["seed"].reshape.shape) == []
        else:
            assert [n for n in inputs if n.startswith("noise")] == [f"noise{k}" for k in range(7, -1, -1)]
            assert list(inputs["noise0"].dims) == [1, -1, -1]
    onnx_cfg = parse(repo / ONNX_MODEL_NAME / "config.pbtxt")
    trt_cfg = parse(repo / TENSORRT_MODEL_NAME / "config.pbtxt")
    assert onnx_cfg.backend == "onnxruntime" and onnx_cfg.name == ONNX_MODEL_NAME
    assert trt_cfg.platform == "tensorrt_plan" and trt_cfg.name == TENSORRT_MODEL_NAME
    assert trt_cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (repo / TENSORRT_MODEL_NAME / "1" / "model.plan").read_bytes() == b"engine bytes"
    assert sorted(os.listdir(tmp_path)) == ["g.plan", "repo"]  # no temporary folders left


def test_schema_error_would_be_caught():
    with pytest.raises(text_format.ParseError):
        text = 'name: "x"\nmax_batch_size: 8\ndynamic_batching { not_a_field: 1 }'
        text_format.Parse(text, model_config_pb2.ModelConfig())


def test_rewrite_replaces_repository_and_rejects_non_exports(exported, tmp_path):
    repo = tmp_path / "repo"
    write_triton_repo(str(repo), exported("seeded").path, max_batch_size=2)
    (repo / "stale").mkdir()
    write_triton_repo(str(repo), exported("seeded").path, max_batch_size=4)
    assert sorted(os.listdir(repo)) == [ONNX_MODEL_NAME]
    assert parse(repo / ONNX_MODEL_NAME / "config.pbtxt").max_batch_size == 4
    with pytest.raises(ConfigError):
        write_triton_repo(str(tmp_path / "missing" / "repo"), exported("seeded").path)
