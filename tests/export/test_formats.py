"""The formats table drives colorizer-export, load_engine and verify_artifact: a new format is one
module plus one row.

The toy format below is exactly that (a module object and a row added to ``FORMATS``): its flag and
option appear in the CLI, its check runs before any work, its step runs and prints what it wrote,
``--formats`` lists it, ``load_engine`` runs its files and ``verify_artifact`` / ``--verify`` check
them with its verifier, with no other file touched.
"""

import os
import sys
import types

import pytest
import torch

from colorizer.errors import ConfigError
from colorizer.export import ParityError, formats, load_engine, verify_artifact
from colorizer.export.cli import main
from colorizer.export.interface import generator_input
from colorizer.export.runtime import EngineRunner
from tests.export.conftest import small_generator


def _toy_module() -> types.ModuleType:
    """A complete format module: the builder, the runner and the colorizer-export step."""
    module = types.ModuleType("toy_format")
    calls = module.calls = []

    def save_toy(model, path, *, level):
        torch.save({"state": model.state_dict(), "channels": model.channels, "level": level}, path)
        return path

    class ToyRunner(EngineRunner):
        def __init__(self, path, device="cpu"):
            from colorizer.models import Sketch2Color

            data = torch.load(path)
            self.path, self.device, self.noise = path, torch.device(device), "zero"
            self.model = Sketch2Color(channels=tuple(data["channels"])).eval()
            self.model.load_state_dict(data["state"])

        def run(self, sketch, palette, *noise_inputs):
            with torch.inference_mode():
                return self.model(generator_input(sketch, palette), noise="zero")

    def cli_options(parser):
        parser.add_argument("--toy-level", type=int, default=1, help="toy option")

    def cli_check(args, batch, size):
        calls.append(("check", bool(args.toy)))
        if args.toy_level < 0:
            raise ConfigError("--toy-level must be >= 0")

    def cli_export(job):
        calls.append(("export", sorted(job.outputs)))
        path = save_toy(job.model, job.args.toy, level=job.args.toy_level)
        return formats.Exported(path, f"wrote toy {path}")

    def verify_toy(runner, model, *, cases=None):
        from colorizer.export.verify import runner_parity

        calls.append(("verify", runner.path))
        return runner_parity(runner, model, backend="toy", cases=cases)

    module.save_toy, module.ToyRunner, module.verify_toy = save_toy, ToyRunner, verify_toy
    module.cli_options, module.cli_check, module.cli_export = cli_options, cli_check, cli_export
    return module


TOY = formats.ExportFormat(
    name="toy",
    flag="--toy",
    metavar="OUT.toy",
    help="write a toy file",
    suffixes=(".toy",),
    module="toy_format",
    builder="save_toy",
    runner="toy_format:ToyRunner",
    verifier="toy_format:verify_toy",
    runtime="eager PyTorch",
    requires=(),
    gpu=False,
    description="the state dict, for this test",
)


@pytest.fixture
def toy(monkeypatch):
    module = _toy_module()
    monkeypatch.setitem(sys.modules, "toy_format", module)
    monkeypatch.setattr(formats, "FORMATS", formats.FORMATS + (TOY,))
    return module


def test_a_new_format_is_one_module_and_one_row(toy, checkpoint, generator, tmp_path, capsys, monkeypatch):
    out = tmp_path / "g.toy"
    assert main(["--checkpoint", checkpoint, "--toy", str(out), "--toy-level", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote toy {out}"
    # Checked before any work with every other format, then built alone (it needs nothing).
    assert toy.calls == [("check", True), ("export", [])]
    assert sorted(os.listdir(tmp_path)) == ["g.toy"] and torch.load(out)["level"] == 3
    # load_engine finds the row by suffix and runs the file like any engine.
    runner = load_engine(str(out))
    assert isinstance(runner, toy.ToyRunner)
    x = torch.rand(1, 30, 128, 128) * 2 - 1
    x[:, 3:] = x[:, 3:, :1, :1]  # palette planes are constant per plane
    with torch.inference_mode():
        expected = generator(x, noise="zero")
    torch.testing.assert_close(runner(x), expected)
    assert main(["--formats"]) == 0
    assert "toy" in capsys.readouterr().out
    # verify_artifact finds the row's verifier by suffix and runs it on the row's runner.
    report = verify_artifact(str(out), generator, cases=((1, 128, 128),))
    assert report.passed and [c.backend for c in report.cases] == ["toy"] and toy.calls[-1] == ("verify", str(out))
    with pytest.raises(ParityError, match="toy artifact"):  # another generator's file does not pass
        verify_artifact(str(out), small_generator(seed=1), cases=((1, 128, 128),))
    # ... and so does colorizer-export --verify.
    from colorizer.export import verify

    monkeypatch.setattr(verify, "DEFAULT_CASES", ((1, 128, 128),))
    assert main(["--verify", str(out), "--checkpoint", checkpoint]) == 0
    assert capsys.readouterr().out.startswith(f"parity of {out} ")
    assert sorted(os.listdir(tmp_path)) == ["g.toy"]


def test_a_new_formats_check_runs_first_and_fails_with_one_line(toy, checkpoint, tmp_path, capsys):
    code = main(["--checkpoint", checkpoint, "--toy", str(tmp_path / "g.toy"), "--toy-level", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: --toy-level must be >= 0"]
    assert os.listdir(tmp_path) == [] and toy.calls == [("check", True)]
    # With no format asked for, the message names every flag of the table, the new one too.
    assert main(["--checkpoint", checkpoint]) == 2
    assert "--triton-repo and/or --toy" in capsys.readouterr().err


def test_build_order_puts_needs_first_in_table_order():
    names = [f.name for f in formats.build_order(["triton", "tensorrt"])]
    assert names == ["onnx", "tensorrt", "triton"]
    assert [f.name for f in formats.build_order(["openvino"])] == ["onnx", "openvino"]
    assert formats.format_by_name("triton").runner is None
    with pytest.raises(ValueError, match="not run directly"):
        formats.format_by_name("triton").load_runner()


def test_every_row_resolves_to_its_module():
    """Each row's module holds its builder and the three colorizer-export functions; runners import."""
    for fmt in formats.FORMATS:
        module = fmt.load_module()
        for name in (fmt.builder, "cli_options", "cli_check", "cli_export"):
            assert callable(getattr(module, name)), (fmt.name, name)
        if fmt.precision_label:
            assert module.DEFAULT_PRECISION in module.PRECISIONS
        if fmt.runner is not None:
            assert callable(fmt.load_runner())  # the runtimes themselves are imported when a runner is made
        if fmt.verifier is not None:
            assert fmt.runner is not None and callable(fmt.load_verifier())  # it is handed the row's runner
        else:
            with pytest.raises(ValueError, match="no parity check"):
                fmt.load_verifier()
