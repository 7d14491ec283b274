"""``make demo``: the bundled model follows palette swaps; then a model is trained from scratch and scored.

Everything is embedded: no download, no data set. Three parts, all writing under ``demo_out/``:

1. ``swap_panel.png`` (seconds): the bundled model ``demo`` (``colorizer.pretrained``) colorizes the
   bundled sketch ``colorizer/assets/demo_sketch.png`` under the palette of ``demo_reference.png`` and
   under the palettes of three other synthetic drawings (``PANEL_PALETTES``: yellow, pink and green
   main colors). Columns: sketch | reference (its palette below) | one output per palette, the palette
   it was given below it.
2. ``train/`` (about 5 minutes on two CPU cores): a model trained from scratch with the demo preset
   (``colorizer/configs/demo.yaml``): checkpoints, sample grids, log and loss curve.
3. ``eval/``: ``colorizer eval`` of that model on 64 held-out drawings at 256 px (table printed), and
   ``trained_swap_panel.png``, part 1's panel drawn by the model just trained.
"""

from __future__ import annotations

import os
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

# Synthetic drawings (seed, index) whose palettes the panel uses besides the reference's: main colors
# yellow (hue 0.13), pink (0.90) and green (0.35), against the reference's blue-violet (0.64).
PANEL_PALETTES = ((7, 8), (7, 9), (7, 1))
STRIP_HEIGHT = 24
GAP = 4
EVAL_COUNT = 64
EVAL_SIZE = 256


def asset(name: str) -> Path:
    """A bundled picture (colorizer/assets/, written by ``write_demo_assets``)."""
    return Path(str(resources.files("colorizer") / "assets" / name))


def write_demo_assets(directory: str | os.PathLike, seed: int = 0, sketch_index: int = 16, reference_index: int = 27):
    """Write the bundled demo pictures into ``directory`` and return their paths.

    ``demo_sketch.png``: the line art of synthetic drawing (seed, sketch_index), 256 x 256 gray.
    ``demo_reference.png``: the color drawing (seed, reference_index), 256 x 256 RGB, whose palette
    differs from the sketch's own drawing, so the demo shows colors coming from the reference.
    The committed files in colorizer/assets/ were made with the defaults:
    ``python -c "from colorizer.demo import write_demo_assets; write_demo_assets('colorizer/assets')"``.
    """
    from colorizer.data.images import save_image
    from colorizer.data.synthetic import BASE_SIZE, render_drawing

    directory = Path(directory)
    _, sketch = render_drawing(seed, sketch_index, BASE_SIZE)
    reference, _ = render_drawing(seed, reference_index, BASE_SIZE)
    sketch_path = save_image(directory / "demo_sketch.png", sketch)
    reference_path = save_image(directory / "demo_reference.png", reference)
    return sketch_path, reference_path


def palette_strip(palette: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (9, 3) -> uint8 (height, width, 3) of vertical color bands."""
    idx = np.minimum(np.arange(width) * len(palette) // width, len(palette) - 1)
    return np.broadcast_to(palette[idx][None], (height, width, 3)).copy()


def panel_palettes(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 (9, 3) palette): the reference's, then those of ``PANEL_PALETTES``."""
    from colorizer.data import load_image
    from colorizer.data.synthetic import render_drawing
    from colorizer.palette import extract_palette

    out = [("reference", extract_palette(load_image(asset("demo_reference.png")), seed=seed).numpy())]
    for s, i in PANEL_PALETTES:
        color, _ = render_drawing(s, i)
        out.append((f"drawing {s}/{i}", extract_palette(color, seed=seed).numpy()))
    return out


def swap_panel(model="demo", seed: int = 0) -> np.ndarray:
    """The palette-swap panel (uint8 RGB) of ``model`` (a bundled name, a checkpoint or a module)."""
    import torch

    from colorizer.data import load_image
    from colorizer.inference import Colorizer

    sketch = load_image(asset("demo_sketch.png"))
    reference = load_image(asset("demo_reference.png"))
    h, w = sketch.shape[:2]
    colorizer = Colorizer(model)
    palettes = panel_palettes(seed)
    blank = np.full((STRIP_HEIGHT, w, 3), 255, np.uint8)
    gap = np.full((h + STRIP_HEIGHT, GAP, 3), 255, np.uint8)
    sketch_rgb = np.repeat(sketch[..., None], 3, axis=2) if sketch.ndim == 2 else sketch
    tiles = [
        np.concatenate([sketch_rgb, blank]),
        np.concatenate([reference, palette_strip(palettes[0][1], STRIP_HEIGHT, w)]),
    ]
    for _, palette in palettes:
        picture = colorizer.colorize(sketch, torch.from_numpy(palette), seed=seed)
        tiles.append(np.concatenate([picture, palette_strip(palette, STRIP_HEIGHT, w)]))
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    return np.concatenate(row, axis=1)


def run_demo(
    out_dir: str = "demo_out",
    seed: int = 0,
    train_args: tuple[str, ...] = (),
    eval_count: int = EVAL_COUNT,
    eval_size: int = EVAL_SIZE,
) -> int:
    """The three parts (module docstring). ``train_args``: extra trainer options after ``--preset demo``;
    ``eval_count``, ``eval_size``: the scoring set (tests use small values; the demo the defaults)."""
    from colorizer.checkpoint import CheckpointManager
    from colorizer.data import save_image
    from colorizer.errors import ColorizerError
    from colorizer.evaluation import evaluate
    from colorizer.pretrained import DEFAULT, MODELS
    from colorizer.train.__main__ import main as train_main

    out = Path(out_dir)
    train_dir = out / "train"
    start = time.time()

    print(f"[demo] 1/3 the bundled model {DEFAULT!r} ({MODELS[DEFAULT].description})", flush=True)
    print("[demo]     colorizes the bundled sketch under the reference's palette and three others", flush=True)
    panel = save_image(out / "swap_panel.png", swap_panel(DEFAULT, seed))
    print(f"[demo]     -> {panel}  sketch | reference | output per palette (its palette below it)", flush=True)

    print(f"[demo] 2/3 training a model from scratch with the demo preset -> {train_dir}", flush=True)
    code = train_main(["--preset", "demo", "--out", str(train_dir), "--resume", "auto", *train_args])
    if code:
        return code
    found = CheckpointManager(str(train_dir / "checkpoints")).checkpoints()
    if not found:
        raise ColorizerError(f"training wrote no checkpoint under {train_dir / 'checkpoints'}")
    checkpoint = found[-1][1]

    print(f"[demo] 3/3 scoring it: colorizer eval on {eval_count} held-out drawings at {eval_size} px", flush=True)
    report = evaluate(checkpoint, count=eval_count, size=eval_size, device="cpu")
    paths = report.write(out / "eval")
    print(report.to_markdown(), flush=True)
    trained_panel = save_image(out / "trained_swap_panel.png", swap_panel(checkpoint, seed))
    minutes = (time.time() - start) / 60
    print(f"[demo] done in {minutes:.1f} min. Pictures:")
    print(f"  {panel}  the bundled model under four palettes")
    print(f"  {trained_panel}  the same with the model trained just now")
    print(f"  {paths['markdown']}, {paths.get('contact_sheet', '')}  its scores and contact sheet")
    print(f"  {train_dir / 'samples'}/  sample grids during training (reference | sketch | palette | output | truth)")
    print(f"  {train_dir / 'loss_curve.png'}  loss curves;  checkpoint: {checkpoint}")
    return 0


if __name__ == "__main__":
    from colorizer.errors import run_cli

    sys.exit(run_cli(lambda argv: run_demo()))
