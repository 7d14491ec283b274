"""A built-in data set of procedurally drawn cel-shaded pictures and their exact line art.

No download is needed to train: every sample is drawn on the fly, deterministically from
(seed, index). A drawing is a pale flat background with 3 to 6 overlapping shapes in front of each
other, each shape a flat color with a darker cel-shade band along its lower side (light comes from
straight above, so a horizontal flip keeps the lighting right), black outlines, and on round shapes
a small highlight. The sketch is the line art actually drawn: the same outline strokes on white
paper, with the parts hidden behind nearer shapes erased, so it matches the color picture exactly.

The palette tells the model which colors to paint. Each drawing uses 7 flat colors (the palette
has K = 9 slots) and a fixed rule ties them to what the line art shows:

- background: the lightest color, pale (low saturation), usually the largest area;
- the main color: every round shape (ellipses, smooth round outlines; blobs, wobbly outlines).
  Round shapes are the majority (ROUND_SHARE of the shapes), so the main color is usually the
  largest colored area of the drawing, i.e. the second palette entry when the palette is ordered
  by cluster size as ``colorizer.palette`` does;
- the accent color: every polygon (straight edges and corners), of a clearly different hue and
  darker than the main color (BT.601 luma at least MIN_LUMA_GAP lower);
- each of the two has a cel shade, the color times SHADE_FACTOR;
- the highlight on ellipses is the main color mixed HIGHLIGHT_MIX of the way to white;
- outlines are black.

So a small model first learns background versus shapes and the main color (a direct copy of a
palette entry), then the accent by shape kind; on a random crop some colors are absent and the
rule still holds for those present.

Rendering: at ``render_size`` = max(BASE_SIZE, requested size) (256 px by default), with geometry
in units of the canvas, drawn with PIL ImageDraw at SUPERSAMPLE times the size and reduced by box
averaging, so edges are antialiased identically in the picture and its line art. About 4 ms per
drawing at 256 px on one lightly loaded CPU core (PIL 13); about 10 ms per drawing, and 11 ms per
128 px training sample with its crop and tensors, on a 2-core machine under a load of 10.

``render_labeled_drawing`` returns the same pixels with per-pixel labels: the region (background,
round shape, polygon, outline or antialiased edge) and the palette color each pixel is painted with.
``colorizer.scoring`` scores models per region with them.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from colorizer.data.base import SKETCH_MODES, AugmentedDataset
from colorizer.errors import ConfigError

BASE_SIZE = 256
SUPERSAMPLE = 2
SHADE_FACTOR = 0.62
HIGHLIGHT_MIX = 0.7
OUTLINE = (0, 0, 0)
MIN_SHAPES, MAX_SHAPES = 3, 6
# Outline width in pixels at BASE_SIZE (scaled with the render size); one value per drawing.
OUTLINE_WIDTH_RANGE = (1.5, 2.5)
KINDS = ("ellipse", "blob", "polygon")
# Which palette color each kind of shape is filled with, and how often each kind is drawn.
KIND_COLOR = {"ellipse": "main", "blob": "main", "polygon": "accent"}
KIND_PROBABILITY = (0.35, 0.35, 0.3)
ROUND_SHARE = KIND_PROBABILITY[0] + KIND_PROBABILITY[1]
MIN_LUMA_GAP = 0.12
# Stream tag mixed into the drawing's seed so it never shares a stream with the augmentation's
# default_rng([seed, epoch, index]).
_DRAWING_STREAM = 0x5C3E7C4


def _luma(rgb) -> float:
    r, g, b = rgb
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255.0


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def drawing_palette(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    """The colors of one drawing (uint8 RGB): background, main, accent, their shades, highlight, outline."""
    background = _hsv(rng.uniform(), rng.uniform(0.06, 0.22), rng.uniform(0.9, 0.98))
    pair = None
    for _ in range(100):
        hue = rng.uniform()
        main = _hsv(hue, rng.uniform(0.45, 0.9), rng.uniform(0.6, 0.97))
        accent = _hsv(hue + rng.uniform(0.25, 0.75), rng.uniform(0.45, 0.9), rng.uniform(0.35, 0.85))
        if (
            _luma(main) <= _luma(background) - MIN_LUMA_GAP
            and _luma(main) - _luma(accent) >= MIN_LUMA_GAP
            and _luma(accent) >= 0.12
        ):
            pair = main, accent
            break
    if pair is None:  # practically unreachable; a fixed, valid fallback keeps the rule
        pair = (238, 170, 80), (70, 60, 150)
    palette = {"background": background, "outline": OUTLINE}
    for name, color in zip(("main", "accent"), pair):
        palette[name] = color
        palette[f"{name}_shade"] = tuple(int(round(c * SHADE_FACTOR)) for c in color)
    palette["highlight"] = tuple(int(round(c + (255 - c) * HIGHLIGHT_MIX)) for c in palette["main"])
    return palette


def _shape_points(rng: np.random.Generator, kind: str, cx: float, cy: float, radius: float) -> np.ndarray:
    """Closed outline (M, 2) in canvas units (0..1) for one shape."""
    if kind == "ellipse":
        t = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
        a = radius
        b = radius * rng.uniform(0.55, 1.0)
        rot = rng.uniform(0.0, math.pi)
        x, y = a * np.cos(t), b * np.sin(t)
        px = cx + x * math.cos(rot) - y * math.sin(rot)
        py = cy + x * math.sin(rot) + y * math.cos(rot)
    elif kind == "blob":
        t = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
        r = np.ones_like(t)
        for j in (2, 3, 4):
            r += rng.uniform(0.05, 0.16) / j * 2 * np.sin(j * t + rng.uniform(0.0, 2.0 * math.pi))
        px, py = cx + radius * r * np.cos(t), cy + radius * r * np.sin(t)
    else:
        rot = rng.uniform(0.0, 2.0 * math.pi)
        if rng.random() < 0.25:  # a star
            points = int(rng.integers(5, 7))
            t = rot + np.arange(2 * points) * math.pi / points
            r = np.where(np.arange(2 * points) % 2 == 0, 1.0, rng.uniform(0.45, 0.6))
        else:
            n = int(rng.integers(3, 7))
            t = rot + np.arange(n) * 2.0 * math.pi / n + rng.uniform(-0.25, 0.25, n) * math.pi / n
            r = rng.uniform(0.85, 1.1, n)
        px, py = cx + radius * r * np.cos(t), cy + radius * r * np.sin(t)
    return np.stack([px, py], axis=1)


# Per-pixel labels (``render_labeled_drawing``). Regions: what the line art shows at a pixel.
REGION_BACKGROUND, REGION_ROUND, REGION_POLYGON, REGION_OUTLINE = 0, 1, 2, 3
REGION_NAMES = ("background", "round", "polygon", "outline")
_KIND_REGION = {"ellipse": REGION_ROUND, "blob": REGION_ROUND, "polygon": REGION_POLYGON}
# Roles: which palette color a pixel is painted with (an index into ROLES), or MIXED.
ROLES = ("background", "main", "main_shade", "highlight", "accent", "accent_shade", "outline")
_ROLE = {name: i for i, name in enumerate(ROLES)}
MIXED = 255


@dataclass(frozen=True)
class LabeledDrawing:
    """A synthetic drawing with per-pixel labels (``render_labeled_drawing``).

    color: uint8 (S, S, 3) and lines: uint8 (S, S), exactly what ``render_drawing`` returns.
    regions: uint8 (S, S), REGION_BACKGROUND / REGION_ROUND / REGION_POLYGON for pixels wholly
    inside one region, REGION_OUTLINE for outline strokes and for every antialiased pixel that
    mixes regions. roles: uint8 (S, S), the index into ROLES of the one palette color the pixel is
    painted with, MIXED where its supersamples are painted with more than one. A pixel whose role is
    not MIXED has exactly the color ``palette[ROLES[role]]`` in ``color``. palette: the drawing's
    colors by role (``drawing_palette``).
    """

    color: np.ndarray
    lines: np.ndarray
    regions: np.ndarray
    roles: np.ndarray
    palette: dict[str, tuple[int, int, int]]


def _pure_labels(labels: Image.Image, other: int) -> np.ndarray:
    """Supersampled label image -> one label per output pixel; ``other`` where the block is mixed."""
    arr = np.asarray(labels)
    if SUPERSAMPLE == 1:
        return arr.copy()
    n = arr.shape[0] // SUPERSAMPLE
    blocks = arr.reshape(n, SUPERSAMPLE, n, SUPERSAMPLE)
    low, high = blocks.min(axis=(1, 3)), blocks.max(axis=(1, 3))
    return np.where(low == high, low, other).astype(np.uint8)


def _render(seed: int, index: int, size: int, labels: bool):
    """The renderer behind ``render_drawing`` and ``render_labeled_drawing``.

    The label layers are drawn with the same geometry as the picture and draw nothing from the
    random generator, so the picture is the same with or without them.
    """
    if size < 8:
        raise ValueError(f"size must be at least 8 px, got {size}")
    rng = np.random.default_rng([_DRAWING_STREAM, int(seed), int(index)])
    palette = drawing_palette(rng)
    canvas = size * SUPERSAMPLE
    scale = canvas  # canvas units -> supersampled pixels
    width = max(1, int(round(rng.uniform(*OUTLINE_WIDTH_RANGE) * SUPERSAMPLE * size / BASE_SIZE)))

    color = Image.new("RGB", (canvas, canvas), palette["background"])
    lines = Image.new("L", (canvas, canvas), 255)
    draw_color = ImageDraw.Draw(color)
    draw_lines = ImageDraw.Draw(lines)
    if labels:
        regions = Image.new("L", (canvas, canvas), REGION_BACKGROUND)
        roles = Image.new("L", (canvas, canvas), _ROLE["background"])
        draw_regions = ImageDraw.Draw(regions)
        draw_roles = ImageDraw.Draw(roles)

    count = int(rng.integers(MIN_SHAPES, MAX_SHAPES + 1))
    for _ in range(count):
        kind = KINDS[int(rng.choice(len(KINDS), p=KIND_PROBABILITY))]
        fill = KIND_COLOR[kind]
        radius = rng.uniform(0.1, 0.26)
        cx, cy = rng.uniform(0.12, 0.88), rng.uniform(0.12, 0.88)
        pts = _shape_points(rng, kind, cx, cy, radius) * scale
        poly = [tuple(p) for p in pts]
        # Nearer shapes hide what is behind them, lines included: fill first, in both layers.
        draw_color.polygon(poly, fill=palette[fill])
        draw_lines.polygon(poly, fill=255)
        if labels:
            draw_regions.polygon(poly, fill=_KIND_REGION[kind])
            draw_roles.polygon(poly, fill=_ROLE[fill])

        # Masks are drawn only over the shape's bounding box (a few times faster than full canvas).
        x0 = max(0, int(math.floor(pts[:, 0].min())) - 1)
        y0 = max(0, int(math.floor(pts[:, 1].min())) - 1)
        x1 = min(canvas, int(math.ceil(pts[:, 0].max())) + 2)
        y1 = min(canvas, int(math.ceil(pts[:, 1].max())) + 2)
        if x1 <= x0 or y1 <= y0:
            continue
        local = [(x - x0, y - y0) for x, y in poly]
        box_size = (x1 - x0, y1 - y0)

        # Cel shade: the part of the shape not covered by itself moved up (light from above).
        lift = rng.uniform(0.2, 0.38) * radius * scale
        inside = Image.new("L", box_size, 0)
        ImageDraw.Draw(inside).polygon(local, fill=255)
        shade = inside.copy()
        ImageDraw.Draw(shade).polygon([(x, y - lift) for x, y in local], fill=0)
        color.paste(palette[f"{fill}_shade"], (x0, y0, x1, y1), mask=shade)
        if labels:
            roles.paste(_ROLE[f"{fill}_shade"], (x0, y0, x1, y1), mask=shade)

        if kind == "ellipse":
            # A small highlight in the upper part, kept inside the lit region of the shape.
            hx = (cx + rng.uniform(-0.3, 0.3) * radius) * scale - x0
            hy = (cy - rng.uniform(0.35, 0.55) * radius) * scale - y0
            hw, hh = rng.uniform(0.18, 0.3) * radius * scale, rng.uniform(0.08, 0.14) * radius * scale
            spot = Image.new("L", box_size, 0)
            ImageDraw.Draw(spot).ellipse([hx - hw, hy - hh, hx + hw, hy + hh], fill=255)
            lit = ImageChops.subtract(inside, shade)
            spot = ImageChops.darker(spot, lit)
            color.paste(palette["highlight"], (x0, y0, x1, y1), mask=spot)
            if labels:
                roles.paste(_ROLE["highlight"], (x0, y0, x1, y1), mask=spot)

        outline = poly + [poly[0]]
        draw_color.line(outline, fill=OUTLINE, width=width, joint="curve")
        draw_lines.line(outline, fill=0, width=width, joint="curve")
        if labels:
            draw_regions.line(outline, fill=REGION_OUTLINE, width=width, joint="curve")
            draw_roles.line(outline, fill=_ROLE["outline"], width=width, joint="curve")

    if SUPERSAMPLE > 1:
        color = color.reduce(SUPERSAMPLE)
        lines = lines.reduce(SUPERSAMPLE)
    if not labels:
        return np.array(color), np.array(lines)
    return LabeledDrawing(
        color=np.array(color),
        lines=np.array(lines),
        regions=_pure_labels(regions, REGION_OUTLINE),
        roles=_pure_labels(roles, MIXED),
        palette=palette,
    )


def render_drawing(seed: int, index: int, size: int = BASE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Draw picture ``index`` of stream ``seed``: (color uint8 (size, size, 3), line art uint8 (size, size)).

    Deterministic: the same (seed, index, size) always gives the same pixels. The line art is white
    (255) paper with the drawing's black outlines.
    """
    return _render(seed, index, size, labels=False)


