"""colorizer.ops registry: OpSet built from reference.OP_NAMES, the ``onnx`` backend, and a backend added
with ``register_backend`` accepted (or refused in one line) by the commands."""

from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer.errors import ConfigError, KernelsUnavailable, MissingDependencyError
from colorizer.ops import BACKENDS, OP_NAMES, OpSet, backends, get_ops, reference, register_backend
from colorizer.testing import assert_close


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """register_backend for the test only: (name, source of a module with make_opset) -> registered."""
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = dict(BACKENDS), dict(backends._CACHE)

    def add(name: str, source: str) -> None:
        (tmp_path / f"{name}_ops.py").write_text(textwrap.dedent(source))
        register_backend(name, f"{name}_ops")

    yield add
    for live, before in zip((BACKENDS, backends._CACHE), saved):  # the same dicts every module sees
        live.clear()
        live.update(before)


def test_opset_fields_are_the_op_names():
    assert [f.name for f in dataclasses.fields(OpSet)] == ["name", *OP_NAMES]
    assert all(f.default is getattr(reference, f.name) for f in dataclasses.fields(OpSet)[1:])
    eager = get_ops("eager")
    assert all(getattr(eager, op) is getattr(reference, op) for op in OP_NAMES)
    # An OpSet given some ops runs the reference for the others.
    partial = OpSet(name="partial", noise_inject=reference.noise_inject)
    assert partial.group_norm_act is reference.group_norm_act
    assert partial.kmeans_assign_accumulate is reference.kmeans_assign_accumulate


def test_a_new_op_forgotten_in_opset_fails_naming_it():
    """An op added to OP_NAMES (with its reference function) but not written into OpSet fails the
    import-time check, naming OpSet and the op; with the field, a registered backend's version of it
    is what get_ops gives, and every other backend gets the reference."""
    with pytest.raises(TypeError, match=r"^OpSet \(colorizer/ops/backends.py\): .*missing toy_op"):
        backends.check_op_fields((*OP_NAMES, "toy_op"))
    with pytest.raises(TypeError, match="not in OP_NAMES group_norm_act"):
        backends.check_op_fields(tuple(n for n in OP_NAMES if n != "group_norm_act"))

    def toy_op(x):
        return x + 1

    toy_set = dataclasses.make_dataclass("ToyOpSet", [("toy_op", object, toy_op)], bases=(OpSet,), frozen=True)
    assert [f.name for f in dataclasses.fields(toy_set)] == ["name", *OP_NAMES, "toy_op"]
    assert toy_set(name="eager").toy_op(torch.zeros(1)).item() == 1.0


def test_onnx_backend_is_the_export_graph_ops():
    from colorizer.export.graph_ops import EXPORT_OPS, GRAPH_OPS

    ops = get_ops("onnx")
    assert "onnx" in BACKENDS and ops is EXPORT_OPS and GRAPH_OPS["two-level"] is ops
    assert ops.weight_standardize is reference.weight_standardize
    gen = torch.Generator().manual_seed(0)
    g, x, skip = (torch.randn(2, 32, 5, 7, generator=gen, dtype=torch.float64) for _ in range(3))
    params = [torch.randn(32, generator=gen, dtype=torch.float64) for _ in range(5)] + [
        torch.randn(1, generator=gen, dtype=torch.float64)
    ]
    # The two-level statistics (and the shared gate tail) give the reference's gate.
    assert_close(ops.attention_gate(g, x, skip, *params), reference.attention_gate(g, x, skip, *params).double())


def test_a_backend_with_an_unknown_op_is_refused(registry):
    registry("typo", "def make_opset():\n    return {'group_norm_actt': print}\n")
    with pytest.raises(TypeError, match="group_norm_actt"):
        get_ops("typo")


def test_registered_backend_works_from_the_command_lines(registry):
    from colorizer.cli import build_parser
    from colorizer.models import Sketch2Color
    from colorizer.runtime.device import backend_choices
    from colorizer.train.config import resolve_config

    registry(
        "mine",
        """
        from colorizer.ops import reference

        def noise_inject(x, weight, noise):
            return reference.noise_inject(x, weight, noise)

        def make_opset():
            return {"noise_inject": noise_inject}
        """,
    )
    args = build_parser().parse_args(["colorize", "--sketch", "s.png", "--out", "o.png", "--kernels", "mine"])
    assert args.kernels == "mine"
    assert resolve_config(["--data", "synthetic", "--kernels", "mine"])[0].kernels == "mine"
    assert "mine" in backend_choices()
    args = build_parser().parse_args(["eval", "demo", "--kernels", "mine"])
    assert args.kernels == "mine"
    with pytest.raises(ConfigError, match="kernels"):
        resolve_config(["--data", "synthetic", "--kernels", "theirs"])
    model = Sketch2Color(channels=(64,), kernels="mine")
    ops = next(m.ops for m in model.modules() if hasattr(m, "ops"))
    assert ops.name == "mine" and ops.noise_inject.__module__ == "mine_ops"
    assert ops.group_norm_act is reference.group_norm_act


def test_an_unavailable_backend_is_one_line_and_exit_2(registry, tmp_path, capsys):
    """KernelsUnavailable is a MissingDependencyError: the commands print it as is, no translation."""
    from colorizer.cli import main

    assert issubclass(KernelsUnavailable, MissingDependencyError)
    registry(
        "broken",
        """
        from colorizer.ops import KernelsUnavailable

        def make_opset():
            raise KernelsUnavailable("kernels='broken' needs a device this machine lacks")
        """,
    )
    sketch = tmp_path / "s.png"
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(sketch)
    argv = ["colorize", "--checkpoint", "demo", "--sketch", str(sketch), "--palette", "#102030"]
    code = main([*argv, "--out", str(tmp_path / "o.png"), "--kernels", "broken", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "error: kernels='broken' needs a device this machine lacks", err
    assert not (tmp_path / "o.png").exists()
