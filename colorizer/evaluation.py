"""Score a colorizer on held-out drawings: does it paint the sketch in the palette's colors?

    colorizer eval runs/demo                     a training run folder (its newest good checkpoint)
    colorizer eval model.onnx --count 128        an exported engine (.onnx, .plan)
    colorizer eval netG.pth --data folder --data-root my_pictures/

Library::

    from colorizer.evaluation import evaluate
    report = evaluate("runs/demo/checkpoints/latest.safetensors", count=64)
    report.metrics["swap_following"], report.to_markdown()
    report.write("eval_out")  # eval.json, eval.md, contact_sheet.png

What is measured, on which drawings, is ``colorizer.scoring`` (its docstring defines every metric).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from colorizer.errors import ConfigError
from colorizer.limits import check_seed, check_size
from colorizer.runtime.load import load_runner
from colorizer.runtime.runner import Runner
from colorizer.scoring import (
    CONTACT_ROWS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_COUNT,
    DEFAULT_NOISE_SEED,
    DEFAULT_SIZE,
    EVAL_SEED,
    METRICS,
    PALETTE_SEED,
    _check_count,
    _not_int,
    colorize_set,
    contact_sheet,
    folder_set,
    score_outputs,
    synthetic_set,
)

__all__ = ["Report", "check_outputs", "evaluate"]

# Bytes an evaluation holds per pixel of each picture: the truth (3), the sketch (float32, 4), the two
# outputs (2 x 3) and the rendering's intermediates. Measured: a peak of 30 bytes per pixel (synthetic_set
# of 128 drawings at 256 px plus the two outputs, 2026-12-07); the check uses 24, a lower bound, so it
# refuses only what cannot fit.
EVAL_BYTES_PER_PIXEL = 24


def _check_memory(count: int, size: int) -> None:
    """ResourceError (one line) when ``count`` pictures of ``size`` px cannot fit in this machine's memory,
    before hours of drawing end in an allocation failure."""
    from colorizer.errors import ResourceError

    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not every platform reports it
        return
    need = count * size * size * EVAL_BYTES_PER_PIXEL
    if need > total:
        raise ResourceError(
            f"--count {count} at --size {size} needs about {need / 2**30:.1f} GiB for the pictures, more than this "
            f"machine's {total / 2**30:.1f} GiB of memory; use a smaller --count or --size"
        )


# ----------------------------------------------------------------------------------------------
# Report


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return _json_value(value.item())
    return value


def _format(name: str, value, counts: dict) -> str:
    if value is None:
        return "n/a"
    if name in ("l1", "l1_background", "swap_l1"):
        return f"{value:.2f} ({value / 255:.4f})"
    if name == "psnr":
        return "inf" if math.isinf(value) else f"{value:.2f}"
    if name == "ssim":
        return f"{value:.4f}"
    share = f"{100 * value:.1f}%"
    if name == "swap_following":
        return f"{share} ({counts['swaps_followed']}/{counts['swaps_judged']})"
    if name == "shape_kinds":
        return f"{share} ({counts['shape_kinds_held']}/{counts['shape_kind_drawings']})"
    if name == "shape_kinds_swap":
        return f"{share} ({counts['shape_kinds_swap_held']}/{counts['shape_kind_swap_drawings']})"
    return share


@dataclass
class Report:
    """What ``evaluate`` measured: metrics (METRICS names -> float or None), counts, settings, per drawing.

    ``to_dict`` / ``to_json`` / ``to_markdown``; ``write(folder)`` writes eval.json, eval.md and
    contact_sheet.png atomically and returns their paths.
    """

    metrics: dict
    counts: dict
    settings: dict
    per_drawing: list[dict]
    sheet: np.ndarray | None = None

    @property
    def applicable(self) -> list[str]:
        return [name for name, value in self.metrics.items() if value is not None]

    def to_dict(self) -> dict:
        return _json_value(
            {
                "metrics": self.metrics,
                "applicable": self.applicable,
                "definitions": {k: METRICS[k] for k in self.metrics},
                "counts": self.counts,
                "settings": self.settings,
                "per_drawing": self.per_drawing,
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        s = self.settings
        lines = [
            f"Evaluation of `{s['model']}` ({s['model_kind']}) on {self.counts['drawings']} {s['data']} pictures "
            f"at {s['size']} px (seed {s['seed']}, noise seed {s['noise_seed']}, {s['device']}):",
            "",
            "| metric | value | meaning |",
            "|---|---|---|",
        ]
        for name, value in self.metrics.items():
            lines.append(f"| {name} | {_format(name, value, self.counts)} | {METRICS[name]} |")
        if self.counts.get("skipped_files"):
            lines += ["", f"{self.counts['skipped_files']} unreadable file(s) skipped."]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | os.PathLike, overwrite: bool = True) -> dict[str, Path]:
        """Write eval.json, eval.md and contact_sheet.png into ``folder`` (created if needed).

        overwrite=False refuses (ConfigError) when any of them exists already.
        """
        from colorizer.atomic import write_bytes as atomic_write_bytes
        from colorizer.data.images import save_image

        folder = Path(folder)
        if not overwrite:
            check_outputs(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"out {folder}: cannot create the folder ({exc.strerror or exc})", option="out") from None
        # Without overwrite each file is created exclusively (colorizer.atomic): a report file another run
        # wrote into this folder after the check above is kept, and the error says which.
        paths, kept = {}, []
        files = [("json", "eval.json", self.to_json().encode()), ("markdown", "eval.md", self.to_markdown().encode())]
        for key, name, data in files:
            try:
                atomic_write_bytes(str(folder / name), data, exclusive=not overwrite)
                paths[key] = folder / name
            except FileExistsError:
                kept.append(name)
            except OSError as exc:
                raise ConfigError(f"out {folder}: cannot write ({exc.strerror or exc})", option="out") from None
        if self.sheet is not None:
            try:
                paths["contact_sheet"] = save_image(folder / "contact_sheet.png", self.sheet, exclusive=not overwrite)
            except FileExistsError:
                kept.append("contact_sheet.png")
        if kept:
            from colorizer.errors import ColorizerError

            wrote = ", ".join(p.name for p in paths.values()) or "nothing"
            raise ColorizerError(
                f"{folder}: {', '.join(kept)} appeared during the run (another eval writing there?) and were kept; "
                f"wrote {wrote}; pass --overwrite to replace"
            )
        return paths


OUTPUT_FILES = ("eval.json", "eval.md", "contact_sheet.png")


def check_outputs(folder: str | os.PathLike, how_to_replace: str = "overwrite=True") -> None:
    """ConfigError (one line) unless ``folder`` can take a new report without replacing one;
    ``how_to_replace`` is what the message tells the caller to pass (the CLI: ``--overwrite``)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"out {folder}: exists and is not a folder", option="out")
    existing = [name for name in OUTPUT_FILES if (folder / name).exists()]
    if existing:
        raise ConfigError(
            f"out {folder}: {', '.join(existing)} exist(s) already; pass {how_to_replace} to replace", option="out"
        )


