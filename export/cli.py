"""``colorizer-export``: export a Sketch2Color checkpoint to ONNX / TensorRT / a Triton repository.

    colorizer-export --checkpoint G.pth --onnx model.onnx [--noise seeded|zero|input] [--opset 18]
    colorizer-export --checkpoint G.pth --trt model.plan --precision fp16 --batch 1:4:8 --size 256:512:1024
    colorizer-export --checkpoint G.pth --onnx model.onnx --triton-repo models/
    colorizer-export --checkpoint G.pth --openvino ov_model/ --precision bf16|int8 [--calibration DIR]
    colorizer-export --formats

Every artifact passes its parity gate before it is written (see colorizer.export.verify); on any
error the command prints one line, exits non-zero (2 for bad input or a missing dependency, 3 for a
failed parity gate) and leaves no file behind. A thin layer over the library functions
``export_onnx``, ``build_engine`` and ``write_triton_repo``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from colorizer.errors import ConfigError, run_cli
from colorizer.export.artifact import check_output_folder, check_output_path
from colorizer.export.formats import formats_table
from colorizer.export.onnx_export import (
    DEFAULT_OPSET,
    NOISE_MODES,
    check_noise_mode,
    check_opset,
    export_onnx,
    load_checkpoint,
)
from colorizer.export.openvino import DEFAULT_KEEP_FP32, KEEP_FP32
from colorizer.export.openvino import PRECISIONS as OPENVINO_PRECISIONS
from colorizer.export.tensorrt import PRECISIONS, ShapeRange, check_size_range, tensorrt_missing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="colorizer-export",
        description="Export a Sketch2Color generator to ONNX, TensorRT and a Triton model repository.",
    )
    p.add_argument(
        "--checkpoint",
        help="generator checkpoint: the reference's {'netG': ...} .pth or ours, a training run folder "
        "(its newest good checkpoint), or a bundled model's name (demo)",
    )
    p.add_argument("--onnx", metavar="OUT.onnx", help="write the ONNX model here")
    p.add_argument("--trt", metavar="OUT.plan", help="build a TensorRT engine here (needs TensorRT and a GPU)")
    p.add_argument(
        "--precision",
        choices=sorted(set(PRECISIONS) | set(OPENVINO_PRECISIONS)),
        help="TensorRT: fp32, fp16 (default), bf16; OpenVINO: fp32 (default), bf16, int8",
    )
    p.add_argument("--openvino", metavar="DIR", help="write an OpenVINO IR folder (DIR/model.xml) for CPU serving")
    p.add_argument("--calibration", metavar="DIR", help="pictures to calibrate int8 on (default: synthetic drawings)")
    p.add_argument(
        "--keep-fp32",
        default=",".join(DEFAULT_KEEP_FP32),
        help=f"OpenVINO node groups kept in fp32 at bf16/int8: comma list of {','.join(KEEP_FP32)} or none",
    )
    p.add_argument("--batch", default="1:1:8", help="batch MIN:OPT:MAX (TensorRT profile, Triton max batch)")
    p.add_argument("--size", default="256:512:1024", help="image side MIN:OPT:MAX, multiples of 128 (TensorRT)")
    p.add_argument("--noise", choices=NOISE_MODES, default="seeded", help="how the graph gets its noise")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--triton-repo", metavar="DIR", help="write a Triton Inference Server model repository")
    p.add_argument("--timing-cache", help="TensorRT timing cache file (default: timing.cache next to the plan)")
    p.add_argument("--formats", action="store_true", help="print the export formats table and exit")
    return p


def _validate(args) -> tuple[ShapeRange, ShapeRange]:
    if not (args.onnx or args.trt or args.triton_repo or args.openvino):
        raise ConfigError("nothing to do: give --onnx, --trt, --openvino and/or --triton-repo")
    if not args.checkpoint:
        raise ConfigError("--checkpoint is required")
    check_noise_mode(args.noise)
    check_opset(args.opset)
    batch = ShapeRange.parse(args.batch, "batch")
    size = ShapeRange.parse(args.size, "size")
    check_size_range(size)
    if args.onnx:
        check_output_path(args.onnx, "ONNX file")
        if not args.onnx.lower().endswith(".onnx"):
            raise ConfigError(f"--onnx needs a .onnx file name, got {args.onnx}")
    if args.trt:
        check_output_path(args.trt, "TensorRT plan")
        missing = tensorrt_missing()
        if missing:  # before any work, so nothing is written
            raise _missing(missing)
    if args.triton_repo:
        from colorizer.export.triton_repo import MAX_BATCH_SIZE

        check_output_folder(args.triton_repo, "Triton model repository")
        if batch.max > MAX_BATCH_SIZE:
            raise ConfigError(f"--batch: a Triton max batch size must be at most {MAX_BATCH_SIZE}, got {batch.max}")
    if args.trt and args.precision not in (None, *PRECISIONS):
        raise ConfigError(f"--trt: precision {args.precision} is not a TensorRT precision ({', '.join(PRECISIONS)})")
    if args.calibration and not (args.openvino and args.precision == "int8"):
        raise ConfigError("--calibration is only used with --openvino and --precision int8")
    if args.openvino:
        _validate_openvino(args)
    return batch, size


def _validate_openvino(args) -> None:
    """The --openvino options, checked before any work (so a bad option writes nothing)."""
    from colorizer.errors import MissingDependencyError
    from colorizer.export.openvino import check_keep, check_precision, openvino_missing, require_nncf

    check_output_folder(args.openvino, "OpenVINO folder")
    check_precision(args.precision or "fp32")
    args.keep_fp32 = check_keep(() if args.keep_fp32 in ("", "none") else args.keep_fp32.split(","))
    if args.calibration and not os.path.isdir(args.calibration):
        raise ConfigError(f"--calibration {args.calibration}: not a folder")
    missing = openvino_missing()
    if missing:
        raise MissingDependencyError(f"--openvino: {missing}")
    if args.precision == "int8":
        require_nncf()


def _missing(message: str):
    from colorizer.errors import MissingDependencyError

    return MissingDependencyError(f"--trt: {message}")


def _print_report(report) -> None:
    if report is not None:
        print(report.format(), file=sys.stderr)


_VALUE_OPTIONS = ("--batch", "--size")


def _join_range_values(argv: list[str]) -> list[str]:
    """``--batch -1:2:4`` -> ``--batch=-1:2:4``: argparse takes a value starting with '-' for an option
    and says "expected one argument"; joined, the range parser names the bad value instead."""
    out = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1][:2] not in ("--", "-h"):
            if argv[i + 1].startswith("-"):
                out.append(f"{a}={argv[i + 1]}")
                i += 2
                continue
        out.append(a)
        i += 1
    return out


def run(argv=None) -> int:
    args = build_parser().parse_args(_join_range_values(list(sys.argv[1:] if argv is None else argv)))
    if args.formats:
        print(formats_table())
        return 0
    batch, size = _validate(args)
    from colorizer import pretrained
    from colorizer.checkpoint import resolve_checkpoint

    # A file, a training run folder, or a bundled model's name (like colorize and eval).
    model, sha256 = load_checkpoint(resolve_checkpoint(pretrained.resolve(args.checkpoint)))
    from colorizer.export.verify import ParityError

    with tempfile.TemporaryDirectory(prefix="colorizer-export-") as scratch:
        onnx_path = args.onnx or os.path.join(scratch, "model.onnx")
        try:
            result = export_onnx(model, onnx_path, noise=args.noise, opset=args.opset, source_sha256=sha256)
        except ParityError as exc:
            _print_report(exc.report)
            raise
        _print_report(result.parity)
        if args.onnx:
            print(f"wrote {result.path} (noise {args.noise}, opset {args.opset}, inputs {', '.join(result.inputs)})")
        plan_path = None
        if args.trt:
            from colorizer.export.tensorrt import build_engine

            try:
                built = build_engine(
                    onnx_path,
                    args.trt,
                    precision=args.precision or "fp16",
                    batch=batch,
                    size=size,
                    timing_cache=args.timing_cache,
                    model=model,
                )
            except ParityError as exc:
                _print_report(exc.report)
                raise
            _print_report(built.parity)
            plan_path = built.path
            print(f"wrote {built.path} and {built.sidecar} ({args.precision or 'fp16'}, batch {batch}, size {size})")
        if args.openvino:
            from colorizer.export.openvino import export_openvino

            try:
                ov_export = export_openvino(
                    model,
                    args.openvino,
                    precision=args.precision or "fp32",
                    noise=args.noise,
                    keep_fp32=args.keep_fp32,
                    calibration=args.calibration,
                    onnx_path=onnx_path,
                    source_sha256=sha256,
                )
            except ParityError as exc:
                _print_report(exc.report)
                raise
            _print_report(ov_export.parity)
            _print_report(ov_export.functional)
            print(
                f"wrote {ov_export.xml} ({ov_export.precision}, noise {args.noise}, "
                f"fp32 node groups: {','.join(ov_export.keep_fp32) or 'none'})"
            )
        if args.triton_repo:
            from colorizer.export.triton_repo import write_triton_repo

            configs = write_triton_repo(
                args.triton_repo,
                onnx_path,
                plan_path,
                max_batch_size=batch.max,
                preferred_batch_sizes=(batch.opt, batch.max),
            )
            print(f"wrote Triton model repository {os.path.abspath(args.triton_repo)} ({len(configs)} models)")
    return 0


def main(argv=None) -> int:
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
