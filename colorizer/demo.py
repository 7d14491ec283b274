"""``make demo``: train the demo model on the built-in synthetic data, then colorize the bundled sketch.

Everything is embedded: no download, no data set. The training preset is ``colorizer/configs/demo.yaml``
(a small generator at 128 px that learns visibly within minutes on two CPU cores). Outputs land in
``demo_out/``: the trainer's checkpoints, sample grids, log and loss curve under ``train/``, and the final
colorization of ``colorizer/assets/demo_sketch.png`` with the palette of ``demo_reference.png``.
"""

from __future__ import annotations

import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np


def asset(name: str) -> Path:
    return Path(str(resources.files("colorizer") / "assets" / name))


def palette_strip(palette: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (9, 3) -> uint8 (height, width, 3) of vertical color bands."""
    idx = np.minimum(np.arange(width) * len(palette) // width, len(palette) - 1)
    return np.broadcast_to(palette[idx][None], (height, width, 3)).copy()


def run_demo(out_dir: str = "demo_out", seed: int = 0) -> int:
    from colorizer.checkpoint import CheckpointManager, load_generator
    from colorizer.data import load_image, save_image
    from colorizer.errors import ColorizerError
    from colorizer.inference import Colorizer
    from colorizer.palette import extract_palette
    from colorizer.train.__main__ import main as train_main

    out = Path(out_dir)
    train_dir = out / "train"
    start = time.time()
    print(f"[demo] training the demo model on synthetic drawings -> {train_dir}", flush=True)
    code = train_main(["--preset", "demo", "--out", str(train_dir), "--resume", "auto"])
    if code:
        return code
    found = CheckpointManager(str(train_dir / "checkpoints")).checkpoints()
    if not found:
        raise ColorizerError(f"training wrote no checkpoint under {train_dir / 'checkpoints'}")
    checkpoint = found[-1][1]

    sketch = load_image(asset("demo_sketch.png"))
    reference = load_image(asset("demo_reference.png"))
    palette = extract_palette(reference, seed=seed)
    colorizer = Colorizer(load_generator(checkpoint))
    picture = colorizer.colorize(sketch, palette, seed=seed)
    h, w = sketch.shape[:2]
    panel = np.concatenate([reference, sketch, palette_strip(palette.numpy(), h, w // 4), picture], axis=1)
    save_image(out / "colorized.png", picture)
    save_image(out / "panel.png", panel)
    minutes = (time.time() - start) / 60
    print(f"[demo] done in {minutes:.1f} min. Pictures:")
    print(f"  {out / 'panel.png'}      reference | sketch | palette | colorized")
    print(f"  {out / 'colorized.png'}  the bundled sketch painted with the reference's palette")
    print(f"  {train_dir / 'samples'}/  sample grids during training (reference | sketch | palette | output | truth)")
    print(f"  {train_dir / 'loss_curve.png'}  loss curves;  checkpoint: {checkpoint}")
    return 0


if __name__ == "__main__":
    from colorizer.errors import run_cli

    sys.exit(run_cli(lambda argv: run_demo()))
