"""What ``colorizer eval`` measures, and on what: the drawings, the palette swap and the metrics.

``colorizer.evaluation.evaluate`` runs a model over these; the exporters' functional gate
(``colorizer.export.openvino``) scores an engine against the eager model with the same functions.
A model is anything with ``colorize(sketches, palettes, seeds)`` (``colorizer.runtime.runner.Runner``).

The data (``synthetic_set``): drawings ``render_labeled_drawing(EVAL_SEED, i, size)`` for i < count,
rendered at ``size`` without augmentation. The trainer draws its synthetic drawings from its ``seed``
(0 by default, every preset), so these are drawings it has never seen. Each drawing's palette is
``extract_palette`` of its own color picture (as in training), and every output uses the noise seed
``noise_seed + i`` (``colorizer.export.seeded_noise``, the noise a ``seeded`` ONNX export computes in its
graph, so a checkpoint and its export are scored on the same noise, whatever the batch size).
Drawing i is colorized twice: with its own palette, and with the palette of drawing j = (i + 1) mod N
(a fixed derangement).

Metrics (``METRICS`` has the one-line definitions; 0-255 units):

- ``l1``: mean |output - truth| over every pixel and channel, own palette.
- ``l1_background``: the same over background pixels only (synthetic labels).
- ``psnr`` (dB), ``ssim``: scikit-image's ``peak_signal_noise_ratio`` (data range 255) and
  ``structural_similarity`` (RGB, data range 255), per drawing, averaged.
- ``swap_following``: the share of drawings whose swap is followed: on the drawing's colored pixels
  (round shapes and polygons, not background, not outline, not antialiased edges; only colors that
  drawing j shows too, since a color j lacks is not in j's palette either), the output with
  palette j is nearer, on average (RGB distance per pixel), to the truth repainted in j's colors than
  to the truth in i's own colors, *and* the output with i's own palette is nearer to i's colors than
  to j's. The second half is what makes a model that ignores the palette (for example a constant
  grey output, the same under both palettes) score 0 rather than the coin flip the first half alone
  gives. ``swap_toward_other`` reports the first half alone.
- ``swap_l1``: mean |output with palette j - truth repainted in j's colors| over labelled pixels.
- ``shape_kinds``: the share of drawings (among those showing both kinds of shape) where most
  polygon pixels are nearer the accent colors (accent, its shade) than the main colors (main, its
  shade, the highlight) and most round-shape pixels nearer the main colors than the accent colors:
  round shapes and polygons are painted with their different colors. ``shape_kinds_swap``: the same
  for the outputs with palette j, judged against j's colors (drawings whose partner shows both kinds).

On a folder of the user's color pictures (``folder_set``: the largest centered square resized to
``size``, XDoG sketches, each picture's own palette) there are no labels: ``l1``, ``psnr``, ``ssim``
apply, and ``swap_following`` is measured on the pixels that are neither near-white nor near-black
in the truth, against the nearest color of each 9-color palette instead of the repainted truth.
``Report.applicable`` lists the metrics that apply; the others are None (``n/a`` in the table).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from colorizer.errors import ConfigError, DataError, ImageError
from colorizer.limits import check_seed, check_size, seed_sequence

# The synthetic stream the evaluation draws from. The trainer's synthetic data uses its --seed (0 by
# default and in every preset); do not train with this seed.
EVAL_SEED = 907_717
DEFAULT_COUNT = 64
DEFAULT_SIZE = 256
DEFAULT_NOISE_SEED = 0
DEFAULT_BATCH_SIZE = 8
PALETTE_SEED = 0  # k-means seed of the palettes extracted from the truth
CONTACT_ROWS = 4
NOISE_CACHE = 256  # pictures whose noise maps a module runner keeps (about 0.35 MB each at 256 px)
# User data: a truth pixel is "colored" unless every channel is >= NEAR_WHITE or every one <= NEAR_BLACK.
NEAR_WHITE = 230
NEAR_BLACK = 40
# A drawing takes part in the shape-kind measure when it shows at least this many pixels of each kind.
MIN_KIND_PIXELS = 20
MAIN_FAMILY = ("main", "main_shade", "highlight")
ACCENT_FAMILY = ("accent", "accent_shade")

METRICS = {
    "l1": "mean absolute difference to the truth (0-255; /255 in brackets), own palette, every pixel",
    "l1_background": "the same on background pixels only",
    "psnr": "PSNR (dB) against the truth, per drawing, averaged",
    "ssim": "SSIM (RGB) against the truth, per drawing, averaged",
    "swap_following": "share of drawings whose palette swap is followed (each output nearer its own palette)",
    "swap_toward_other": "share of swapped outputs nearer the other palette than the drawing's own",
    "swap_l1": "mean absolute difference of the swapped output to the truth repainted in the other palette",
    "shape_kinds": "share of drawings with polygons in the accent and round shapes in the main color",
    "shape_kinds_swap": "the same with the other drawing's palette",
}
LABELLED_ONLY = ("l1_background", "swap_l1", "shape_kinds", "shape_kinds_swap")


# ----------------------------------------------------------------------------------------------
# Data


@dataclass
class EvalSet:
    """The pictures a model is scored on (``synthetic_set`` or ``folder_set``).

    colors: uint8 (N, S, S, 3) truth; sketches: float32 (N, 1, S, S) line art in [-1, 1];
    palettes: uint8 (N, 9, 3), extracted from each truth. Synthetic sets also carry the labels of
    ``colorizer.data.synthetic.render_labeled_drawing``: regions, roles uint8 (N, S, S) and
    role_colors uint8 (N, len(ROLES), 3) (each drawing's palette by role); None for user pictures.
    names: one label per picture (its index or file). source: "synthetic" or the folder.
    """

    colors: np.ndarray
    sketches: torch.Tensor
    palettes: torch.Tensor
    names: list[str]
    source: str
    regions: np.ndarray | None = None
    roles: np.ndarray | None = None
    role_colors: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.colors.shape[0])

    @property
    def labelled(self) -> bool:
        return self.roles is not None

    @property
    def size(self) -> int:
        return int(self.colors.shape[1])


def _not_int(value) -> bool:
    return isinstance(value, bool) or not hasattr(value, "__index__")


def _check_count(count: int) -> int:
    if _not_int(count) or count < 2:
        raise ConfigError(f"count must be an integer of at least 2 (a palette swap needs two drawings), got {count!r}",
                          option="count")  # fmt: skip
    return int(count)


def _extract_palettes(colors: np.ndarray) -> torch.Tensor:
    from colorizer.palette import extract_palette

    return extract_palette(torch.from_numpy(colors), seed=PALETTE_SEED).cpu()


def synthetic_set(count: int = DEFAULT_COUNT, size: int = DEFAULT_SIZE, seed: int = EVAL_SEED) -> EvalSet:
    """Drawings ``render_labeled_drawing(seed, i, size)``, i < count, with labels and palettes."""
    from colorizer.data.synthetic import ROLES, render_labeled_drawing

    count, size = _check_count(count), check_size(size, "size")
    seed = check_seed(seed, "seed")
    drawings = [render_labeled_drawing(int(seed), i, size) for i in range(count)]
    colors = np.stack([d.color for d in drawings])
    lines = np.stack([d.lines for d in drawings])
    sketches = torch.from_numpy(lines.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0))[:, None]
    return EvalSet(
        colors=colors,
        sketches=sketches,
        palettes=_extract_palettes(colors),
        names=[f"drawing {i}" for i in range(count)],
        source="synthetic",
        regions=np.stack([d.regions for d in drawings]),
        roles=np.stack([d.roles for d in drawings]),
        role_colors=np.array([[d.palette[name] for name in ROLES] for d in drawings], dtype=np.uint8),
    )


def folder_set(root: str | os.PathLike, count: int = DEFAULT_COUNT, size: int = DEFAULT_SIZE) -> EvalSet:
    """The first ``count`` readable color pictures under ``root`` (sorted, recursive).

    Each is cut to its largest centered square and resized to ``size``; its sketch is XDoG
    (``colorizer.sketch.xdog``, the ``folder`` training default) and its palette its own. Unreadable
    files are skipped and listed in ``skipped``. Raises DataError when fewer than 2 pictures are usable.
    """
    from colorizer.data import find_images, load_image
    from colorizer.data.images import to_tensor
    from colorizer.data.transforms import augment_pair
    from colorizer.sketch import xdog

    count, size = _check_count(count), check_size(size, "size")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data_root {root}: no such folder", option="data_root")
    colors, names, skipped = [], [], []
    for path in find_images(root):
        if len(colors) == count:
            break
        try:
            image = load_image(path, min_size=None)
        except ImageError as exc:
            skipped.append(str(exc))
            continue
        colors.append(augment_pair(image, None, size, None)[0])
        names.append(str(path.relative_to(root)))
    if len(colors) < 2:
        raise DataError(
            f"data_root {root}: {len(colors)} readable color picture(s); the evaluation needs at least 2",
            option="data_root",
        )
    colors = np.stack(colors)
    sketches = torch.cat([xdog(to_tensor(c)[None])[:, :1] for c in colors])
    return EvalSet(
        colors=colors,
        sketches=sketches,
        palettes=_extract_palettes(colors),
        names=names,
        source=str(root),
        skipped=skipped,
    )


def swap_partner(count: int) -> np.ndarray:
    """The fixed derangement: drawing i is also colorized with the palette of drawing (i + 1) mod N."""
    return (np.arange(count) + 1) % count


def swap_targets(data: EvalSet) -> np.ndarray:
    """uint8 (N, S, S, 3): drawing i's truth repainted in the colors of its swap partner j.

    Every pixel with a role (see ``render_labeled_drawing``) takes j's color of that role; antialiased
    pixels (role MIXED) keep i's truth. Needs a labelled (synthetic) set.
    """
    from colorizer.data.synthetic import MIXED

    if not data.labelled:
        raise ConfigError("swap targets need the labels of the synthetic set")
    partner = swap_partner(len(data))
    out = data.colors.copy()
    for i, j in enumerate(partner):
        pure = data.roles[i] != MIXED
        out[i][pure] = data.role_colors[j][data.roles[i][pure]]
    return out


def colorize_set(
    model, data: EvalSet, noise_seed: int = DEFAULT_NOISE_SEED, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """(own, swapped): uint8 (N, S, S, 3) outputs with each drawing's own palette and with its partner's.

    model: a ``colorizer.runtime.runner.Runner``. Drawing i uses noise seed ``seed_sequence(noise_seed,
    N)[i]`` (``noise_seed + i``, ``colorizer.limits``) in both; forwards run ``batch_size`` pictures at a time.
    """
    from tqdm import tqdm

    from colorizer.data.images import to_uint8

    n = len(data)
    seeds = torch.tensor(seed_sequence(noise_seed, n, "noise_seed"), dtype=torch.int64)
    partner = torch.from_numpy(swap_partner(n))
    index = torch.cat([torch.arange(n), torch.arange(n)])
    palettes = torch.cat([data.palettes, data.palettes[partner]])
    out = np.empty((2 * n, data.size, data.size, 3), dtype=np.uint8)
    with tqdm(total=2 * n, desc="eval", unit="img", disable=not sys.stderr.isatty(), leave=False) as bar:
        for start in range(0, 2 * n, batch_size):
            rows = index[start : start + batch_size]
            result = model.colorize(data.sketches[rows], palettes[start : start + batch_size], seeds[rows])
            out[start : start + len(rows)] = to_uint8(result)
            bar.update(len(rows))
    return out[:n], out[n:]


# ----------------------------------------------------------------------------------------------
# Metrics


def _distance(image: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-pixel RGB Euclidean distance (float32) between (..., 3) arrays (broadcasting)."""
    diff = image.astype(np.float32) - target.astype(np.float32)
    return np.sqrt(np.square(diff).sum(axis=-1))


def _nearest(pixels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(P, 3) pixels, (K, 3) colors -> (P,) distance to the nearest color."""
    return _distance(pixels[:, None, :], colors[None, :, :]).min(axis=1)


def _psnr_ssim(truth: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if np.array_equal(truth, output):
        psnr = math.inf  # skimage divides by a zero MSE (and warns)
    else:
        psnr = float(peak_signal_noise_ratio(truth, output, data_range=255))
    ssim = float(structural_similarity(truth, output, channel_axis=2, data_range=255))
    return psnr, ssim


def _kind_fractions(output, roles, role_colors) -> tuple[float, float] | None:
    """(share of polygon pixels nearer the accent colors, share of round pixels nearer the main colors)."""
    from colorizer.data.synthetic import ROLES

    index = {name: k for k, name in enumerate(ROLES)}
    main = [index[n] for n in MAIN_FAMILY]
    accent = [index[n] for n in ACCENT_FAMILY]
    polygon, round_ = np.isin(roles, accent), np.isin(roles, main)
    if polygon.sum() < MIN_KIND_PIXELS or round_.sum() < MIN_KIND_PIXELS:
        return None
    main_colors, accent_colors = role_colors[main], role_colors[accent]
    fractions = []
    for mask, own, other in ((polygon, accent_colors, main_colors), (round_, main_colors, accent_colors)):
        px = output[mask]
        fractions.append(float(np.mean(_nearest(px, own) < _nearest(px, other))))
    return fractions[0], fractions[1]


def _colored_mask(data: EvalSet, i: int) -> np.ndarray:
    if data.labelled:
        from colorizer.data.synthetic import MIXED, ROLES

        colored = [k for k, name in enumerate(ROLES) if name in MAIN_FAMILY + ACCENT_FAMILY]
        return np.isin(data.roles[i], colored) & (data.roles[i] != MIXED)
    truth = data.colors[i]
    return ~((truth >= NEAR_WHITE).all(axis=-1) | (truth <= NEAR_BLACK).all(axis=-1))


def _role_presence(data: EvalSet) -> np.ndarray:
    """bool (N, len(ROLES)): which colors each drawing shows (at least MIN_KIND_PIXELS pixels of it).

    A color a drawing does not show is not in its K-means palette either, so no model can know it:
    the swap measures skip the pixels of drawing i whose color its partner does not show.
    """
    from colorizer.data.synthetic import ROLES

    counts = np.stack([np.bincount(r.ravel(), minlength=256)[: len(ROLES)] for r in data.roles])
    return counts >= MIN_KIND_PIXELS


def _families_present(present: np.ndarray) -> bool:
    from colorizer.data.synthetic import ROLES

    return all(any(present[ROLES.index(name)] for name in family) for family in (MAIN_FAMILY, ACCENT_FAMILY))


def score_outputs(data: EvalSet, own: np.ndarray, swapped: np.ndarray) -> tuple[dict, dict, list[dict]]:
    """Score outputs of ``data``: own and swapped uint8 (N, S, S, 3) (``colorize_set``).

    Returns (metrics, counts, per_drawing): metrics by the names of METRICS (None where one does not
    apply to ``data``); counts of what was measured; one dict per drawing.
    """
    from colorizer.data.synthetic import MIXED, REGION_BACKGROUND, ROLES

    n = len(data)
    if own.shape != data.colors.shape or swapped.shape != data.colors.shape:
        raise ValueError(f"outputs {own.shape} / {swapped.shape} do not match the set's {data.colors.shape}")
    partner = swap_partner(n)
    targets = swap_targets(data) if data.labelled else None
    present = _role_presence(data) if data.labelled else None
    rows = []
    bg_sum = bg_count = swap_sum = swap_count = 0.0
    kinds, kinds_swap = [], []
    for i in range(n):
        j = int(partner[i])
        truth, out_i, out_j = data.colors[i], own[i], swapped[i]
        abs_diff = np.abs(out_i.astype(np.int16) - truth.astype(np.int16))
        psnr, ssim = _psnr_ssim(truth, out_i)
        row = {"index": i, "name": data.names[i], "swap_with": j, "l1": float(abs_diff.mean())}
        row.update(psnr=psnr, ssim=ssim)
        colored = _colored_mask(data, i)
        if data.labelled:
            background = data.regions[i] == REGION_BACKGROUND
            bg_sum += float(abs_diff[background].sum())
            bg_count += 3 * int(background.sum())
            # Pixels whose color the partner shows (MIXED pixels have none).
            roles = data.roles[i]
            known = (roles != MIXED) & present[j][np.minimum(roles, len(ROLES) - 1)]
            colored &= known
            swap_sum += float(np.abs(out_j.astype(np.int16) - targets[i].astype(np.int16))[known].sum())
            swap_count += 3 * int(known.sum())
            # Per colored pixel: the truth in i's colors and in j's.
            own_target, other_target = truth[colored], targets[i][colored]
            d = {
                "own_to_own": _distance(out_i[colored], own_target),
                "own_to_other": _distance(out_i[colored], other_target),
                "swap_to_own": _distance(out_j[colored], own_target),
                "swap_to_other": _distance(out_j[colored], other_target),
                # How far apart the two colorings are: small values make a swap hard to judge.
                "swap_contrast": _distance(own_target, other_target),
            }
            fr = _kind_fractions(out_i, data.roles[i], data.role_colors[i])
            fr_swap = _kind_fractions(out_j, data.roles[i], data.role_colors[j])
            if fr is not None:
                kinds.append(fr[0] > 0.5 and fr[1] > 0.5)
                row.update(polygon_accent=fr[0], round_main=fr[1])
                if _families_present(present[j]):
                    kinds_swap.append(fr_swap[0] > 0.5 and fr_swap[1] > 0.5)
                    row.update(polygon_accent_swap=fr_swap[0], round_main_swap=fr_swap[1])
        else:
            own_palette = data.palettes[i].numpy()
            other_palette = data.palettes[j].numpy()
            d = {
                "own_to_own": _nearest(out_i[colored], own_palette),
                "own_to_other": _nearest(out_i[colored], other_palette),
                "swap_to_own": _nearest(out_j[colored], own_palette),
                "swap_to_other": _nearest(out_j[colored], other_palette),
            }
        row["colored_pixels"] = int(colored.sum())
        if colored.any():
            means = {k: float(v.mean()) for k, v in d.items()}
            row.update(means)
            row["toward_other"] = means["swap_to_other"] < means["swap_to_own"]
            row["following"] = row["toward_other"] and means["own_to_own"] < means["own_to_other"]
        rows.append(row)

    judged = [r for r in rows if "following" in r]
    metrics = {
        "l1": float(np.mean([r["l1"] for r in rows])),
        "l1_background": bg_sum / bg_count if bg_count else None,
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "swap_following": float(np.mean([r["following"] for r in judged])) if judged else None,
        "swap_toward_other": float(np.mean([r["toward_other"] for r in judged])) if judged else None,
        "swap_l1": swap_sum / swap_count if swap_count else None,
        "shape_kinds": float(np.mean(kinds)) if kinds else None,
        "shape_kinds_swap": float(np.mean(kinds_swap)) if kinds_swap else None,
    }
    counts = {
        "drawings": n,
        "swaps_judged": len(judged),
        "swaps_followed": int(sum(r["following"] for r in judged)),
        "shape_kind_drawings": len(kinds),
        "shape_kinds_held": int(sum(kinds)),
        "shape_kind_swap_drawings": len(kinds_swap),
        "shape_kinds_swap_held": int(sum(kinds_swap)),
        "colored_pixel_share": float(np.mean([r["colored_pixels"] for r in rows]) / data.size**2),
        "swap_contrast_min": min((r["swap_contrast"] for r in judged if "swap_contrast" in r), default=None),
    }
    return metrics, counts, rows


# ----------------------------------------------------------------------------------------------
# Contact sheet


CONTACT_COLUMNS = ("sketch", "truth", "own palette", "other drawing", "its palette")


def contact_sheet(data: EvalSet, own: np.ndarray, swapped: np.ndarray, rows: int = CONTACT_ROWS) -> np.ndarray:
    """uint8 picture, one row per drawing (the first ``rows``), captioned columns:
    sketch | truth | output with its own palette | the swap partner's truth | output with that palette."""
    from PIL import Image, ImageDraw

    from colorizer.data.images import to_uint8

    size, gap, caption = data.size, 4, 16
    partner = swap_partner(len(data))
    rows = max(1, min(int(rows), len(data)))
    width = len(CONTACT_COLUMNS) * (size + gap) + gap
    height = caption + rows * (size + gap) + gap
    sheet = np.full((height, width, 3), 255, dtype=np.uint8)
    for r in range(rows):
        j = int(partner[r])
        sketch = to_uint8(data.sketches[r].expand(3, -1, -1))
        tiles = (sketch, data.colors[r], own[r], data.colors[j], swapped[r])
        y = caption + gap + r * (size + gap)
        for c, tile in enumerate(tiles):
            x = gap + c * (size + gap)
            sheet[y : y + size, x : x + size] = tile
    picture = Image.fromarray(sheet)
    draw = ImageDraw.Draw(picture)
    for c, text in enumerate(CONTACT_COLUMNS):
        draw.text((gap + c * (size + gap) + 2, 2), text, fill=(0, 0, 0))
    return np.asarray(picture).copy()
