"""Export of the Sketch2Color generator (installed as ``colorizer.export``).

Plain functions under a thin CLI (``colorizer-export``, ``colorizer.export.cli``):

- ``export_onnx(model_or_checkpoint, path, noise=..., opset=...)``: ONNX with weight standardization
  folded, dynamic batch and size, metadata, checked and parity-gated (``onnx_export``).
- ``build_engine(onnx_path, plan_path, precision=..., batch=..., size=...)``: a TensorRT engine with
  an explicit optimization profile, timing cache and JSON sidecar, parity-gated (``tensorrt``).
- ``verify_onnx`` / ``verify_engine``: the parity gates against the float64 model (``verify``);
  ``verify_artifact(path, model)`` re-checks an existing artifact with its row's gate.
- ``load_engine(path)``: a runner for .onnx (onnxruntime), .plan (TensorRT) and model.xml (OpenVINO)
  files (``runtime``).
- ``write_triton_repo(dir, onnx_path, plan_path)``: a Triton model repository (``triton_repo``).
- ``FORMATS``: the formats table (``formats``): one row per format naming its module, which holds
  the builder, the runner, the verifier and the ``colorizer-export`` step; the CLI, ``load_engine``
  and ``verify_artifact`` read it.
- ``seeded_noise``: the in-graph noise, in PyTorch.

Heavy dependencies (onnx, onnxruntime, tensorrt) are imported only when a function needs them.
"""

from colorizer.export.formats import FORMATS, ExportFormat, format_for_path
from colorizer.export.interface import NOISE_MODES, generator_input, input_names
from colorizer.export.onnx_export import DEFAULT_OPSET, GeneratorForExport, OnnxExport, export_onnx, read_metadata
from colorizer.export.runtime import EngineRunner, load_engine
from colorizer.export.seeded_noise import seeded_noise
from colorizer.export.tensorrt import ShapeRange, build_engine, tensorrt_missing
from colorizer.export.triton_repo import write_triton_repo
from colorizer.export.verify import ParityError, ParityReport, verify_artifact, verify_engine, verify_onnx

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "NOISE_MODES",
    "EngineRunner",
    "ExportFormat",
    "GeneratorForExport",
    "OnnxExport",
    "ParityError",
    "ParityReport",
    "ShapeRange",
    "build_engine",
    "export_onnx",
    "format_for_path",
    "generator_input",
    "input_names",
    "load_engine",
    "read_metadata",
    "seeded_noise",
    "tensorrt_missing",
    "verify_artifact",
    "verify_engine",
    "verify_onnx",
    "write_triton_repo",
]
