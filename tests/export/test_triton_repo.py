"""The Triton model repository, parsed with Triton's own ModelConfig message (from tritonclient)."""

import os
import shutil

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


def test_rewrite_replaces_only_our_model_folder_and_rejects_non_exports(exported, tmp_path):
    repo = tmp_path / "repo"
    write_triton_repo(str(repo), exported("seeded").path, max_batch_size=2)
    (repo / "other_model" / "1").mkdir(parents=True)  # someone else's model in a shared repository
    (repo / "other_model" / "config.pbtxt").write_text('name: "other_model"\n')
    (repo / "notes.txt").write_text("keep me")
    write_triton_repo(str(repo), exported("seeded").path, max_batch_size=4)
    assert sorted(os.listdir(repo)) == [ONNX_MODEL_NAME, "notes.txt", "other_model"]
    assert (repo / "notes.txt").read_text() == "keep me"
    assert (repo / "other_model" / "config.pbtxt").read_text() == 'name: "other_model"\n'
    assert parse(repo / ONNX_MODEL_NAME / "config.pbtxt").max_batch_size == 4
    with pytest.raises(ConfigError):
        write_triton_repo(str(tmp_path / "missing" / "repo"), exported("seeded").path)


def test_repository_in_a_project_folder_deletes_nothing(exported, tmp_path, monkeypatch):
    """`--triton-repo .` inside a project folder used to rmtree the whole folder."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('mine')\n")
    (tmp_path / "README").write_text("project")
    monkeypatch.chdir(tmp_path)
    write_triton_repo(".", exported("zero").path, max_batch_size=2)
    assert sorted(os.listdir(tmp_path)) == ["README", ONNX_MODEL_NAME, "src"]
    assert (tmp_path / "src" / "train.py").read_text() == "print('mine')\n"


def test_same_name_folder_with_other_content_is_refused_untouched(exported, tmp_path):
    repo = tmp_path / "repo"
    mine = repo / ONNX_MODEL_NAME
    (mine / "1").mkdir(parents=True)
    (mine / "1" / "model.onnx").write_bytes(b"hand-made model")
    (mine / "config.pbtxt").write_text('name: "colorizer_onnx"\nbackend: "onnxruntime"\n')
    (mine / "labels.txt").write_text("cat\n")
    with pytest.raises(ConfigError, match="not a colorizer_onnx model written by colorizer-export"):
        write_triton_repo(str(repo), exported("seeded").path)
    assert (mine / "1" / "model.onnx").read_bytes() == b"hand-made model"
    assert sorted(os.listdir(repo)) == [ONNX_MODEL_NAME]  # no temporary folder left
    (repo / TENSORRT_MODEL_NAME).write_text("a file, not a folder")
    plan = tmp_path / "g.plan"
    plan.write_bytes(b"engine")
    shutil.rmtree(mine)
    with pytest.raises(ConfigError, match=TENSORRT_MODEL_NAME):
        write_triton_repo(str(repo), exported("seeded").path, str(plan))
    assert (repo / TENSORRT_MODEL_NAME).read_text() == "a file, not a folder"
    assert sorted(os.listdir(repo)) == [TENSORRT_MODEL_NAME]  # the ONNX model was not written either


def test_failed_replace_keeps_the_previous_model(exported, tmp_path, monkeypatch):
    from colorizer.export import triton_repo

    repo = tmp_path / "repo"
    write_triton_repo(str(repo), exported("seeded").path, max_batch_size=2)
    before = (repo / ONNX_MODEL_NAME / "config.pbtxt").read_text()

    def broken_copy(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(triton_repo.shutil, "copyfile", broken_copy)
    with pytest.raises(ConfigError, match="No space left"):
        write_triton_repo(str(repo), exported("seeded").path, max_batch_size=4)
    assert (repo / ONNX_MODEL_NAME / "config.pbtxt").read_text() == before
    assert sorted(os.listdir(repo)) == [ONNX_MODEL_NAME]


def test_repository_files_are_readable_by_others(exported, tmp_path):
    old = os.umask(0o022)
    try:
        write_triton_repo(str(tmp_path / "repo"), exported("seeded").path)
    finally:
        os.umask(old)
    model = tmp_path / "repo" / ONNX_MODEL_NAME
    assert (model / "1" / "model.onnx").stat().st_mode & 0o777 == 0o644
    assert (model / "config.pbtxt").stat().st_mode & 0o777 == 0o644
    assert model.stat().st_mode & 0o777 == 0o755 and (model / "1").stat().st_mode & 0o777 == 0o755


def test_openvino_row_parses_as_triton_model_config_and_copies_both_ir_files(exported, tmp_path):
    from colorizer.export.triton_repo import OPENVINO_MODEL_NAME

    ir = tmp_path / "ov"
    ir.mkdir()
    (ir / "model.xml").write_text("<net/>")  # the repository only copies the IR's two files
    (ir / "model.bin").write_bytes(b"weights")
    repo = tmp_path / "repo"
    configs = write_triton_repo(
        str(repo), exported("seeded").path, openvino_xml=str(ir / "model.xml"), max_batch_size=4
    )
    assert [os.path.basename(os.path.dirname(c)) for c in configs] == [ONNX_MODEL_NAME, OPENVINO_MODEL_NAME]
    cfg = parse(repo / OPENVINO_MODEL_NAME / "config.pbtxt")
    assert cfg.backend == "openvino" and cfg.name == OPENVINO_MODEL_NAME and cfg.max_batch_size == 4
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert {i.name for i in cfg.input} >= {"sketch", "palette", "seed"}
    assert cfg.parameters["noise_mode"].string_value == "seeded"
    assert (repo / OPENVINO_MODEL_NAME / "1" / "model.bin").read_bytes() == b"weights"
    assert sorted(os.listdir(repo / OPENVINO_MODEL_NAME / "1")) == ["model.bin", "model.xml"]
    # A second export replaces our folder; a same-name folder that is not ours is refused.
    write_triton_repo(str(repo), exported("seeded").path, openvino_xml=str(ir / "model.xml"), max_batch_size=2)
    assert parse(repo / OPENVINO_MODEL_NAME / "config.pbtxt").max_batch_size == 2
    (repo / OPENVINO_MODEL_NAME / "1" / "model.bin").unlink()
    (repo / OPENVINO_MODEL_NAME / "1" / "other.txt").write_text("someone else's")
    with pytest.raises(ConfigError, match="colorizer_openvino exists and is not"):
        write_triton_repo(str(repo), exported("seeded").path, openvino_xml=str(ir / "model.xml"))
