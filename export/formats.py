"""The export formats, one row each; ``colorizer-export``, ``load_engine`` and ``verify_artifact`` read it.

A format is one module plus one row here (the ultralytics exporter's habit). The row names the
module, and the module holds everything else:

- ``builder``: the library function that writes the artifact and runs its parity gate before
  anything is left on disk (``export_onnx``, ``build_engine``, ...); ``--formats`` prints it.
- ``runner``: ``"module:attribute"`` of the callable ``load_engine`` calls as
  ``runner(path, device=..., **kwargs) -> EngineRunner`` for the format's files (None: the artifact is
  not run directly, e.g. a Triton repository).
- ``verifier``: ``"module:function"`` of the parity gate, ``verify(runner, model, *, cases=None) ->
  ParityReport``, taking a runner of the format's files (reading the noise mode, precision and
  shapes the artifact records) and the eager generator. The builder gates with it before anything is
  left on disk, and ``verify_artifact`` / ``colorizer-export --verify`` re-check an existing file
  with it (None: nothing of its own to check).
- the ``colorizer-export`` step, three functions every format module defines under these names:
  ``cli_options(parser)`` adds the format's own options (its flag comes from the row);
  ``cli_check(args, batch, size)`` checks them before any work (called for every format, requested
  or not, so an option given without its format is refused; ``args.<dest>`` says whether it was
  requested); ``cli_export(job) -> Exported`` runs the builder with its gate and says what it wrote.
- ``PRECISIONS`` and ``DEFAULT_PRECISION`` when the row has a ``precision_label`` (the shared
  ``--precision`` option lists them).

Formats run in table order, each after the formats it ``needs`` (``job.outputs`` holds what they
returned): the ONNX graph first, since every other format is built from it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

from colorizer.errors import ConfigError


@dataclass(frozen=True)
class ExportFormat:
    name: str
    flag: str  # the colorizer-export option that writes it
    metavar: str
    help: str
    suffixes: tuple[str, ...]
    module: str  # holds the builder and the colorizer-export step (cli_options, cli_check, cli_export)
    builder: str  # library function in ``module`` that writes it, parity gate included
    runner: str | None  # "module:attribute" behind load_engine; None: not run directly
    verifier: str | None  # "module:function": verify(runner, model, *, cases=None) -> ParityReport
    runtime: str  # what runs it
    requires: tuple[str, ...]  # Python packages (and "cuda" for a GPU)
    gpu: bool
    description: str
    needs: tuple[str, ...] = ()  # formats built before this one (their results are its inputs)
    precision_label: str | None = None  # name in --precision's help; the module has PRECISIONS

    @property
    def dest(self) -> str:
        """The argparse attribute of the format's flag (``--triton-repo`` -> ``triton_repo``)."""
        return self.flag.lstrip("-").replace("-", "_")

    def load_module(self):
        return importlib.import_module(self.module)

    def load_runner(self):
        """The callable behind load_engine for this format's files."""
        if self.runner is None:
            raise ValueError(f"{self.name} artifacts are not run directly")
        return _resolve(self.runner)

    def load_verifier(self):
        """The parity gate for this format's files: ``verify(runner, model, *, cases=None) -> ParityReport``."""
        if self.verifier is None:
            raise ValueError(f"{self.name} artifacts have no parity check of their own")
        return _resolve(self.verifier)


def _resolve(spec: str):
    """The object a "module:attribute" string names."""
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass
class Exported:
    """What a format's ``cli_export`` step did: its builder's result, the gate reports to print (on
    stderr) and the line saying what was written (on stdout; None when nothing was asked for)."""

    result: object
    message: str | None
    reports: tuple = ()


