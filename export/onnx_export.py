"""ONNX export of the Sketch2Color generator.

The exported graph (``export_onnx``) is traced from the eager PyTorch path (the pure-torch ops of
``colorizer.ops.reference``) after ``fold_weight_standardization``, so every WSConv2d is a plain Conv
with a constant weight. Height and width are dynamic (positive multiples of 128), and so is the batch.

Inputs (all float32 unless said otherwise, NCHW, RGB, values scaled like images: x / 255 * 2 - 1):

- ``sketch``  (N, 3, H, W) in [-1, 1]: the gray line art repeated over 3 channels (white = +1).
- ``palette`` (N, 9, 3) in [-1, 1]: the 9 reference colors. The graph broadcasts color j to the
  generator's input planes 3 + 3j .. 5 + 3j (the layout of ``colorizer.palette.palette_planes``), so a
  client sends 27 numbers per image instead of a 27 x H x W tensor.
- noise, by ``noise`` mode (the generator injects eight noise maps, noise7 .. noise0):
  ``seeded``: ``seed`` int32 (N,), 0 <= seed < 2**31, one per image; the maps are computed in the
  graph (``colorizer.export.seeded_noise``), so results are reproducible and independent of batching.
  ``zero``: no noise input; the injections are left out (deterministic, slightly flatter texture).
  ``input``: eight inputs ``noise7`` .. ``noise0`` of shapes (N, 1, H / 2**k, W / 2**k), k = 7 .. 0.

Output ``image`` (N, 3, H, W) float32 in [-1, 1] (tanh).

The file carries metadata (``metadata_props``): format, palette size, value range, layout, size
multiple, noise mode and algorithm, channel widths, opset, the source checkpoint's sha256 and the
colorizer version. The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it traces this
model in seconds and keeps the seeded noise's int32 arithmetic as integer Div/Mul/Sub, while the
dynamo exporter (torch 2.13) lowers integer division through float Abs/Floor/Sign, which is not exact
above 2**24, and takes ~30 s to export. GroupNorm is written as Reshape + InstanceNormalization +
affine; onnxruntime runs that faster on the CPU than the opset-21 GroupNormalization op (measured,
see benchmarks/bench_export.py).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn

import colorizer
from colorizer.checkpoint import check_colorizer, load_colorizer_file
from colorizer.errors import ConfigError, MissingDependencyError
from colorizer.export.artifact import check_output_path, export_output, refuse_foreign
from colorizer.export.graph_ops import GRAPH_OPS
from colorizer.export.interface import (
    FORMAT_NAME,
    FORMAT_VERSION,
    NOISE_INPUT_NAMES,
    OUTPUT_NAME,
    PALETTE_SIZE,
    check_noise_mode,
    example_inputs,
    generator_input,
    input_names,
)
from colorizer.export.seeded_noise import NOISE_ALGORITHM, seeded_noise
from colorizer.models.generator import NUM_NOISE, SIZE_MULTIPLE, UNetGenerator, fold_weight_standardization

DEFAULT_OPSET = 18
# Resize-11 (coordinate_transformation_mode) and Range-11 (the seeded noise's counters) are the
# newest ops the graph needs; 20 is the newest opset PyTorch's TorchScript exporter writes.
MIN_OPSET = 11
MAX_OPSET = 20
# How GroupNorm is written into the graph (colorizer.export.graph_ops): "two-level" statistics
# (accurate on onnxruntime's CPU) or "instance-norm" (PyTorch's own decomposition).
DEFAULT_GROUP_NORM = "two-level"


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        if opset < MIN_OPSET:
            raise ConfigError(
                f"opset {opset} is too old for the generator's graph (Resize with coordinate modes and Range "
                f"need opset {MIN_OPSET}); use --opset {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})"
            )
        raise ConfigError(f"opset {opset} is newer than the exporter supports; use {MIN_OPSET}..{MAX_OPSET}")


class GeneratorForExport(nn.Module):
    """The graph that is exported: (sketch, palette[, seed | noise7..noise0]) -> image.

    ``generator``: a Sketch2Color; a folded eval copy is taken (same dtype), the original is untouched.
    Calls the encoder and decoder directly: the size checks of ``UNetGenerator.forward`` would bake
    the trace's sizes into the graph.
    """

    def __init__(self, generator: UNetGenerator, noise: str, group_norm: str = DEFAULT_GROUP_NORM):
        super().__init__()
        check_noise_mode(noise)
        if group_norm not in GRAPH_OPS:
            raise ConfigError(f"group_norm must be one of {', '.join(GRAPH_OPS)}, got {group_norm!r}")
        self.noise = noise
        self.generator = fold_weight_standardization(generator).eval().set_kernels(GRAPH_OPS[group_norm])

    def forward(self, sketch: torch.Tensor, palette: torch.Tensor, *noise_inputs: torch.Tensor) -> torch.Tensor:
        x = generator_input(sketch, palette)
        if self.noise == "zero":
            maps = [None] * NUM_NOISE
        elif self.noise == "input":
            maps = list(noise_inputs)
        else:
            maps = seeded_noise(noise_inputs[0], sketch.shape[2], sketch.shape[3])
        g = self.generator
        return g.decoder(g.encoder(x), maps)


def dynamic_axes(noise: str) -> dict[str, dict[int, str]]:
    axes = {
        "sketch": {0: "batch", 2: "height", 3: "width"},
        "palette": {0: "batch"},
        OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"},
    }
    if noise == "seeded":
        axes["seed"] = {0: "batch"}
    elif noise == "input":
        for name, s in zip(NOISE_INPUT_NAMES, (7, 6, 5, 4, 3, 2, 1, 0)):
            axes[name] = {0: "batch", 2: f"height/{2**s}", 3: f"width/{2**s}"}
    return axes


def graph_metadata(model: UNetGenerator, noise: str, opset: int, source_sha256: str | None) -> dict[str, str]:
    """The ``metadata_props`` written into the exported file (all values are strings)."""
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "colorizer_version": colorizer.__version__,
        "inputs": ",".join(input_names(noise)),
        "output": OUTPUT_NAME,
        "layout": "NCHW",
        "color_order": "RGB",
        "value_range": "[-1, 1]",
        "value_scaling": "x / 255 * 2 - 1",
        "palette_size": str(PALETTE_SIZE),
        "palette_layout": "(N, 9, 3): color j -> generator input planes 3+3j .. 5+3j",
        "size_multiple": str(SIZE_MULTIPLE),
        "noise_mode": noise,
        "channels": json.dumps(list(model.channels)),
        "weight_standardization": "folded",
        "opset": str(opset),
        "source_sha256": source_sha256 or "unknown (exported from an in-memory model)",
    }
    if noise == "seeded":
        meta["noise_algorithm"] = NOISE_ALGORITHM
        meta["seed_range"] = "[0, 2147483647]"
    return meta


def read_metadata(path_or_model) -> dict[str, str]:
    """The metadata_props of an exported file (a path or a loaded onnx.ModelProto) as a dict."""
    import onnx

    model = onnx.load(path_or_model, load_external_data=False) if isinstance(path_or_model, str) else path_or_model
    return {p.key: p.value for p in model.metadata_props}


def is_own_onnx(path: str) -> bool:
    """True when ``path`` is an ONNX file written by ``export_onnx`` (our ``format`` metadata); the
    overwrite rule of colorizer-export replaces only such files (``artifact.refuse_foreign``)."""
    try:
        return read_metadata(path).get("format") == FORMAT_NAME
    except Exception:  # not ONNX at all (protobuf decode errors), unreadable, onnx missing
        return False


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("ONNX export needs the onnx package: pip install 'colorizer[export]'") from exc
    return onnx


def trace_to_onnx(
    model: UNetGenerator, path: str, noise: str, opset: int, group_norm: str = DEFAULT_GROUP_NORM
) -> None:
    """Trace ``GeneratorForExport(model, noise, group_norm)`` to ``path`` (no checks, no metadata)."""
    wrapper = GeneratorForExport(model, noise, group_norm).float()
    # A small trace size keeps tracing cheap; every size is dynamic in the result.
    args = example_inputs(noise, 1, SIZE_MULTIPLE, SIZE_MULTIPLE)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated (see the module docstring for why it is used) and
        # warns about traced shape arithmetic, which the dynamic axes make exact.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                args,
                path,
                dynamo=False,
                opset_version=opset,
                input_names=input_names(noise),
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes(noise),
                do_constant_folding=True,
            )


def finalize_graph(
    path: str,
    model: UNetGenerator,
    noise: str,
    opset: int,
    source_sha256: str | None,
    group_norm: str = DEFAULT_GROUP_NORM,
) -> None:
    """Add metadata, then run the ONNX checker (full check) and strict shape inference on ``path``."""
    onnx = _import_onnx()
    proto = onnx.load(path)
    proto.producer_name = "colorizer"
    proto.producer_version = colorizer.__version__
    proto.doc_string = (
        "Sketch2Color generator: sketch (N,3,H,W) + palette (N,9,3) in [-1,1] -> image (N,3,H,W) in [-1,1]; "
        f"H, W multiples of {SIZE_MULTIPLE}; noise mode {noise}. See colorizer.export.onnx_export."
    )
    del proto.metadata_props[:]
    metadata = graph_metadata(model, noise, opset, source_sha256)
    metadata["group_norm"] = group_norm
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, path)
    try:
        onnx.checker.check_model(path, full_check=True)
        onnx.shape_inference.infer_shapes_path(path, path + ".inferred", check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise RuntimeError(f"the exported graph failed the ONNX checker: {exc}") from exc  # a bug, not user error
    finally:
        if os.path.exists(path + ".inferred"):
            os.remove(path + ".inferred")


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote: the path, its inputs, metadata and the parity report."""

    path: str
    noise: str
    opset: int
    inputs: list[str]
    metadata: dict[str, str]
    parity: object | None = None  # colorizer.export.verify.ParityReport
    notes: list[str] = field(default_factory=list)