def _versions(runner) -> dict:
    import skimage

    from colorizer import __version__

    versions = {
        "colorizer": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
        "python": platform.python_version(),
    }
    if runner.format == "onnx":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return versions


def evaluate(
    model,
    *,
    count: int = DEFAULT_COUNT,
    size: int = DEFAULT_SIZE,
    seed: int = EVAL_SEED,
    noise_seed: int = DEFAULT_NOISE_SEED,
    data: str = "synthetic",
    data_root: str | os.PathLike | None = None,
    device: str | torch.device | None = "auto",
    kernels: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    rows: int = CONTACT_ROWS,
) -> Report:
    """Score ``model`` and return a Report (metrics: ``colorizer.scoring``).

    model: anything ``colorizer.runtime.load.load_runner`` takes (a module, a checkpoint, a run folder, a
    bundled name, an exported engine) or a Runner; device and kernels: ``load_runner``'s.

    data: "synthetic" (``count`` drawings of stream ``seed``) or "folder" (``data_root``'s pictures;
    ``seed`` is then unused). Raises ColorizerError subclasses for bad input.
    """
    if data not in ("synthetic", "folder"):
        raise ConfigError(f"data must be synthetic or folder, got {data!r}", option="data")
    if data == "folder" and not data_root:
        raise ConfigError("data folder needs a data_root FOLDER", option="data")
    if data == "synthetic" and data_root:
        raise ConfigError("data_root is only used with data folder", option="data_root")
    # Every number is checked here, before the model is loaded or a picture drawn (each names its flag).
    if _not_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}", option="batch_size")
    if _not_int(rows) or rows < 1:
        raise ConfigError(f"rows must be a positive integer (the contact sheet's rows), got {rows!r}", option="rows")
    count, size = _check_count(count), check_size(size, "size")
    check_seed(seed, "seed")
    check_seed(noise_seed, "noise_seed")  # picture i: seed_sequence(noise_seed, count)[i] (colorizer.limits)
    _check_memory(count, size)
    start = time.perf_counter()
    runner = model if isinstance(model, Runner) else load_runner(model, device=device, kernels=kernels)
    evalset = synthetic_set(count, size, seed) if data == "synthetic" else folder_set(data_root, count, size)
    t0 = time.perf_counter()
    own, swapped = colorize_set(runner, evalset, noise_seed, batch_size)
    forward_s = time.perf_counter() - t0
    metrics, counts, rows_ = score_outputs(evalset, own, swapped)
    counts["skipped_files"] = len(evalset.skipped)
    settings = {
        "model": runner.name,
        "model_kind": runner.kind,
        "model_path": runner.path,
        "model_sha256": runner.sha256,
        "data": data,
        "data_root": None if data_root is None else os.fspath(data_root),
        "seed": int(seed) if data == "synthetic" else None,
        "noise_seed": int(noise_seed),
        "size": size,
        "count": len(evalset),
        "swap": "drawing i with the palette of drawing (i + 1) mod count",
        "palette": f"extract_palette of each truth picture, seed {PALETTE_SEED}",
        "device": str(runner.device),
        "kernels": runner.backend if runner.format == "torch" else None,
        "noise": runner.noise,
        "batch_size": int(batch_size),
        "forward_images_per_s": round(2 * len(evalset) / forward_s, 2) if forward_s > 0 else None,
        "elapsed_s": None,
        "versions": _versions(runner),
        "skipped": evalset.skipped,
    }
    report = Report(metrics, counts, settings, rows_, contact_sheet(evalset, own, swapped, rows))
    settings["elapsed_s"] = round(time.perf_counter() - start, 2)
    return report
