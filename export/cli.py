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

Overwrite and concurrency rule (the same for every format; ``OVERWRITE_RULE``, printed by --help):
an existing output is replaced only when it is an export of ours (our metadata in the file, or, for a
plan, in its sidecar); anything else there is refused with one line before any work. Only our own
files are written (``model.onnx``; ``X.plan`` + ``X.plan.json``; ``DIR/model.xml``, ``model.bin``,
``gates.json``; ``DIR/colorizer_onnx/``, ``DIR/colorizer_tensorrt/``); nothing else in a folder is
replaced or deleted. Files are put in place under a lock on their folder, where the check is
repeated, so two exports into one place take turns and the last one wins.

``--verify ARTIFACT`` re-checks an artifact that already exists (``verify.verify_artifact``: its
row's runner and verifier, the gate its builder ran) against the checkpoint: it prints the report
and exits 0 when it passes, 3 when it does not, 2 (one line) for a missing or unknown file; it
writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys

from colorizer.errors import ArgumentParser, ColorizerError, ConfigError, one_line, run_cli
from colorizer.export import formats
from colorizer.export.interface import NOISE_MODES, check_noise_mode
from colorizer.export.onnx_export import DEFAULT_OPSET, check_opset
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


OVERWRITE_RULE = (
    "Existing outputs: a file or folder already at an output path is replaced only when it is an export "
    "of colorizer-export (recognised by the metadata it carries); anything else is refused with one line "
    "before any work, so nothing of yours is ever replaced. Only the export's own files are written "
    "(--openvino DIR: model.xml, model.bin, gates.json; --triton-repo DIR: colorizer_onnx/, "
    "colorizer_tensorrt/); other files in those folders are left alone. Two exports into the same place "
    "take turns when they put their files in place; the one that finishes last is what stays."
)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="colorizer-export",
        description="Export a Sketch2Color generator to ONNX, TensorRT, OpenVINO and a Triton model repository.",
        epilog=OVERWRITE_RULE,
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
    _check_precision_is_used(args)
    _check_distinct_outputs(args)
    batch = ShapeRange.parse(args.batch, "batch")
    size = ShapeRange.parse(args.size, "size")
    check_size_range(size)
    for fmt in formats.FORMATS:  # before any work, so a bad option or a missing dependency writes nothing
        fmt.load_module().cli_check(args, batch, size)
    return batch, size


def _check_distinct_outputs(args) -> None:
    """ConfigError when two requested formats name the same output path (the second would fail half
    way, after the first was written, or write into the first's files)."""
    seen: dict[str, str] = {}
    for fmt in formats.FORMATS:
        value = getattr(args, fmt.dest)
        if not value:
            continue
        path = os.path.realpath(value)
        if path in seen:
            raise ConfigError(f"{seen[path]} and {fmt.flag} name the same path {value}; give each its own")
        seen[path] = fmt.flag


def _check_precision_is_used(args) -> None:
    """--precision is an error unless a requested format takes it (an .onnx is always fp32: int8
    asked of --onnx alone would silently give fp32); each such format checks the value itself."""
    if not args.precision:
        return
    takers = [fmt for fmt in formats.FORMATS if fmt.precision_label and getattr(args, fmt.dest)]
    if not takers:
        requested = [fmt.flag for fmt in formats.FORMATS if getattr(args, fmt.dest)]
        flags = [fmt.flag for fmt in formats.FORMATS if fmt.precision_label]
        raise ConfigError(
            f"--precision {args.precision}: {', '.join(requested)} does not take a precision (an ONNX export is "
            f"fp32); --precision applies to {' and '.join(flags)}"
        )
    for fmt in takers:
        module = fmt.load_module()
        if args.precision not in module.PRECISIONS:
            raise ConfigError(f"--precision {args.precision}: {fmt.flag} takes {', '.join(module.PRECISIONS)}")


def _sweep_stale(args) -> list[str]:
    """Remove what killed exports left (their temporaries next to this run's outputs, their scratch
    folders in the system temp folder); only names of ours, only of processes that are gone."""
    from colorizer import atomic
    from colorizer.export.openvino import XML_NAME
    from colorizer.export.tensorrt import SIDECAR_SUFFIX
    from colorizer.export.triton_repo import ONNX_MODEL_NAME, TENSORRT_MODEL_NAME

    places = []
    for path in (args.onnx, args.trt):
        if path:
            path = os.path.abspath(path)
            places.append((os.path.dirname(path), [os.path.basename(path), os.path.basename(path) + SIDECAR_SUFFIX]))
    if args.openvino:
        folder = os.path.abspath(args.openvino)
        places += [(folder, [XML_NAME]), (os.path.dirname(folder), [os.path.basename(folder)])]
    if args.triton_repo:
        places.append((os.path.abspath(args.triton_repo), [ONNX_MODEL_NAME, TENSORRT_MODEL_NAME]))
    removed = []
    for folder, finals in places:
        removed += atomic.remove_stale_temp_files(folder, finals)
    for prefix in SCRATCH_PREFIXES:
        removed += atomic.remove_stale_scratch(prefix)
    return removed


SCRATCH_PREFIXES = ("colorizer-export-", "colorizer-openvino-")


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
    from colorizer import atomic
    from colorizer.export.verify import ParityError

    for path in _sweep_stale(args):
        print(f"removed {path}, left by an interrupted export", file=sys.stderr)
    model, sha256 = _load_model(args)
    written: list[str] = []  # what earlier formats of this run wrote, for a later format's error
    with atomic.scratch_directory(SCRATCH_PREFIXES[0]) as scratch:
        job = formats.ExportJob(args, model, sha256, batch, size, scratch)
        for fmt in formats.build_order(f.name for f in formats.FORMATS if job.requested(f)):
            try:
                done = fmt.load_module().cli_export(job)
            except ParityError as exc:  # the gate's full report above its one-line error
                _print_report(exc.report)
                _say_what_was_written(exc, fmt, written)
                raise
            except ColorizerError as exc:
                _say_what_was_written(exc, fmt, written)
                raise
            for report in done.reports:
                _print_report(report)
            if done.message:
                print(done.message)
                written.append(f"{fmt.flag} {getattr(args, fmt.dest)}")
            job.outputs[fmt.name] = done.result
    return 0


def _say_what_was_written(exc: ColorizerError, fmt, written: list[str]) -> None:
    """End a later format's one-line error with what this run did write (kept, complete, gated)."""
    if written:
        text = one_line(exc)
        kept = f"{' and '.join(written)} {'was' if len(written) == 1 else 'were'} written and kept"
        exc.args = (f"{text}; {fmt.flag} was not written; {kept}",)


def _load_model(args):
    """(generator, sha256) of --checkpoint: a file, a training run folder, or a bundled model's name
    (colorizer.runtime.load, as colorize and eval)."""
    from colorizer.export.artifact import sha256_file
    from colorizer.runtime.load import load_colorizer

    model, ref = load_colorizer(args.checkpoint)
    return model, sha256_file(ref.path)


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
