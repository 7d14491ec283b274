"""Inference: colorize sketches with a trained generator (or an exported engine).

Sizes: the generator needs H and W that are multiples of 128. ``Colorizer`` pads the sketch with white
paper up to the next multiple (or, with ``size=S``, resizes it to S x S) and returns a picture of the
sketch's original size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from colorizer.limits import check_size, padded_size

PAPER = 1.0  # white in [-1, 1]


def sketch_to_tensor(sketch: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) or (H, W) line art -> float32 (3, H, W) in [-1, 1], gray repeated to 3 channels.

    Computed in numpy (one thread, no torch op): the service runs this beside the model, where a torch op
    would start an OpenMP team of its own (``colorizer.serve.batcher``). Bit for bit torch's float32
    ``x / 255 * 2 - 1``."""
    arr = np.asarray(sketch)
    if arr.ndim == 3:
        # ITU-R 601 luma, as PIL's convert("L") and torchvision's to_grayscale
        arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    gray = np.ascontiguousarray(arr, dtype=np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)
    return torch.from_numpy(np.repeat(gray[None], 3, axis=0))


def fit_to_model(sketch: torch.Tensor, size: int | None) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, H', W') with H', W' multiples of 128: pad with paper, or resize to size.

    Padding a CPU tensor is done in numpy (no torch op, as in ``sketch_to_tensor``); a sketch that needs
    none is returned as it is."""
    h, w = sketch.shape[-2:]
    if size is not None:
        check_size(size, "size")
        return F.interpolate(sketch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    ph, pw = padded_size(h, w)
    if (ph, pw) == (h, w):
        return sketch
    if sketch.device.type == "cpu" and not sketch.requires_grad:
        widths = [(0, 0)] * (sketch.dim() - 2) + [(0, ph - h), (0, pw - w)]
        return torch.from_numpy(np.pad(sketch.numpy(), widths, constant_values=PAPER))
    return F.pad(sketch, (0, pw - w, 0, ph - h), value=PAPER)


def restore_size(image: torch.Tensor, height: int, width: int, size: int | None) -> torch.Tensor:
    if size is not None:
        return F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return image[..., :height, :width]


class Colorizer:
    """Colorize sketches of any size with a model: pads (or resizes) to the model's size multiple and back.

    model: a ``colorizer.runtime.runner.Runner``, or anything ``colorizer.runtime.load.load_runner`` takes
    (a Sketch2Color module, a checkpoint, a run folder, a bundled name, an exported engine), loaded on
    ``device`` with ``kernels`` (both "auto" by default: the one policy of ``colorizer.runtime.device``).
    """

    def __init__(self, model, device: str | torch.device = "auto", kernels: str = "auto"):
        from colorizer.runtime.load import load_runner
        from colorizer.runtime.runner import Runner

        self.runner = model if isinstance(model, Runner) else load_runner(model, device=device, kernels=kernels)
        self.device = self.runner.device

    def colorize_batch(self, sketches: torch.Tensor, palettes: torch.Tensor, seed=0, size: int | None = None):
        """sketches: float (N, 1 or 3, H, W) in [-1, 1]; palettes: uint8 (N, 9, 3) or (9, 3); seed: an int in
        [0, 2**31) (picture i uses ``seed_sequence(seed, N)[i]``, colorizer.limits) or N per-picture seeds.

        Returns float (N, 3, H, W) in [-1, 1] at the sketches' own size, on the CPU.
        """
        from colorizer.limits import seed_sequence

        n, _, h, w = sketches.shape
        seeds = seed if isinstance(seed, (torch.Tensor, list, tuple)) else seed_sequence(seed, n)
        x = fit_to_model(sketches.float().expand(-1, 3, -1, -1), size)
        out = self.runner.colorize(x, palettes, seeds)
        return restore_size(out, h, w, size)

    def colorize(self, sketch: np.ndarray, palette: torch.Tensor, seed: int = 0, size: int | None = None) -> np.ndarray:
        """sketch: uint8 (H, W, 3) or (H, W); palette: uint8 (9, 3). Returns uint8 (H, W, 3)."""
        out = self.colorize_batch(sketch_to_tensor(sketch).unsqueeze(0), palette, seed, size)[0]
        return ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
