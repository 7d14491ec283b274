"""``colorizer-export``: export a Sketch2Color checkpoint to ONNX / TensorRT / a Triton repository.

    colorizer-export --checkpoint G.pth --onnx model.onnx [--noise seeded|zero|input] [--opset 18]
    colorizer-export --checkpoint G.pth --trt model.plan --precision fp16 --batch 1:4:8 --size 256:512:1024
    colorizer-export --checkpoint G.pth --onnx model.onnx --triton-repo models/
    colorizer-export --checkpoint G.pth --openvino ov_model/ --precision bf16|int8 [--calibration DIR]
    colorizer-export --formats
    colorizer-export --verify model.onnx|model.plan|ov_model/ --checkpoint G.pth

Every artifact passes its parity gate before it is written (see colorizer.export.verify); on any
error the command prints one line, exits non-zero (2 for bad input or a missing dependency, 3 for a
failed parity gate) and leaves no file behind. A thin layer over the formats table
(``colorizer.export.formats``): the common options are here; each format's flag comes from its row,
and its own options, checks and build step from its module (``cli_options``, ``cli_check``,
``cli_export``, around the library builder: ``export_onnx``, ``build_engine``, ...).

``--verify ARTIFACT`` re-checks an artifact that already exists (``verify.verify_artifact``: its
row's runner and verifier, the gate its builder ran) against the checkpoint: it prints the report
and exits 0 when it passes, 3 when it does not, 2 (one line) for a missing or unknown file; it
writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from colorizer.errors import ArgumentParser, ConfigError, run_cli
from colorizer.export import formats
from colorizer.export.onnx_export import DEFAULT_OPSET, NOISE_MODES, check_noise_mode, check_opset, load_checkpoint
from colorizer.export.tensorrt import ShapeRange, check_size_range


def _precision_help() -> tuple[list[str], str]:
    """--precision's choices and help, from the formats that take a precision."""
    choices, parts = set(), []
    for fmt in formats.FORMATS:
        if fmt.precision_label:
            module = fmt.load_module()
            choices.update(module.PRECISIONS)
            names = [p + (" (default)" if p == module.DEFAULT_PRECISION else "") for p in module.PRECISIONS]
            parts.append(f"{fmt.precision_label}: {', '.join(names)}")
    return sorted(choices), "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="colorizer-export",
        description="Export a Sketch2Color generator to ONNX, TensorRT and a Triton model repository.",
    )
    p.add_argument(
        "--checkpoint",
        help="generator checkpoint: the reference's {'netG': ...} .pth or ours, a training run folder "
        "(its newest good checkpoint), or a bundled model's name (demo)",
    )
    choices, precision_help = _precision_help()
    p.add_argument("--precision", choices=choices, help=precision_help)
    p.add_argument("--batch", default="1:1:8", help="batch MIN:OPT:MAX (TensorRT profile, Triton max batch)")
    p.add_argument("--size", default="256:512:1024", help="image side MIN:OPT:MAX, multiples of 128 (TensorRT)")
    p.add_argument("--noise", choices=NOISE_MODES, default="seeded", help="how the graph gets its noise")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    for fmt in formats.FORMATS:  # each format's flag, then its own options
        p.add_argument(fmt.flag, metavar=fmt.metavar, help=fmt.help)
        fmt.load_module().cli_options(p)
    p.add_argument("--formats", action="store_true", help="print the export formats table and exit")
    p.add_argument(
        "--verify",
        metavar="ARTIFACT",
        help="re-check an existing export (a file, or an OpenVINO folder) against --checkpoint with its "
        "format's parity gate; writes nothing (exit 0: passed, 3: failed)",
    )
    return p


def _validate(args) -> tuple[ShapeRange, ShapeRange]:
    if not any(getattr(args, fmt.dest) for fmt in formats.FORMATS):
        flags = [fmt.flag for fmt in formats.FORMATS]
        raise ConfigError(f"nothing to do: give {', '.join(flags[:-1])} and/or {flags[-1]}")
    if not args.checkpoint:
        raise ConfigError("--checkpoint is required")
    check_noise_mode(args.noise)
    check_opset(args.opset)
    batch = ShapeRange.parse(args.batch, "batch")
    size = ShapeRange.parse(args.size, "size")
    check_size_range(size)
    for fmt in formats.FORMATS:  # before any work, so a bad option or a missing dependency writes nothing
        fmt.load_module().cli_check(args, batch, size)
    return batch, size


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
        print(formats.formats_table())
        return 0
    if args.verify:
        return _verify(args)
    batch, size = _validate(args)
    from colorizer.export.verify import ParityError

    model, sha256 = _load_model(args)
    with tempfile.TemporaryDirectory(prefix="colorizer-export-") as scratch:
        job = formats.ExportJob(args, model, sha256, batch, size, scratch)
        for fmt in formats.build_order(f.name for f in formats.FORMATS if job.requested(f)):
            try:
                done = fmt.load_module().cli_export(job)
            except ParityError as exc:  # the gate's full report above its one-line error
                _print_report(exc.report)
                raise
            for report in done.reports:
                _print_report(report)
            if done.message:
                print(done.message)
            job.outputs[fmt.name] = done.result
    return 0


def _load_model(args):
    """(generator, sha256) of --checkpoint: a file, a training run folder, or a bundled model's name
    (like colorize and eval)."""
    from colorizer import pretrained
    from colorizer.checkpoint import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(pretrained.resolve(args.checkpoint)))


def _verify(args) -> int:
    """--verify: the existing artifact's parity gate; the report on stdout, exit 3 when it fails."""
    from colorizer.export.verify import ParityError, verify_artifact

    given = [fmt.flag for fmt in formats.FORMATS if getattr(args, fmt.dest)]
    if given:
        raise ConfigError(f"--verify checks an existing artifact; give it without {', '.join(given)}")
    if not args.checkpoint:
        raise ConfigError("--verify needs --checkpoint (the generator to check the artifact against)")
    _, path = formats.find_artifact(args.verify)  # a bad path fails before the checkpoint is loaded
    model, _ = _load_model(args)
    try:
        report = verify_artifact(path, model)
    except ParityError as exc:
        if exc.report is not None:
            print(exc.report.format())
        raise
    print(report.format())
    return 0


def main(argv=None) -> int:
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
