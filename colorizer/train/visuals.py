"""Training pictures and the CSV log: sample grids, the loss curve, crash-safe CSV appends.

Every picture is written atomically (a reader never sees half a PNG), and nothing here touches a
random number generator, so writing pictures does not change the training run.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import torch

from colorizer.atomic import write_bytes as atomic_write_bytes
from colorizer.losses import LOSS_NAMES

# train_log.csv columns: one per generator loss term (colorizer.losses.LOSS_TERMS) after the two totals.
LOG_FIELDS = (
    "step",
    "epoch",
    "loss_d",
    "loss_g",
    *LOSS_NAMES,
    "images_per_s",
    "bad_steps",
    "skipped_files",
    "elapsed_s",
)


def _to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [-1, 1] -> (H, W, 3) uint8."""
    x = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 0).numpy()


def palette_tile(palette: torch.Tensor, size: int) -> np.ndarray:
    """(K, 3) uint8 colors -> (size, size, 3) uint8 tile of a 3x3 swatch grid (K <= 9), row-major."""
    tile = np.full((size, size, 3), 255, dtype=np.uint8)
    colors = palette.detach().cpu().to(torch.uint8).numpy()
    cell = size // 3
    for i, color in enumerate(colors[:9]):
        r, c = divmod(i, 3)
        tile[r * cell + 1 : (r + 1) * cell - 1, c * cell + 1 : (c + 1) * cell - 1] = color
    return tile


def sample_grid(
    reference: torch.Tensor,
    sketch: torch.Tensor,
    palette: torch.Tensor,
    output: torch.Tensor,
    truth: torch.Tensor,
) -> np.ndarray:
    """One row per sample: reference | sketch | palette | output | ground truth.

    reference, sketch, output, truth: (N, 3, S, S) in [-1, 1]; palette: (N, K, 3) uint8.
    Returns (N*S, 5*S, 3) uint8.
    """
    size = output.shape[-1]
    rows = []
    for i in range(output.shape[0]):
        tiles = [
            _to_uint8_hwc(reference[i]),
            _to_uint8_hwc(sketch[i]),
            palette_tile(palette[i], size),
            _to_uint8_hwc(output[i]),
            _to_uint8_hwc(truth[i]),
        ]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def write_png(path: str, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array as PNG, atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


class CsvLog:
    """train_log.csv: one row per ``log_every`` steps; each row is flushed and fsync'ed.

    On resume, rows beyond the resumed step (written after the checkpoint by the run that crashed)
    are dropped, so the log matches the training state. A row cut short by a crash is dropped too.
    """

    def __init__(self, path: str):
        self.path = path

    def rows(self) -> list[dict]:
        if not os.path.isfile(self.path):
            return []
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            out = []
            for row in reader:
                if None in row or any(row.get(k) in (None, "") for k in ("step", "loss_d", "loss_g")):
                    continue  # a torn last line
                try:
                    int(row["step"])
                    float(row["loss_g"])
                except ValueError:
                    continue
                out.append(row)
            return out

    def truncate_after(self, step: int) -> None:
        kept = [r for r in self.rows() if int(r["step"]) <= step]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_bytes(self.path, buf.getvalue().encode())

    def append(self, row: dict) -> None:
        new = not os.path.isfile(self.path) or os.path.getsize(self.path) == 0
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            f.flush()
            os.fsync(f.fileno())


def write_loss_curve(log: CsvLog, path: str) -> bool:
    """Plot D loss, G loss and the weighted-free L1 term against the step; False when no rows yet."""
    rows = log.rows()
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    step = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(axes, ("loss_d", "loss_g", "l1"), ("discriminator loss", "generator loss", "L1")):
        ax.plot(step, [float(r[key]) for r in rows], lw=1.2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True