def render_labeled_drawing(seed: int, index: int, size: int = BASE_SIZE) -> LabeledDrawing:
    """``render_drawing`` plus per-pixel region and color-role labels and the palette (LabeledDrawing).

    The picture and line art are the same pixels as ``render_drawing(seed, index, size)``; the labels
    cost about a third more time. Used by ``colorizer.scoring`` to score a model per region.
    """
    return _render(seed, index, size, labels=True)


DEFAULT_LENGTH = 10_000


class SyntheticDataset(AugmentedDataset):
    """``length`` synthetic drawings; sample i is drawing (seed, i) (see the module docstring).

    The drawing depends only on (seed, i); its augmentation on (seed, epoch, i). size: output side
    in px (drawings render at max(BASE_SIZE, size)); sketch: "given" (the exact line art, the
    default), "xdog" or "model". Samples never skip ("skipped" is always 0).
    """

    def __init__(
        self,
        length: int = DEFAULT_LENGTH,
        size: int = BASE_SIZE,
        seed: int = 0,
        augment: bool = True,
        sketch: str = "given",
        xdog_params: dict | None = None,
    ):
        if sketch not in SKETCH_MODES:
            raise ConfigError(f"SyntheticDataset: sketch must be one of {', '.join(SKETCH_MODES)}, got {sketch!r}")
        if int(length) <= 0:
            raise ConfigError(f"SyntheticDataset: length must be positive, got {length}")
        super().__init__(size, sketch, seed, augment, xdog_params)
        self.length = int(length)
        self.render_size = max(BASE_SIZE, self.size)

    def __len__(self) -> int:
        return self.length

    @classmethod
    def build(cls, root, size, sketch, seed, length, augment, **options) -> SyntheticDataset:
        """No data folder (``root`` is ignored); length None: DEFAULT_LENGTH."""
        return cls(
            length=DEFAULT_LENGTH if length is None else length,
            size=size,
            seed=seed,
            augment=augment,
            sketch=sketch or "given",
            **options,
        )

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        color, lines = render_drawing(self.seed, index, self.render_size)
        return color, lines, 0