def export_onnx(
    model: UNetGenerator | str,
    path: str,
    *,
    noise: str = "seeded",
    opset: int = DEFAULT_OPSET,
    source_sha256: str | None = None,
    verify: bool = True,
    cases=None,
    providers=None,
    group_norm: str = DEFAULT_GROUP_NORM,
) -> OnnxExport:
    """Export a Sketch2Color generator (or a checkpoint path) to an ONNX file at ``path``.

    The file is written to a temporary name in the same folder, checked (ONNX checker full check,
    strict shape inference), then, when ``verify``, run with onnxruntime against the eager model on
    fixed inputs (``verify.verify_onnx``; ``cases`` and ``providers`` are passed on). group_norm:
    "two-level" (default, accurate statistics) or "instance-norm" (PyTorch's decomposition: faster on
    onnxruntime's CPU, ~2x eager's error at 256 px, see graph_ops). Only a file
    that passes is renamed onto ``path``; otherwise nothing is left and the error is raised:
    ConfigError (bad option or path), CheckpointError (not a Sketch2Color), ParityError (gate).
    An existing file at ``path`` is replaced only when it is an export of ours (``is_own_onnx``;
    ConfigError otherwise, before any work and again at the rename: ``artifact.export_output``).
    """
    check_noise_mode(noise)
    check_opset(opset)
    if isinstance(model, str):
        model, source_sha256 = load_colorizer_file(model)
    check_colorizer(model)
    path = check_output_path(path, "ONNX file")
    _import_onnx()
    with export_output(path, "ONNX file", is_own_onnx) as tmp:
        trace_to_onnx(model, tmp, noise, opset, group_norm)
        finalize_graph(tmp, model, noise, opset, source_sha256, group_norm)
        report = None
        if verify:
            from colorizer.export.verify import verify_onnx

            report = verify_onnx(tmp, model, noise=noise, cases=cases, providers=providers)
            report.artifact = path  # the temporary name means nothing to the user
            report.raise_if_failed(f"ONNX export {path}")
    return OnnxExport(
        path=path,
        noise=noise,
        opset=opset,
        inputs=input_names(noise),
        metadata=read_metadata(path),
        parity=report,
    )


