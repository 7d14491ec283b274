"""Per-pixel labels of the synthetic drawings (colorizer.data.synthetic.render_labeled_drawing)."""

import hashlib

import numpy as np
import pytest

from colorizer.data.synthetic import (
    MIXED,
    REGION_BACKGROUND,
    REGION_OUTLINE,
    REGION_POLYGON,
    REGION_ROUND,
    ROLES,
    render_drawing,
    render_labeled_drawing,
)

# sha256 of color bytes + line-art bytes of render_drawing(seed, index, size), computed with the
# renderer as it was before the label layers were added (commit f909ec1). The training data of
# every model trained so far, the bundled demo pictures and the bundled model depend on these pixels.
RENDER_HASHES = {
    (0, 0, 256): "4da8b7dbc48160806105fd01c74c1514067008bf254c9e1a825bfc20448cadc5",
    (0, 16, 256): "a0ef49e3054735c0db2a07914848871f83595735d4de7a8b4ca8f6c5c00f5e5d",
    (0, 27, 256): "f59fd3071fdeb3c9a64bb91f3547859551fb94b68735f70538df28e3b5f22fb8",
    (1, 5, 128): "c8f2c8d9f13786be61824a4601dcf9d60fb9c5196cba5a2eb8ffbb717ad3ff13",
    (7, 3, 300): "fef29ab25990edce518661b103793a4506ea97f20392e913324079a72c65182a",
    (12345, 2, 64): "0015d1c76a005c9987f2f03a2c92628be84c9dace1d446020b38253d12263200",
}


def _digest(color: np.ndarray, lines: np.ndarray) -> str:
    return hashlib.sha256(color.tobytes() + lines.tobytes()).hexdigest()


@pytest.mark.parametrize("key", sorted(RENDER_HASHES))
def test_render_drawing_pixels_are_unchanged(key):
    color, lines = render_drawing(*key)
    assert _digest(color, lines) == RENDER_HASHES[key]


@pytest.mark.parametrize("key", sorted(RENDER_HASHES))
def test_labeled_drawing_has_the_same_pixels(key):
    drawing = render_labeled_drawing(*key)
    assert _digest(drawing.color, drawing.lines) == RENDER_HASHES[key]
    size = key[2]
    assert drawing.regions.shape == drawing.roles.shape == (size, size)
    assert drawing.regions.dtype == drawing.roles.dtype == np.uint8


def test_roles_give_the_exact_color_of_every_pure_pixel():
    seen_roles = set()
    for index in range(12):
        d = render_labeled_drawing(4, index, 128)
        pure = d.roles != MIXED
        assert pure.mean() > 0.9  # only antialiased edges are mixed
        table = np.array([d.palette[name] for name in ROLES], dtype=np.uint8)
        np.testing.assert_array_equal(d.color[pure], table[d.roles[pure]])
        seen_roles.update(np.unique(d.roles[pure]).tolist())
    assert seen_roles == set(range(len(ROLES)))


def test_regions_agree_with_roles_and_line_art():
    role = {name: i for i, name in enumerate(ROLES)}
    round_roles = [role["main"], role["main_shade"], role["highlight"]]
    polygon_roles = [role["accent"], role["accent_shade"]]
    kinds_seen = set()
    for index in range(12):
        d = render_labeled_drawing(9, index, 256)
        r, q = d.regions, d.roles
        kinds_seen.update(np.unique(r).tolist())
        assert set(np.unique(r).tolist()) <= {REGION_BACKGROUND, REGION_ROUND, REGION_POLYGON, REGION_OUTLINE}
        pure = q != MIXED
        # Round shapes are painted with the main family, polygons with the accent family.
        assert np.isin(q[(r == REGION_ROUND) & pure], round_roles).all()
        assert np.isin(q[(r == REGION_POLYGON) & pure], polygon_roles).all()
        assert (q[r == REGION_BACKGROUND] == role["background"]).all()
        # Only outline-region pixels carry ink in the line art; region interiors are white paper.
        assert (d.lines[r != REGION_OUTLINE] == 255).all()
        assert (r[d.lines < 128] == REGION_OUTLINE).all()
    assert kinds_seen == {REGION_BACKGROUND, REGION_ROUND, REGION_POLYGON, REGION_OUTLINE}
