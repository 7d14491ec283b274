"""colorizer-export never replaces or deletes what is not its own (issue 22): the overwrite rule of
every format, foreign files that look like ours, --precision that a format does not take, SIGTERM
and kill -9 during an export, two exports into one place."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import onnx
import pytest
from onnx import TensorProto, helper

from colorizer import atomic
from colorizer.errors import ConfigError
from colorizer.export import artifact, load_engine, verify_artifact
from colorizer.export import tensorrt as xt
from colorizer.export.cli import main
from colorizer.export.interface import FORMAT_NAME
from colorizer.export.onnx_export import is_own_onnx
from tests.export.conftest import TEST_CASES, reuse_traced_graph

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_main(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def foreign_onnx(path, metadata=None, palette=("N", 9, 3)) -> None:
    """An unrelated network whose inputs happen to be called sketch and palette (output: -sketch)."""
    inputs = [
        helper.make_tensor_value_info("sketch", TensorProto.FLOAT, ["N", 3, "H", "W"]),
        helper.make_tensor_value_info("palette", TensorProto.FLOAT, list(palette)),
    ]
    output = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph([helper.make_node("Neg", ["sketch"], ["image"])], "foreign", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


# ------------------------------------------------------------------------------------------------
# Item 4: an existing output is replaced only when it is an export of ours


def test_onnx_over_a_file_of_the_user_is_refused_before_any_work(checkpoint, tmp_path, capsys):
    notes = tmp_path / "notes.onnx"
    notes.write_text("my notes")
    foreign_onnx(tmp_path / "other.onnx")
    other = (tmp_path / "other.onnx").read_bytes()
    os.symlink(tmp_path / "other.onnx", tmp_path / "link.onnx")
    for target in ("notes.onnx", "other.onnx", "link.onnx"):
        code, out, err = run_main(["--checkpoint", checkpoint, "--onnx", str(tmp_path / target)], capsys)
        assert code == 2 and out == ""
        assert "is not an export of colorizer-export" in one_error_line(err)
    assert notes.read_text() == "my notes" and (tmp_path / "other.onnx").read_bytes() == other
    assert sorted(os.listdir(tmp_path)) == ["link.onnx", "notes.onnx", "other.onnx"]


def test_onnx_export_replaces_an_export_of_ours(generator, exported, tmp_path, monkeypatch):
    from colorizer.export import export_onnx

    reuse_traced_graph(monkeypatch, exported("zero").path)
    target = tmp_path / "model.onnx"
    shutil.copyfile(exported("zero").path, target)
    assert is_own_onnx(str(target))
    os.utime(target, (0, 0))
    export_onnx(generator, str(target), noise="zero", cases=TEST_CASES[:1])
    assert os.stat(target).st_mtime > 0 and is_own_onnx(str(target))
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_a_file_that_appears_during_the_export_is_not_replaced(generator, exported, tmp_path, monkeypatch):
    """The check before the work is repeated when the file is put in place (create-exclusive)."""
    from colorizer.export import export_onnx, onnx_export

    target = tmp_path / "model.onnx"
    real_finalize = onnx_export.finalize_graph

    def finalize_and_meanwhile_the_user_saves(path, *args, **kwargs):
        real_finalize(path, *args, **kwargs)
        target.write_text("saved by the user during the export")

    reuse_traced_graph(monkeypatch, exported("zero").path)
    monkeypatch.setattr(onnx_export, "finalize_graph", finalize_and_meanwhile_the_user_saves)
    with pytest.raises(ConfigError, match="created by someone else during the export"):
        export_onnx(generator, str(target), noise="zero", cases=TEST_CASES[:1])
    assert target.read_text() == "saved by the user during the export"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_foreign_plan_or_sidecar_is_refused_before_any_work(checkpoint, tmp_path, capsys):
    """A .plan of garbage (or anyone's) is not ours: a plan is ours only by its sidecar's format."""
    plan = tmp_path / "g.plan"
    plan.write_bytes(b"garbage, not an engine")
    with pytest.raises(ConfigError, match="TensorRT plan .* is not an export"):
        xt.check_plan_outputs(str(plan))
    (tmp_path / "g.plan.json").write_text(json.dumps({"precision": "fp16"}))  # a JSON of someone else
    with pytest.raises(ConfigError, match="is not an export"):
        xt.check_plan_outputs(str(plan))
    (tmp_path / "g.plan.json").write_text(json.dumps({"format": xt.SIDECAR_FORMAT, "precision": "fp16"}))
    xt.check_plan_outputs(str(plan))  # ours: may be rebuilt
    (tmp_path / "h.plan.json").write_text("{}")
    with pytest.raises(ConfigError, match="engine sidecar .* is not an export"):
        xt.check_plan_outputs(str(tmp_path / "h.plan"))
    # The CLI refuses before looking for TensorRT or loading the checkpoint.
    code, out, err = run_main(
        ["--checkpoint", checkpoint, "--onnx", str(tmp_path / "x.onnx"), "--trt", str(tmp_path / "h.plan")], capsys
    )
    assert code == 2 and "is not an export" in one_error_line(err)
    assert not (tmp_path / "x.onnx").exists()


def test_engine_io_check_refuses_a_foreign_engine():
    xt.check_engine_io("g.plan", ["sketch", "palette", "seed"], ["image"])
    xt.check_engine_io("g.plan", ["sketch", "palette"], ["image"])
    for inputs, outputs in ((["sketch", "palette", "mask"], ["image"]), (["sketch", "palette"], ["logits"])):
        with pytest.raises(ConfigError, match="not a colorizer export"):
            xt.check_engine_io("g.plan", inputs, outputs)


# ------------------------------------------------------------------------------------------------
# Items 6 + 9: engines are recognised by our metadata and shapes


def test_foreign_onnx_is_refused_by_load_engine_verify_and_eval(checkpoint, tmp_path, capsys):
    foreign_onnx(tmp_path / "foreign.onnx")
    # Our metadata copied onto a network of other shapes: refused by its tensors.
    foreign_onnx(tmp_path / "liar.onnx", {"format": FORMAT_NAME, "noise_mode": "zero"}, palette=("N", 4, 3))
    for name, expect in (("foreign.onnx", "no colorizer metadata"), ("liar.onnx", "palette is float32 (?, 4, 3)")):
        path = str(tmp_path / name)
        with pytest.raises(ConfigError, match="is not a colorizer export") as info:
            load_engine(path)
        assert expect in str(info.value)
        with pytest.raises(ConfigError, match="is not a colorizer export"):
            verify_artifact(path, checkpoint)
        code, out, err = run_main(["--verify", path, "--checkpoint", checkpoint], capsys)
        assert code == 2 and out == "" and expect in one_error_line(err)
        from colorizer.cli import main as colorizer_main

        code = colorizer_main(["eval", path, "--count", "2"])
        out, err = capsys.readouterr()
        assert code == 2 and expect in one_error_line(err)


# ------------------------------------------------------------------------------------------------
# Item 7: a precision the requested formats do not take


def test_precision_the_requested_formats_do_not_take_is_an_error(checkpoint, tmp_path, capsys):
    for argv, expect in (
        (["--onnx", str(tmp_path / "m.onnx"), "--precision", "int8"], "--onnx does not take a precision"),
        (["--triton-repo", str(tmp_path / "repo"), "--precision", "fp16"], "does not take a precision"),
        (["--openvino", str(tmp_path / "ov"), "--precision", "fp16"], "--openvino takes fp32, bf16, int8"),
    ):
        code, out, err = run_main(["--checkpoint", checkpoint, *argv], capsys)
        assert code == 2 and expect in one_error_line(err), err
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# Item 11: a refused later format says what was written


def test_refused_triton_repo_is_refused_before_the_onnx_is_written(checkpoint, tmp_path, capsys):
    (tmp_path / "repo" / "colorizer_onnx").mkdir(parents=True)
    (tmp_path / "repo" / "colorizer_onnx" / "notes.txt").write_text("mine")
    argv = ["--checkpoint", checkpoint, "--onnx", str(tmp_path / "g.onnx"), "--triton-repo", str(tmp_path / "repo")]
    code, out, err = run_main(argv, capsys)
    line = one_error_line(err)
    assert code == 2 and "is not a colorizer_onnx model written by colorizer-export" in line
    assert "nothing was written" in line and not (tmp_path / "g.onnx").exists()
    assert os.listdir(tmp_path / "repo" / "colorizer_onnx") == ["notes.txt"]


def test_a_later_format_refused_at_write_time_says_what_was_written(
    checkpoint, exported, tmp_path, capsys, monkeypatch
):
    from colorizer.export import triton_repo, verify

    monkeypatch.setattr(verify, "DEFAULT_CASES", TEST_CASES[:1])
    reuse_traced_graph(monkeypatch, exported("zero").path)
    real = triton_repo.cli_export
    repo = tmp_path / "repo"

    def someone_else_fills_the_repository(job):  # between the check and the write
        (repo / "colorizer_onnx").mkdir(parents=True)
        (repo / "colorizer_onnx" / "config.pbtxt").write_text("theirs")
        return real(job)

    monkeypatch.setattr(triton_repo, "cli_export", someone_else_fills_the_repository)
    onnx_path = tmp_path / "g.onnx"
    argv = ["--checkpoint", checkpoint, "--noise", "zero", "--onnx", str(onnx_path), "--triton-repo", str(repo)]
    code, out, err = run_main(argv, capsys)
    line = one_error_line(err.split("\n", err.count("\n") - 1)[-1])  # the gate's report comes first
    assert code == 2 and f"--triton-repo was not written; --onnx {onnx_path} was written and kept" in line
    assert "(nothing was written" not in line.replace(f"(nothing was written to {repo})", "")
    assert is_own_onnx(str(onnx_path)) and (repo / "colorizer_onnx" / "config.pbtxt").read_text() == "theirs"


# ------------------------------------------------------------------------------------------------
# Item 1 and the OpenVINO folder


@pytest.fixture()
def openvino():
    return pytest.importorskip("colorizer.export.openvino")


def test_openvino_export_keeps_the_users_files_and_refuses_foreign_ones(openvino, generator, exported, tmp_path):
    folder = tmp_path / "ov"
    folder.mkdir()
    (folder / "mine.txt").write_text("my notes")
    (folder / "sub").mkdir()
    kwargs = dict(onnx_path=exported("seeded").path, verify=False, functional=False)
    openvino.export_openvino(generator, str(folder), **kwargs)
    assert sorted(os.listdir(folder)) == ["gates.json", "mine.txt", "model.bin", "model.xml", "sub"]
    assert (folder / "mine.txt").read_text() == "my notes" and openvino.is_own_ir(str(folder / "model.xml"))
    assert json.loads((folder / "gates.json").read_text())["format"] == openvino.FORMAT_NAME
    openvino.export_openvino(generator, str(folder), **kwargs)  # an export of ours is replaced
    assert sorted(os.listdir(folder)) == ["gates.json", "mine.txt", "model.bin", "model.xml", "sub"]
    # A model.xml that is not ours (and the files beside it) is never replaced.
    (folder / "model.xml").write_text('<?xml version="1.0"?>\n<net name="theirs" version="11"></net>\n')
    before = {name: (folder / name).read_bytes() for name in ("model.xml", "model.bin", "gates.json")}
    with pytest.raises(ConfigError, match="holds a model.xml that is not part of an export"):
        openvino.export_openvino(generator, str(folder), **kwargs)
    assert {name: (folder / name).read_bytes() for name in before} == before
    (folder / "model.xml").unlink()
    with pytest.raises(ConfigError, match="holds a model.bin that is not part of an export"):
        openvino.check_ir_folder(str(folder))  # weights without our graph: someone else's
    # A new folder that a failed export created is removed again.
    with pytest.raises(ConfigError, match="only used with precision int8"):
        openvino.export_openvino(generator, str(tmp_path / "new"), calibration=str(tmp_path), **kwargs)
    assert sorted(os.listdir(tmp_path)) == ["ov"]


def test_two_exports_into_one_openvino_folder_take_turns(openvino, generator, exported, tmp_path, monkeypatch):
    """The files are put in place under the folder's lock: a second export waits for the first one
    to finish its swap, so the folder never ends up with one export's graph and the other's weights."""
    folder = tmp_path / "ov"
    kwargs = dict(onnx_path=exported("seeded").path, verify=False, functional=False)
    done = threading.Event()
    folder.mkdir()
    with artifact.folder_lock(str(folder)):
        worker = threading.Thread(
            target=lambda: (openvino.export_openvino(generator, str(folder), **kwargs), done.set())
        )
        worker.start()
        worker.join(timeout=20)
        assert not done.is_set()  # waiting for the lock, with its files built in a temporary folder
        assert not (folder / "model.xml").exists()
    worker.join(timeout=120)
    assert done.is_set() and sorted(os.listdir(folder)) == ["gates.json", "model.bin", "model.xml"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused_before_any_work(openvino, tmp_path):
    folder = tmp_path / "ov"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            openvino.check_ir_folder(str(folder))
    finally:
        folder.chmod(0o755)


def test_commit_waits_for_the_folder_lock(tmp_path):
    """Two exports into one folder: the second one's rename waits while the first holds the lock."""
    target = tmp_path / "m.onnx"
    tmp = tmp_path / ".m.onnx.p1_x.tmp.onnx"
    tmp.write_bytes(b"ours")
    finished = threading.Event()
    with artifact.folder_lock(str(tmp_path)):
        worker = threading.Thread(
            target=lambda: (artifact.commit_export(str(tmp), str(target), "ONNX file", is_own_onnx), finished.set())
        )
        worker.start()
        worker.join(timeout=0.5)
        assert not finished.is_set() and not target.exists()
    worker.join(timeout=30)
    assert finished.is_set() and target.read_bytes() == b"ours"


# ------------------------------------------------------------------------------------------------
# Item 10: SIGTERM cleans up like Ctrl-C; what kill -9 left is swept by the next export

CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from colorizer.export import openvino, verify
    from tests.export.conftest import TEST_CASES

    verify.DEFAULT_CASES = TEST_CASES[:1]

    def blocks(*args, **kwargs):  # the long functional gate: the IR is half done, the scratch full
        print("READY", flush=True)
        time.sleep(120)

    openvino.functional_gate = blocks
    from colorizer.export.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def ours(scratch) -> list[str]:
    """Our scratch folders in a system temp folder (libraries keep files of their own there)."""
    return [name for name in os.listdir(scratch) if name.startswith("colorizer-")]


def _start_export(tmp_path, checkpoint, folder):
    scratch = tmp_path / "systemp"
    scratch.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(scratch), OMP_NUM_THREADS="1")
    argv = ["--checkpoint", checkpoint, "--noise", "zero", "--openvino", str(folder)]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(repo=REPO), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    line = child.stdout.readline()
    assert line.strip() == "READY", child.communicate()
    temps = [n for n in os.listdir(folder) if atomic.is_temp_name(n)]
    assert temps and ours(scratch), "the export should be half way"
    return child, scratch


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_sigterm_during_an_openvino_export_cleans_up_and_kill_9_leftovers_are_swept(
    openvino, checkpoint, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "ov"
    folder.mkdir()
    (folder / "mine.txt").write_text("my notes")
    child, scratch = _start_export(tmp_path, checkpoint, folder)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "terminated"
    assert os.listdir(folder) == ["mine.txt"] and ours(scratch) == []
    assert sorted(os.listdir(tmp_path)) == ["ov", "systemp"]

    child, scratch = _start_export(tmp_path, checkpoint, folder)
    child.kill()  # kill -9: nothing runs, the temporaries stay
    child.communicate(timeout=60)
    left = [n for n in os.listdir(folder) if atomic.is_temp_name(n)]
    assert left and ours(scratch)
    # The next export into the same place sweeps them (here it then stops at a missing checkpoint).
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    code, out, err = run_main(["--checkpoint", str(tmp_path / "none.pth"), "--openvino", str(folder)], capsys)
    assert code == 2 and "left by an interrupted export" in err
    assert os.listdir(folder) == ["mine.txt"] and ours(scratch) == []


# ------------------------------------------------------------------------------------------------
# Item 18: a bf16 export on a CPU without bf16 hardware is right and says it is not faster


def test_bf16_export_without_bf16_hardware_says_so(openvino, generator, exported, tmp_path, monkeypatch):
    """Where OpenVINO's plugin compiles the bf16 IR to f32 convolutions (no AVX-512 BF16 or AMX) and
    torch has no fast bf16 (the gate's eager reference takes the slow path), the export still passes
    its gates and says both things; the CPU is stood in for, so the test runs on any machine."""
    monkeypatch.setattr("colorizer.hardware.cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(openvino.OpenVinoRunner, "runtime_precisions", lambda self: {"Convolution:f32": 9})
    with pytest.warns(openvino.PrecisionNote) as seen:
        result = openvino.export_openvino(
            generator, str(tmp_path / "ov"), precision="bf16", onnx_path=exported("seeded").path, verify=False,
            functional=False,
        )  # fmt: skip
    assert len(result.notes) == 2 and [str(w.message) for w in seen] == result.notes
    assert "slow path" in result.notes[0] and "not faster than --precision fp32" in result.notes[1]
    monkeypatch.undo()
    # Where both have bf16 there is nothing to say.
    monkeypatch.setattr("colorizer.hardware.cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(openvino.OpenVinoRunner, "runtime_precisions", lambda self: {"Convolution:bf16": 9})
    runner = openvino.OpenVinoRunner(result.xml)
    assert openvino.bf16_notes() == [] and openvino.bf16_notes(runner) == []


def test_two_formats_naming_one_path_are_refused_before_any_work(checkpoint, tmp_path, capsys):
    """--onnx m.onnx --openvino m.onnx used to write the ONNX file and then fail on the IR folder."""
    for argv in (
        ["--onnx", str(tmp_path / "m.onnx"), "--openvino", str(tmp_path / "m.onnx")],
        ["--onnx", str(tmp_path / "m.onnx"), "--triton-repo", str(tmp_path / "m.onnx")],
    ):
        code, out, err = run_main(["--checkpoint", checkpoint, *argv], capsys)
        assert code == 2 and "name the same path" in one_error_line(err)
    assert os.listdir(tmp_path) == []
