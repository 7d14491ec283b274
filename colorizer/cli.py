"""The ``colorizer`` command: colorize sketches, extract palettes and sketches, report the setup.

    colorizer colorize --checkpoint C --sketch S --reference R --out O
    colorizer colorize --checkpoint C --sketch DIR --palette "#e0a0a0,#304070" --out OUTDIR
    colorizer palette IMAGE            print the 9-color palette of a reference picture
    colorizer sketch IMAGE --out O     XDoG line art of a color picture
    colorizer info                     versions and which kernel backends work here
    colorizer demo                     train the demo model and colorize the bundled sketch
    colorizer eval MODEL               score a model: L1, PSNR, SSIM, palette-swap following

Errors in the user's input give one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from colorizer.errors import ConfigError, ImageError, run_cli


def _list_images(path: Path) -> list[Path]:
    from colorizer.data import IMAGE_EXTENSIONS, find_images

    if path.is_dir():
        files = find_images(path)
        if not files:
            raise ImageError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return files
    if not path.exists():
        raise ImageError(f"{path}: no such file or folder")
    return [path]


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


def _resolve_checkpoint(path: str) -> str:
    """A checkpoint file, or a training run folder (or its checkpoints/) -> its newest good checkpoint."""
    from colorizer.checkpoint import CheckpointManager
    from colorizer.errors import CheckpointError

    folder = Path(path)
    if not folder.is_dir():
        return path
    if (folder / "checkpoints").is_dir():
        folder = folder / "checkpoints"
    found = CheckpointManager(str(folder)).load_latest_good()
    if found is None:
        raise CheckpointError(f"{path}: no readable checkpoint in this folder")
    return found[0]


def _load_runner(args):
    """A Colorizer over a checkpoint or an exported engine."""
    from colorizer.inference import Colorizer

    if (args.checkpoint is None) == (args.engine is None):
        raise ConfigError("give exactly one of --checkpoint FILE or --engine model.onnx|model.plan")
    if args.engine is not None:
        from colorizer.export.runtime import load_engine

        return Colorizer(load_engine(args.engine, device=args.device), device=args.device)
    from colorizer.checkpoint import load_generator
    from colorizer.ops import KernelsUnavailable

    try:
        generator = load_generator(_resolve_checkpoint(args.checkpoint), map_location="cpu", kernels=args.kernels)
    except KernelsUnavailable as exc:
        from colorizer.errors import MissingDependencyError

        raise MissingDependencyError(str(exc)) from None
    return Colorizer(generator, device=args.device)


def cmd_colorize(args) -> int:
    from tqdm import tqdm

    from colorizer.data import load_image, save_image

    sketches = _list_images(Path(args.sketch))
    out = Path(args.out)
    single = len(sketches) == 1 and not Path(args.sketch).is_dir()
    if not single and _is_image_name(out):
        raise ConfigError(f"--out {out}: a folder of sketches needs an output folder, not a file name")
    if single and not _is_image_name(out):
        out = out / (sketches[0].stem + ".png")
    palette = _palette_from_args(args)
    colorizer = _load_runner(args)
    root = Path(args.sketch)
    failed = 0
    for path in tqdm(sketches, desc="colorize", unit="img", disable=single or not sys.stderr.isatty()):
        try:
            sketch = load_image(path)
        except ImageError as exc:
            if single:
                raise
            print(f"skipped: {exc}", file=sys.stderr)
            failed += 1
            continue
        picture = colorizer.colorize(sketch, palette, seed=args.seed, size=args.size)
        target = out if single else out / path.relative_to(root).with_suffix(".png")
        save_image(target, picture)
    written = len(sketches) - failed
    print(f"wrote {written} image(s) to {out}" + (f"; {failed} unreadable sketch(es) skipped" if failed else ""))
    return 1 if written == 0 else 0


def cmd_palette(args) -> int:
    from colorizer.data import load_image
    from colorizer.palette import extract_palette

    palette = extract_palette(load_image(args.image, min_size=None), k=args.k, seed=args.seed)
    print(",".join(f"#{r:02x}{g:02x}{b:02x}" for r, g, b in palette.tolist()))
    return 0


def cmd_sketch(args) -> int:
    from colorizer.data import load_image, save_image, to_tensor
    from colorizer.sketch import xdog

    image = to_tensor(load_image(args.image, min_size=None)).unsqueeze(0)
    save_image(args.out, xdog(image)[0])
    print(f"wrote {args.out}")
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
    parser = argparse.ArgumentParser(
        prog="colorizer", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("colorize", help="colorize a sketch or a folder of sketches")
    p.add_argument(
        "--checkpoint",
        help="generator checkpoint (ours, or the reference's {'netG': ...} .pth), or a training run folder "
        "(its newest good checkpoint is used)",
    )
    p.add_argument("--engine", help="an exported model.onnx (onnxruntime) or model.plan (TensorRT) instead")
    p.add_argument("--sketch", required=True, help="a line-art image or a folder of them (searched recursively)")
    p.add_argument("--reference", help="a color picture whose 9-color palette is used")
    p.add_argument("--palette", help="colors as '#rrggbb,#rrggbb,...' (fewer than 9 are repeated cyclically)")
    p.add_argument("--out", required=True, help="output .png for one sketch, or an output folder")
    p.add_argument("--size", type=int, default=None, help="resize to SIZExSIZE (multiple of 128) instead of padding")
    p.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same picture")
    p.add_argument("--kernels", default="eager", choices=["eager", "triton", "native"], help="op backend")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu", help="torch device (default: cuda if present)")
    p.set_defaults(fn=cmd_colorize)

    p = sub.add_parser("palette", help="print the palette K-means extracts from a picture")
    p.add_argument("image")
    p.add_argument("--k", type=int, default=9)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_palette)

    p = sub.add_parser("sketch", help="XDoG line art of a color picture")
    p.add_argument("image")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_sketch)

    p = sub.add_parser("info", help="versions and available kernel backends")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("demo", help="train the demo model on synthetic data and colorize the bundled sketch")
    p.add_argument("--out", default="demo_out")
    p.set_defaults(fn=cmd_demo)

    from colorizer.evaluation import add_eval_arguments

    p = sub.add_parser("eval", help="score a model on held-out drawings: L1, PSNR, SSIM, palette-swap following")
    add_eval_arguments(p)
    return parser


def _cuda() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return False
    import torch

    return torch.cuda.is_available()


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