def verify_runner(runner, model: UNetGenerator, *, cases=None):
    """The ONNX row's verifier (colorizer.export.formats): the parity gate of ``verify_onnx`` for an
    ``OnnxRunner`` (``load_engine`` of a .onnx file), on the execution provider it runs and in the
    noise mode the file records. ``export_onnx`` gates on every provider at once with ``verify_onnx``.
    """
    from colorizer.export.verify import runner_parity

    provider = runner.session.get_providers()[0]
    return runner_parity(runner, model, backend=f"onnxruntime:{provider}", cases=cases)


# ------------------------------------------------------------------------------------------------
# The colorizer-export step (colorizer.export.formats): the graph every other format is built from.


def cli_options(parser) -> None:
    """The ONNX graph's options (--noise, --opset) are common to every format: colorizer.export.cli."""


def cli_check(args, batch, size) -> None:
    if args.onnx:
        check_output_path(args.onnx, "ONNX file")
        if not args.onnx.lower().endswith(".onnx"):
            raise ConfigError(f"--onnx needs a .onnx file name, got {args.onnx}")
        refuse_foreign(os.path.abspath(args.onnx), "--onnx", is_own_onnx)


def cli_export(job):
    """Export (and gate) the graph to --onnx, or to the job's scratch folder for the other formats."""
    from colorizer.export.formats import Exported

    args = job.args
    path = args.onnx or os.path.join(job.scratch, "model.onnx")
    result = export_onnx(job.model, path, noise=args.noise, opset=args.opset, source_sha256=job.sha256)
    message = None
    if args.onnx:
        message = f"wrote {result.path} (noise {args.noise}, opset {args.opset}, inputs {', '.join(result.inputs)})"
    return Exported(result, message, (result.parity,))