@dataclass
class ExportJob:
    """One ``colorizer-export`` run, handed to every format's ``cli_export`` in table order.

    args: the parsed options; model: the eager generator; sha256: its checkpoint's; batch, size: the
    parsed ``--batch`` / ``--size`` ranges; scratch: a temporary folder removed at the end;
    outputs: format name -> the result of its builder, for the formats already run.
    """

    args: object
    model: object
    sha256: str | None
    batch: object
    size: object
    scratch: str
    outputs: dict[str, object] = field(default_factory=dict)

    def requested(self, fmt: ExportFormat | str) -> bool:
        fmt = format_by_name(fmt) if isinstance(fmt, str) else fmt
        return bool(getattr(self.args, fmt.dest))


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat(
        name="onnx",
        flag="--onnx",
        metavar="OUT.onnx",
        help="write the ONNX model here",
        suffixes=(".onnx",),
        module="colorizer.export.onnx_export",
        builder="export_onnx",
        runner="colorizer.export.runtime:OnnxRunner",
        verifier="colorizer.export.onnx_export:verify_runner",
        runtime="onnxruntime (CPU; CUDA provider with onnxruntime-gpu)",
        requires=("onnx", "onnxruntime"),
        gpu=False,
        description="ONNX graph, dynamic batch and size, weight standardization folded, parity-gated",
    ),
    ExportFormat(
        name="tensorrt",
        flag="--trt",
        metavar="OUT.plan",
        help="build a TensorRT engine here (needs TensorRT and a GPU)",
        suffixes=(".plan", ".engine"),
        module="colorizer.export.tensorrt",
        builder="build_engine",
        runner="colorizer.export.tensorrt:load_runner",
        verifier="colorizer.export.tensorrt:verify_runner",
        runtime="TensorRT (GPU)",
        requires=("tensorrt", "cuda"),
        gpu=True,
        description="serialized TensorRT engine + JSON sidecar, one optimization profile, parity-gated",
        needs=("onnx",),
        precision_label="TensorRT",
    ),
    ExportFormat(
        name="openvino",
        flag="--openvino",
        metavar="DIR",
        help="write an OpenVINO IR folder (DIR/model.xml) for CPU serving",
        suffixes=(".xml",),
        module="colorizer.export.openvino",
        builder="export_openvino",
        runner="colorizer.export.openvino:OpenVinoRunner",
        verifier="colorizer.export.openvino:verify_runner",
        runtime="OpenVINO (CPU plugin)",
        requires=("openvino", "nncf (int8)"),
        gpu=False,
        description="OpenVINO IR folder (model.xml + .bin), fp32/bf16/int8, numerically and functionally gated",
        needs=("onnx",),
        precision_label="OpenVINO",
    ),
    ExportFormat(
        name="triton",
        flag="--triton-repo",
        metavar="DIR",
        help="write a Triton Inference Server model repository",
        suffixes=("/",),
        module="colorizer.export.triton_repo",
        builder="write_triton_repo",
        runner=None,
        verifier=None,
        runtime="Triton Inference Server (onnxruntime, tensorrt_plan and openvino backends)",
        requires=(),
        gpu=False,
        description="model repository: config.pbtxt + model file per backend, dynamic batching",
        needs=("onnx",),  # and the TensorRT plan / OpenVINO IR when --trt / --openvino built one
    ),
)


def format_by_name(name: str) -> ExportFormat:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise ConfigError(f"unknown export format {name!r}; choose from {', '.join(f.name for f in FORMATS)}")


def format_for_path(path: str) -> ExportFormat:
    """The file format of ``path`` from its suffix (ConfigError for an unknown suffix)."""
    suffix = os.path.splitext(path)[1].lower()
    for fmt in FORMATS:
        if suffix in fmt.suffixes:
            return fmt
    known = ", ".join(s for f in FORMATS for s in f.suffixes if s != "/")
    raise ConfigError(f"{path}: unknown engine file type {suffix or '(no suffix)'}; expected one of {known}")


def find_artifact(path: str) -> tuple[ExportFormat, str]:
    """(row, file) of an existing artifact that can be run and checked: a file with a known suffix,
    or a folder holding exactly one such file (an OpenVINO folder: its model.xml). ConfigError (one
    line) otherwise."""
    if os.path.isdir(path):
        found = []
        for entry in sorted(os.listdir(path)):
            try:
                fmt = format_for_path(entry)
            except ConfigError:
                continue
            if fmt.verifier is not None and os.path.isfile(os.path.join(path, entry)):
                found.append((fmt, os.path.join(path, entry)))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise ConfigError(f"{path} is a folder with {what} exported model files; give the file itself")
        return found[0]
    if not os.path.isfile(path):
        raise ConfigError(f"artifact {path} does not exist")
    fmt = format_for_path(path)
    if fmt.verifier is None or fmt.runner is None:
        raise ConfigError(f"{path}: {fmt.name} artifacts have no parity check of their own")
    return fmt, path


def build_order(requested) -> list[ExportFormat]:
    """The formats to run for ``requested`` (names): those and what they need, in table order."""
    wanted = set(requested)
    for fmt in reversed(FORMATS):  # a format's needs come before it in the table
        if fmt.name in wanted:
            wanted.update(fmt.needs)
    return [fmt for fmt in FORMATS if fmt.name in wanted]


def formats_table() -> str:
    """The table as text (``colorizer-export --formats``)."""
    rows = [("format", "flag", "suffix", "builder", "needs", "runs on")]
    for f in FORMATS:
        rows.append((f.name, f.flag, ",".join(f.suffixes), f.builder, ",".join(f.requires) or "-", f.runtime))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
