"""The ``colorizer`` command: colorize sketches, extract palettes and sketches, report the setup.

    colorizer colorize --checkpoint C --sketch S --reference R --out O
    colorizer colorize --checkpoint C --sketch DIR --palette "#e0a0a0,#304070" --out OUTDIR
    colorizer palette IMAGE            print the 9-color palette of a reference picture
    colorizer sketch IMAGE --out O     XDoG line art of a color picture (never over IMAGE or an existing O)
    colorizer info                     versions and which kernel backends work here
    colorizer demo                     train the demo model and colorize the bundled sketch
    colorizer eval MODEL               score a model: L1, PSNR, SSIM, palette-swap following
    colorizer serve [MODEL]            colorization over HTTP, with a page for artists at /

Errors in the user's input give one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from colorizer.errors import ArgumentParser, ConfigError, ImageError, run_cli


def _list_images(path: Path):
    """(sketches, others): the pictures to read and, for a folder, every other entry with the reason it
    is passed over (``colorizer.data.images.scan_folder``, one walk)."""
    from colorizer.data import IMAGE_EXTENSIONS
    from colorizer.data.images import NOT_A_PICTURE, scan_folder

    if path.is_dir():
        scan = scan_folder(path)
        if not scan.images:
            also = ""
            if scan.others:
                (first, why), n = scan.others[0], len(scan.others)
                why = "" if why == NOT_A_PICTURE else f": {why}"  # the types are listed already
                also = f" ({n} other {'entry' if n == 1 else 'entries'}, e.g. {first.name}{why})"
            raise ImageError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder{also}")
        return scan.images, scan.others
    if not path.exists():
        raise ImageError(f"{path}: {'a broken link' if path.is_symlink() else 'no such file or folder'}")
    return [path], []


def _writable_extensions() -> tuple[str, ...]:
    from PIL import Image

    from colorizer.data import IMAGE_EXTENSIONS

    registered = Image.registered_extensions()
    return tuple(e for e in IMAGE_EXTENSIONS if registered.get(e) in Image.SAVE)


def _is_image_name(path: Path) -> bool:
    from colorizer.data.images import is_image_file

    return is_image_file(path)


def _palette_from_args(args):
    from colorizer.data import load_image
    from colorizer.palette import extract_palette, parse_palette

    if (args.reference is None) == (args.palette is None):
        raise ConfigError("give exactly one of --reference IMAGE or --palette '#rrggbb,...'")
    if args.palette is not None:
        return parse_palette(args.palette)
    return extract_palette(load_image(args.reference, min_size=None), seed=args.seed)


def _load_runner(args):
    """A Colorizer over --checkpoint or --engine (colorizer.runtime.load: any model reference), on --device
    with --kernels. Without either, the bundled model; the note saying so comes after it loaded."""
    from colorizer.inference import Colorizer
    from colorizer.runtime.load import load_runner

    if args.checkpoint is not None and args.engine is not None:
        raise ConfigError("give one of --checkpoint FILE or --engine model.onnx|model.xml|model.plan, not both")
    bundled = args.checkpoint is None and args.engine is None
    if bundled:
        from colorizer.pretrained import DEFAULT

        args.checkpoint = DEFAULT
    colorizer = Colorizer(load_runner(args.engine or args.checkpoint, device=args.device, kernels=args.kernels))
    if bundled:
        from colorizer.pretrained import MODELS

        note = f"colorizer: no --checkpoint given, using the bundled model {args.checkpoint!r}"
        print(f"{note}: {MODELS[args.checkpoint].description}", file=sys.stderr)
    return colorizer


def _check_out_name(out: Path) -> None:
    """A name with a suffix is a file name: refuse one we cannot write (x.gif, x.txt) in one line."""
    if out.suffix and not out.is_dir() and out.suffix.lower() not in _writable_extensions():
        raise ConfigError(
            f"--out {out}: cannot write {out.suffix} pictures (use {', '.join(_writable_extensions())}); "
            "to write into a folder of that name, create the folder first"
        )


def _key(path: Path) -> str:
    # Outputs that differ only in case collide on case-insensitive file systems (macOS, Windows).
    return os.path.normcase(os.path.abspath(path)).lower()


def plan_outputs(sketch_arg: Path, sketches: list[Path], out: Path, overwrite: bool, protected=()) -> list[Path]:
    """The output path of every sketch; ConfigError (one line) before anything is written when
    two outputs would collide, an output would replace an input, or (without ``overwrite``) an
    output file exists already.

    Names: OUT/<relative path>.png; where two sketches share that name (x.png, x.jpg, x.webp),
    every one but the .png keeps its extension: x.jpg.png, x.webp.png.
    """
    single = len(sketches) == 1 and not sketch_arg.is_dir()
    if single:
        targets = [out if _is_image_name(out) else out / (sketches[0].stem + ".png")]
    else:
        rel = [p.relative_to(sketch_arg) for p in sketches]
        first = [r.with_suffix(".png") for r in rel]
        count: dict[str, int] = {}
        for r in first:
            count[_key(out / r)] = count.get(_key(out / r), 0) + 1
        targets = [
            out / (r.with_name(r.name + ".png") if count[_key(out / f)] > 1 and r.suffix.lower() != ".png" else f)
            for r, f in zip(rel, first)
        ]
        seen: dict[str, Path] = {}
        clashes = []
        for src, t in zip(sketches, targets):
            if _key(t) in seen:
                clashes.append(f"{seen[_key(t)].name} and {src.name} -> {t}")
            seen.setdefault(_key(t), src)
        if clashes:
            more = f" (+{len(clashes) - 2} more)" if len(clashes) > 2 else ""
            raise ConfigError(f"outputs would collide: {'; '.join(clashes[:2])}{more}; rename the sketches")
    inputs = {_key(p.resolve()): p for p in [*sketches, *protected]}
    for t in targets:
        hit = inputs.get(_key(t.resolve()))
        if hit is not None:
            raise ConfigError(f"--out {out}: would write over the input {hit}; choose another output folder or name")
    for t in targets[:1] if single else targets:
        blocker = next((a for a in t.parents if a.exists() and not a.is_dir()), None)
        if blocker is not None:
            raise ConfigError(f"cannot write {t}: {blocker} is a file, not a folder")
    folders = [t for t in targets if t.is_dir()]
    if folders:
        raise ConfigError(f"cannot write {folders[0]}: a folder of that name exists")
    if not overwrite:
        existing = [t for t in targets if os.path.lexists(t)]  # a dangling link too: writing would replace it
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise ConfigError(
                f"{existing[0]}{more} already exist(s); pass --overwrite to replace, or choose another --out"
            )
    return targets


def _outside(paths: list[Path], folder: Path) -> list[Path]:
    """``paths`` without those under ``folder`` (an output folder inside the sketch folder)."""
    top = folder.resolve()
    return [p for p in paths if top not in p.resolve().parents]


def _sweep_stale_temporaries(targets: list[Path]) -> None:
    """Remove the temporaries that a killed earlier run (``kill -9``, power loss) left for these outputs;
    only those of these names, whose writer is gone (``colorizer.atomic.remove_stale_temp_files``)."""
    from colorizer.atomic import remove_stale_temp_files

    folders: dict[Path, list[str]] = {}
    for target in targets:
        folders.setdefault(target.parent, []).append(target.name)
    for folder, names in folders.items():
        remove_stale_temp_files(folder, finals=names)


def cmd_colorize(args) -> int:
    from colorizer.data import load_image, save_image
    from colorizer.errors import ColorizerError, one_line
    from colorizer.limits import check_seed, padded_size
    from colorizer.progress import progress_bar

    seed = check_seed(args.seed, "--seed")
    if args.size is not None:
        from colorizer.limits import check_size

        check_size(args.size, "size")
    root = Path(args.sketch)
    out = Path(args.out)
    _check_out_name(out)
    sketches, others = _list_images(root)
    single = len(sketches) == 1 and not root.is_dir()
    if not single:
        if _is_image_name(out):
            raise ConfigError(f"--out {out}: a folder of sketches needs an output folder, not a file name")
        if out.resolve() == root.resolve():
            raise ConfigError(
                f"--out {out} is the sketch folder: the pictures would mix with (and could replace) the sketches; "
                "choose another output folder"
            )
        sketches = _outside(sketches, out)  # earlier results in OUT inside the sketch folder are not inputs
        inside = set(_outside([p for p, _ in others], out))
        others = [(p, why) for p, why in others if p in inside]
        if not sketches:
            raise ImageError(f"{root}: no sketches outside the output folder {out}")
    protected = [Path(args.reference)] if args.reference else []
    targets = plan_outputs(root, sketches, out, args.overwrite, protected)
    for other, why in others:
        print(f"skipped: {other}: {why}", file=sys.stderr)
    palette = _palette_from_args(args)
    colorizer = _load_runner(args)
    _sweep_stale_temporaries(targets)
    skipped, appeared = [], []  # unusable sketches; outputs another process created during the run
    written = 0
    bar = None if single else progress_bar(len(sketches), desc="colorize", unit="img")
    try:
        for path, target in zip(sketches, targets):
            try:
                sketch = load_image(path)
                if args.size is None:
                    padded_size(*sketch.shape[:2])  # one sketch too large for the model is one skip
            except (ImageError, ConfigError) as exc:
                if single:
                    raise
                skipped.append(str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}")
                if bar is not None:
                    bar.update(1)
                continue
            picture = _colorize_one(colorizer, sketch, palette, seed, args.size, path)
            try:
                # Without --overwrite the existence check of plan_outputs is repeated at the write, as one
                # atomic step: a file that took the name since (another run into the same --out) is kept.
                save_image(target, picture, exclusive=not args.overwrite)
                written += 1
            except FileExistsError:
                appeared.append(target)
            if bar is not None:
                bar.update(1)
    except ColorizerError as exc:  # a disk that fills, a folder made read-only, memory: say what was done
        if single or not written:
            raise
        raise type(exc)(
            f"{one_line(exc)}; {written} of {len(sketches)} picture(s) were written to {out} before that, the rest "
            "were not"
        ) from None
    finally:
        if bar is not None:
            bar.close()
    if written == 0 and not appeared:
        raise ImageError(f"{root}: none of the {len(sketches)} sketch(es) could be read or used (e.g. {skipped[0]})")
    for reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    where = targets[0] if single else out
    if appeared:
        more = f" and {len(appeared) - 1} more" if len(appeared) > 1 else ""
        unreadable = f"; {len(skipped)} unusable sketch(es) skipped" if skipped else ""
        raise ColorizerError(
            f"{len(appeared)} picture(s) not written: {appeared[0]}{more} appeared during the run (another process "
            f"writing there?) and {'was' if len(appeared) == 1 else 'were'} kept; wrote {written} image(s) to "
            f"{where}{unreadable}; pass --overwrite to replace"
        )
    print(f"wrote {written} image(s) to {where}" + (f"; {len(skipped)} unusable sketch(es) skipped" if skipped else ""))
    return 0


def _colorize_one(colorizer, sketch, palette, seed, size, path):
    """One picture; an allocation failure becomes one line naming the size and what to do."""
    from colorizer.limits import padded_size

    try:
        return colorizer.colorize(sketch, palette, seed=seed, size=size)
    except (MemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise
        h, w = sketch.shape[:2]
        ph, pw = (size, size) if size else padded_size(h, w)
        from colorizer.errors import ResourceError

        raise ResourceError(
            f"{path}: not enough memory on {colorizer.device} to colorize a {w}x{h} sketch (run at {pw}x{ph}); "
            "use --size 512 (or smaller) to work at a lower resolution, cut the sketch into tiles, or use a "
            "machine (GPU) with more memory"
        ) from None


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return "out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate memory" in text


def cmd_palette(args) -> int:
    from colorizer.data import load_image
    from colorizer.limits import check_seed
    from colorizer.palette import MAX_K, extract_palette

    if not 1 <= args.k <= MAX_K:
        raise ConfigError(f"--k must be from 1 to {MAX_K} colors, got {args.k}")
    seed = check_seed(args.seed, "--seed")
    palette = extract_palette(load_image(args.image, min_size=None), k=args.k, seed=seed)
    distinct = len({tuple(c) for c in palette.tolist()})
    if distinct < args.k:
        print(
            f"warning: the picture has only {distinct} distinct color(s) for --k {args.k}; the palette repeats them",
            file=sys.stderr,
        )
    print(",".join(f"#{r:02x}{g:02x}{b:02x}" for r, g, b in palette.tolist()))
    return 0


def cmd_sketch(args) -> int:
    from colorizer.data import load_image, save_image, to_tensor
    from colorizer.sketch import xdog

    source, out = Path(args.image), Path(args.out)
    _check_out_name(out)
    image = to_tensor(load_image(source, min_size=None)).unsqueeze(0)
    # colorize's rules (plan_outputs): never over the input, an existing file only with --overwrite, and
    # without it the check is repeated atomically at the write.
    target = plan_outputs(source, [source], out, args.overwrite)[0]
    try:
        save_image(target, xdog(image)[0], exclusive=not args.overwrite)
    except FileExistsError:
        from colorizer.errors import ColorizerError

        raise ColorizerError(
            f"{target} appeared during the run (another process writing there?) and was kept; nothing was written; "
            "pass --overwrite to replace"
        ) from None
    print(f"wrote {target}")
    return 0


def cmd_info(args) -> int:
    import platform

    import torch

    from colorizer import __version__
    from colorizer.ops import available_backends

    print(f"colorizer {__version__}, torch {torch.__version__}, python {platform.python_version()}")
    print(f"cuda: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}")
    for name, status in available_backends().items():
        print(f"kernels={name}: {status}")
    return 0


def cmd_demo(args) -> int:
    from colorizer.demo import run_demo

    return run_demo(out_dir=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="colorizer", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("colorize", help="colorize a sketch or a folder of sketches")
    p.add_argument(
        "--checkpoint",
        help="generator checkpoint (ours, or the reference's {'netG': ...} .pth), a training run folder "
        "(its newest good checkpoint is used), or a bundled model's name (default: the bundled 'demo' model, "
        "trained on the built-in synthetic drawings)",
    )
    p.add_argument(
        "--engine",
        help="an exported engine instead: model.onnx (onnxruntime), model.xml (OpenVINO), model.plan (TensorRT)",
    )
    p.add_argument("--sketch", required=True, help="a line-art image or a folder of them (searched recursively)")
    p.add_argument("--reference", help="a color picture whose 9-color palette is used")
    p.add_argument("--palette", help="colors as '#rrggbb,#rrggbb,...' (fewer than 9 are repeated cyclically)")
    p.add_argument("--out", required=True, help="output .png for one sketch, or an output folder")
    p.add_argument("--size", type=int, default=None, help="resize to SIZExSIZE (multiple of 128) instead of padding")
    p.add_argument(
        "--seed", type=int, default=0, help="noise seed, 0 to 2**31 - 1: the same seed gives the same picture"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that exist already (default: refuse, nothing is written)",
    )
    from colorizer.runtime.device import add_device_options

    add_device_options(p)
    p.set_defaults(fn=cmd_colorize)

    p = sub.add_parser("palette", help="print the palette K-means extracts from a picture")
    p.add_argument("image")
    p.add_argument("--k", type=int, default=9, help="number of colors, 1 to 256 (default 9, the model's)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed, 0 to 2**31 - 1")
    p.set_defaults(fn=cmd_palette)

    p = sub.add_parser("sketch", help="XDoG line art of a color picture")
    p.add_argument("image")
    p.add_argument("--out", required=True, help="output picture (.png, .jpg, ...), or a folder for IMAGE's name .png")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an output file that exists already (default: refuse)"
    )
    p.set_defaults(fn=cmd_sketch)

    p = sub.add_parser("info", help="versions and available kernel backends")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("demo", help="train the demo model on synthetic data and colorize the bundled sketch")
    p.add_argument("--out", default="demo_out")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("eval", help="score a model on held-out drawings: L1, PSNR, SSIM, palette-swap following")
    add_eval_arguments(p)

    from colorizer.serve.cli import add_serve_arguments

    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP: dynamic batching, Prometheus metrics, a page for artists at /",
        description="Colorization over HTTP (FastAPI on uvicorn): POST /v1/colorize, POST /v1/palette, GET "
        "/v1/model, /healthz, /readyz, /metrics, the page at /, the API docs at /docs. Needs the serve extra "
        "(pip install 'colorizer[serve]').",
    )
    add_serve_arguments(p)
    return parser


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``colorizer eval``; sets ``fn=run_eval``."""
    from colorizer.scoring import CONTACT_ROWS, DEFAULT_BATCH_SIZE, DEFAULT_COUNT, DEFAULT_SIZE, EVAL_SEED

    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a checkpoint, a training run folder (newest good checkpoint), a bundled model name (demo), "
        "or an exported engine (.onnx, model.xml, .plan)",
    )
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"pictures to score (default {DEFAULT_COUNT})")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="picture size, a multiple of 128 (default 256)")
    parser.add_argument(
        "--seed", type=int, default=EVAL_SEED, help=f"synthetic drawing stream (default {EVAL_SEED}, never trained on)"
    )
    parser.add_argument(
        "--noise-seed", type=int, default=0, help="picture i uses noise seed N + i (modulo 2**31, colorizer.limits)"
    )
    parser.add_argument("--out", default="eval_out", help="folder for eval.json, eval.md, contact_sheet.png")
    parser.add_argument("--data", default="synthetic", choices=["synthetic", "folder"], help="what to score on")
    parser.add_argument("--data-root", help="with --data folder: a folder of color pictures (searched recursively)")
    from colorizer.runtime.device import add_device_options

    add_device_options(parser)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="pictures per forward")
    parser.add_argument("--rows", type=int, default=CONTACT_ROWS, help="rows of the contact sheet")
    parser.add_argument("--overwrite", action="store_true", help="replace the report files in --out if present")
    parser.set_defaults(fn=run_eval)
    return parser


def run_eval(args) -> int:
    """``colorizer eval``: evaluate, print the Markdown table, write the three files into --out."""
    from colorizer.evaluation import check_outputs, evaluate

    if not args.overwrite:
        check_outputs(args.out, "--overwrite")  # before the work, not after it
    report = evaluate(
        args.model,
        count=args.count,
        size=args.size,
        seed=args.seed,
        noise_seed=args.noise_seed,
        data=args.data,
        data_root=args.data_root,
        device=args.device,
        kernels=args.kernels,
        batch_size=args.batch_size,
        rows=args.rows,
    )
    paths = report.write(args.out, overwrite=args.overwrite)
    print(report.to_markdown(), end="")
    print(f"wrote {', '.join(p.name for p in paths.values())} to {args.out} ({report.settings['elapsed_s']} s)")
    return 0


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


def main(argv=None) -> int:
    from colorizer.runtime.allocator import tune_malloc

    tune_malloc()  # before the model's first allocation (colorizer.runtime.allocator says why)
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
