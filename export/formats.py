"""The export formats, one row each: name, CLI flag, file suffixes, builder, runtime, requirements.

``colorizer-export`` and ``load_engine`` read this table (the ultralytics exporter's habit), so a new
format is one row plus its builder function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from colorizer.errors import ConfigError


@dataclass(frozen=True)
class ExportFormat:
    name: str
    flag: str  # the colorizer-export option that writes it
    suffixes: tuple[str, ...]
    builder: str  # function in colorizer.export that writes it
    runtime: str  # what runs it
    requires: tuple[str, ...]  # Python packages (and "cuda" for a GPU)
    gpu: bool
    description: str


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat(
        name="onnx",
        flag="--onnx",
        suffixes=(".onnx",),
        builder="export_onnx",
        runtime="onnxruntime (CPU; CUDA provider with onnxruntime-gpu)",
        requires=("onnx", "onnxruntime"),
        gpu=False,
        description="ONNX graph, dynamic batch and size, weight standardization folded, parity-gated",
    ),
    ExportFormat(
        name="tensorrt",
        flag="--trt",
        suffixes=(".plan", ".engine"),
        builder="build_engine",
        runtime="TensorRT (GPU)",
        requires=("tensorrt", "cuda"),
        gpu=True,
        description="serialized TensorRT engine + JSON sidecar, one optimization profile, parity-gated",
    ),
    ExportFormat(
        name="openvino",
        flag="--openvino",
        suffixes=(".xml",),
        builder="export_openvino",
        runtime="OpenVINO (CPU plugin)",
        requires=("openvino", "nncf (int8)"),
        gpu=False,
        description="OpenVINO IR folder (model.xml + .bin), fp32/bf16/int8, numerically and functionally gated",
    ),
    ExportFormat(
        name="triton",
        flag="--triton-repo",
        suffixes=("/",),
        builder="write_triton_repo",
        runtime="Triton Inference Server (onnxruntime and tensorrt_plan backends)",
        requires=(),
        gpu=False,
        description="model repository: config.pbtxt + model file per backend, dynamic batching",
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


def formats_table() -> str:
    """The table as text (``colorizer-export --formats``)."""
    rows = [("format", "flag", "suffix", "builder", "needs", "runs on")]
    for f in FORMATS:
        rows.append((f.name, f.flag, ",".join(f.suffixes), f.builder, ",".join(f.requires) or "-", f.runtime))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
