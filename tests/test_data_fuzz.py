"""Bounded fuzzing of image decoding and pair splitting (issue 8): hostile bytes give ImageError, nothing else.

Derandomized (hypothesis draws the same examples on every run) so CI stays deterministic; a few
hundred examples in all, a few seconds on a CPU.
"""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from colorizer.data import decode_image, split_pair
from colorizer.errors import ImageError

# Decoding under a small pixel cap: a mutated header may declare a large image, which would be
# refused anyway in production (DEFAULT_MAX_PIXELS); the small cap keeps each example fast.
MAX_PIXELS = 1 << 18

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _encode(fmt, mode="RGB", size=(24, 20), **kw):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


SEEDS = {
    "png": _encode("PNG"),
    "png_rgba": _encode("PNG", "RGBA"),
    "png_palette": _encode("PNG", "P"),
    "png_gray": _encode("PNG", "L"),
    "jpeg": _encode("JPEG", quality=80),
    "gif": _encode("GIF", "P"),
    "bmp": _encode("BMP"),
    "webp": _encode("WEBP"),
}


def _check_decode(data: bytes):
    try:
        out = decode_image(data, name="fuzz.png", max_pixels=MAX_PIXELS)
    except ImageError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.png: ") and "\n" not in msg
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] * out.shape[1] <= MAX_PIXELS


@FUZZ
@given(st.binary(min_size=0, max_size=2048))
def test_random_bytes_only_raise_image_error(data):
    _check_decode(data)


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), st.binary(min_size=0, max_size=64))
def test_random_bytes_after_a_valid_signature(kind, tail):
    _check_decode(SEEDS[kind][:16] + tail)


@FUZZ
@given(
    st.sampled_from(sorted(SEEDS)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_mutated_valid_images_only_raise_image_error(kind, flips, cut):
    data = bytearray(SEEDS[kind])
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    _check_decode(bytes(data))


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_fuzz_seeds_are_valid_images(kind):
    out = decode_image(SEEDS[kind], name=kind)
    assert out.shape == (20, 24, 3)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.integers(0, 40), st.integers(0, 90), st.integers(0, 2**32 - 1))
def test_pair_splitting(height, width, seed):
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if height > 0 and width == 2 * height:
        color, sketch = split_pair(image, "pair.png")
        np.testing.assert_array_equal(color, image[:, :height])
        assert sketch.shape == (height, height) and sketch.dtype == np.uint8
        right = image[:, height:].astype(np.float64)
        expected = right @ np.array([0.299, 0.587, 0.114])
        assert np.abs(sketch - expected).max() <= 0.5 + 1e-3
    else:
        with pytest.raises(ImageError, match="pair.png: a pair image must be twice as wide"):
            split_pair(image, "pair.png")


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 40).flatmap(lambda h: st.tuples(st.just(h), st.integers(2 * h - 2, 2 * h + 2))))
def test_pair_splitting_near_the_valid_shape(shape):
    height, width = shape
    image = np.zeros((height, width, 3), dtype=np.uint8)
    if width == 2 * height:
        assert split_pair(image, "p")[0].shape == (height, height, 3)
    else:
        with pytest.raises(ImageError):
            split_pair(image, "p")
