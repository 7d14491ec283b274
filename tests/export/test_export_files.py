"""Exported files get the usual umask-respecting mode (issue 12, item 18: .onnx files were 0600)."""

import os

import pytest

from colorizer.atomic import current_umask
from colorizer.export.artifact import atomic_output


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_output_respects_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        with atomic_output(str(tmp_path / "model.onnx"), "ONNX file") as tmp:
            with open(tmp, "wb") as f:
                f.write(b"graph")
    finally:
        os.umask(old)
    assert (tmp_path / "model.onnx").stat().st_mode & 0o777 == 0o666 & ~mask
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_exported_onnx_file_is_world_readable_under_umask_022(tmp_path, generator):
    from colorizer.export import export_onnx
    from tests.export.conftest import TEST_CASES

    old = os.umask(0o022)
    try:
        result = export_onnx(generator, str(tmp_path / "g.onnx"), noise="zero", cases=TEST_CASES[:1])
    finally:
        os.umask(old)
    assert os.stat(result.path).st_mode & 0o777 == 0o644


def test_export_accepts_a_training_run_folder(tmp_path, generator, capsys, monkeypatch):
    """`colorizer-export --checkpoint RUN_FOLDER` said the folder does not exist (issue 12, item 14)."""
    from colorizer.checkpoint import CheckpointManager, save_generator
    from colorizer.export import onnx_export
    from colorizer.export.cli import main
    from tests.export.conftest import TEST_CASES

    run = tmp_path / "run"
    manager = CheckpointManager(str(run / "checkpoints"))
    (run / "checkpoints").mkdir(parents=True)
    save_generator(manager.path_for(7), generator)
    real = onnx_export.export_onnx
    monkeypatch.setattr(
        "colorizer.export.onnx_export.export_onnx", lambda *a, **k: real(*a, **{**k, "cases": TEST_CASES[:1]})
    )  # one parity case keeps the test fast
    code = main(["--checkpoint", str(run), "--onnx", str(tmp_path / "m.onnx"), "--noise", "zero"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (tmp_path / "m.onnx").is_file()
    empty = tmp_path / "empty_run"
    empty.mkdir()
    code = main(["--checkpoint", str(empty), "--onnx", str(tmp_path / "n.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"error: {empty}: no readable checkpoint in this folder"


def test_export_accepts_a_bundled_model_name(tmp_path, capsys, monkeypatch):
    """`colorizer-export --checkpoint demo` exports the bundled model, as colorize and eval take it by name."""
    import json

    import onnx

    from colorizer import pretrained
    from colorizer.export import onnx_export
    from colorizer.export.cli import main
    from tests.export.conftest import TEST_CASES

    real = onnx_export.export_onnx
    monkeypatch.setattr(
        "colorizer.export.onnx_export.export_onnx", lambda *a, **k: real(*a, **{**k, "cases": TEST_CASES[:1]})
    )
    code = main(["--checkpoint", "demo", "--onnx", str(tmp_path / "demo.onnx"), "--noise", "zero"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "demo.onnx"), load_external_data=False).metadata_props}
    assert pretrained.sha256_of(pretrained.weights_path("demo")) in json.dumps(meta)
    code = main(["--checkpoint", "no_such_model", "--onnx", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    # One line naming what was given and the bundled names (the wording is colorizer.runtime's).
    assert code == 2 and err.count("\n") == 1 and "no_such_model" in err and "bundled model" in err and "demo" in err
    assert not (tmp_path / "x.onnx").exists()


def test_atomic_directory_gets_the_umask_mode_of_a_plain_mkdir(tmp_path):
    """OpenVINO folders were 0700 (mkdtemp's mode), unreadable for a server running as another user."""
    from colorizer.export.artifact import atomic_directory

    old = os.umask(0o022)
    try:
        with atomic_directory(str(tmp_path / "ov"), "OpenVINO folder") as tmp:
            with open(os.path.join(tmp, "model.xml"), "w") as f:
                f.write("<net/>")
    finally:
        os.umask(old)
    assert (tmp_path / "ov").stat().st_mode & 0o777 == 0o755
    assert sorted(os.listdir(tmp_path)) == ["ov"]
