"""From what a user names to something that runs: ``resolve_model``, ``load_runner``, ``load_colorizer``.

A model reference is, in this order of precedence:

- a torch module (a Sketch2Color) -> kind ``module``;
- an existing folder -> a training run folder (one with ``checkpoints/``, or the checkpoints folder
  itself): its newest checkpoint that reads and verifies (kind ``checkpoint``, ``path`` that file); a
  folder holding exactly one exported engine (an OpenVINO IR folder's ``model.xml``) is that engine;
- an existing file -> an exported engine when its suffix is in ``colorizer.export.formats`` (``.onnx``,
  ``.xml``, ``.plan``, ...; kind ``engine``), else a checkpoint (ours, or the reference's ``{'netG': ...}``
  ``.pth``; kind ``checkpoint``);
- a bundled model's name (``demo``; ``colorizer.pretrained``, sha256 checked; kind ``bundled``).

Anything else is one line (CheckpointError / ConfigError) naming what was looked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from colorizer.checkpoint import check_colorizer
from colorizer.errors import CheckpointError, ConfigError
from colorizer.runtime.device import AUTO, resolve_backend, resolve_device
from colorizer.runtime.runner import EngineRunner, ModuleRunner, Runner


@dataclass(frozen=True)
class ModelRef:
    """What a model reference resolved to (module docstring): ``name`` as given, ``kind``, ``path`` the file
    read (None for a module), ``format`` "torch" or the export format's name."""

    name: str
    kind: str
    path: str | None
    format: str


def _engine_format(path: str):
    """The formats-table row of an exported engine at ``path`` (a file or an IR folder), or None."""
    from colorizer.export.formats import find_artifact, format_for_path

    if os.path.isdir(path):
        try:
            return find_artifact(path)[0]
        except ConfigError:
            return None
    try:
        return format_for_path(path)
    except ConfigError:
        return None


def resolve_model(model) -> ModelRef:
    """The ModelRef of ``model`` (module docstring); CheckpointError when it names nothing usable."""
    if isinstance(model, torch.nn.Module):
        return ModelRef(type(model).__name__, "module", None, "torch")
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(
            f"a model is a module, a checkpoint, a run folder, a bundled name or an engine, got {model!r}"
        )
    name = os.fspath(model)
    run_folder = os.path.isdir(os.path.join(name, "checkpoints"))
    fmt = _engine_format(name) if os.path.exists(name) and not run_folder else None
    if fmt is not None:
        path = name
        if os.path.isdir(name):
            from colorizer.export.formats import find_artifact

            path = find_artifact(name)[1]
        return ModelRef(name, "engine", path, fmt.name)
    if os.path.isdir(name):
        from colorizer.checkpoint import resolve_checkpoint

        return ModelRef(name, "checkpoint", resolve_checkpoint(name), "torch")
    if os.path.exists(name):
        return ModelRef(name, "checkpoint", name, "torch")
    from colorizer import pretrained

    if name in pretrained.MODELS:
        return ModelRef(name, "bundled", pretrained.resolve(name), "torch")
    known = ", ".join(pretrained.names())
    raise CheckpointError(f"{name}: no such checkpoint, run folder or engine file, and not a bundled model ({known})")


def load_colorizer(model, kernels: str = "eager"):
    """(the Sketch2Color generator on the CPU, its ModelRef) for a module or a torch model reference.

    What the exporters, the demo and the trainer's tools start from; an engine is refused (ConfigError).
    """
    ref = resolve_model(model)
    if ref.kind == "module":
        return check_colorizer(model), ref
    if ref.kind == "engine":
        raise ConfigError(f"{ref.name} is an exported {ref.format} engine; this needs a checkpoint")
    from colorizer.checkpoint import load_generator

    generator = load_generator(ref.path, map_location="cpu", kernels=kernels)
    return check_colorizer(generator, ref.path), ref


def load_runner(model, device: str | torch.device | None = AUTO, kernels: str = AUTO, **engine_options) -> Runner:
    """A Runner for ``model`` (module docstring, or a ModelRef ``resolve_model`` made) on ``device``
    (``resolve_device``).

    kernels: the op backend of a torch model (``resolve_backend``: "auto" is the one policy); a module
    given with "auto" keeps its own backend unless that is "eager". An engine ignores ``kernels`` (it runs
    on its format's runtime) and takes ``engine_options`` (e.g. ``threads=``) for its runner.
    """
    ref = model if isinstance(model, ModelRef) else resolve_model(model)
    dev = resolve_device(device)
    if ref.kind == "engine":
        from colorizer.export.formats import FORMATS

        fmt = next(f for f in FORMATS if f.name == ref.format)
        if fmt.runner is None:
            raise ConfigError(f"{ref.name}: {fmt.name} artifacts cannot be run directly")
        engine = fmt.load_runner()(ref.path, device=dev, **engine_options)
        return EngineRunner(engine, format=fmt.name, backend=fmt.runtime.split(" ")[0].lower(), name=ref.name)
    if engine_options:
        raise ConfigError(f"{', '.join(engine_options)}: options of an exported engine, not of a torch model")
    if ref.kind == "module":
        own = getattr(model, "kernels", "eager")
        backend = own if kernels == AUTO and own != "eager" else resolve_backend(kernels, dev)
        return ModuleRunner(model, dev, backend, name=ref.name)
    # Loaded on its backend, so the folded weights are standardized by that backend's op, as they always were.
    generator, _ = load_colorizer(ref.path, kernels=resolve_backend(kernels, dev))
    return ModuleRunner(generator, dev, name=ref.name, kind=ref.kind, path=ref.path)
