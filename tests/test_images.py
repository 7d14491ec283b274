"""Image loading, conversion and atomic writing (colorizer.data.images): every bad input of issue 2."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer.data import decode_image, load_image, save_image, to_tensor, to_uint8
from colorizer.errors import ColorizerError, ImageError


def _gradient(h=160, w=200):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], axis=2).astype(np.uint8)


def _png(path, array, **kw):
    Image.fromarray(array).save(path, **kw)
    return path


def _one_line_error(exc_info, path):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg


def test_rgb_png_round_trips(tmp_path):
    arr = _gradient()
    out = load_image(_png(tmp_path / "a.png", arr))
    assert out.dtype == np.uint8 and out.shape == (160, 200, 3)
    np.testing.assert_array_equal(out, arr)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert "no such file" in _one_line_error(e, path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert "empty" in _one_line_error(e, path)


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageError) as e:
        load_image(tmp_path)
    _one_line_error(e, tmp_path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n" * 20)
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert "not an image" in _one_line_error(e, path)


def test_truncated_png(tmp_path):
    good = _png(tmp_path / "good.png", np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    data = good.read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert "truncated" in _one_line_error(e, path)


def test_truncated_jpeg(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(_gradient()).save(good, quality=90)
    data = good.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError) as e:
        load_image(path)
    _one_line_error(e, path)


def test_corrupt_png_data(tmp_path):
    good = _png(tmp_path / "good.png", _gradient())
    data = bytearray(good.read_bytes())
    idat = data.index(b"IDAT")
    for i in range(idat + 8, idat + 60):  # scramble the compressed stream, keep the length
        data[i] ^= 0x5A
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError) as e:
        load_image(path)
    _one_line_error(e, path)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((130, 130, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :40, 3] = 0  # transparent -> white paper
    rgba[:, 40:80, 3] = 255  # opaque -> the color
    rgba[:, 80:, 3] = 128  # half -> halfway to white
    out = load_image(_png(tmp_path / "rgba.png", rgba))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 50], [200, 0, 0])
    np.testing.assert_allclose(out[0, 100].astype(int), [228, 127, 127], atol=2)


def test_grayscale_is_repeated(tmp_path):
    gray = _gradient()[..., 0]
    out = load_image(_png(tmp_path / "gray.png", gray))
    assert out.shape == (160, 200, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_one_bit_png(tmp_path):
    path = tmp_path / "bits.png"
    Image.fromarray(_gradient()[..., 0] > 128).save(path)
    assert Image.open(path).mode == "1"
    out = load_image(path)
    assert set(np.unique(out)) <= {0, 255} and out.shape == (160, 200, 3)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(130, 0).repeat(40, 1)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path)
    assert out.shape == (130, 160, 3)
    np.testing.assert_array_equal(out[0, ::40, 0], [0, 1, 128, 255])


def test_palette_png(tmp_path):
    arr = np.zeros((128, 128, 3), dtype=np.uint8)
    arr[:, 64:] = (10, 200, 30)
    path = tmp_path / "pal.png"
    Image.fromarray(arr).convert("P", palette=Image.ADAPTIVE, colors=4).save(path)
    assert Image.open(path).mode == "P"
    out = load_image(path)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 100], [10, 200, 30])


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (128, 128), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (64, 0, 128, 128))
    path = tmp_path / "palt.png"
    img.save(path, transparency=0)
    out = load_image(path)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])  # transparent index on white
    np.testing.assert_array_equal(out[0, 100], [0, 0, 255])


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (128, 128), (0, 255, 255, 0)).save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = load_image(path)
    assert out.shape == (128, 128, 3)
    np.testing.assert_allclose(out[64, 64].astype(int), [255, 0, 0], atol=12)


def test_too_small_image(tmp_path):
    path = _png(tmp_path / "tiny.png", _gradient(100, 300))
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert "too small" in _one_line_error(e, path)
    assert load_image(path, min_size=None).shape == (100, 300, 3)
    assert load_image(path, min_size=100).shape == (100, 300, 3)


def _patch_ihdr(data: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's declared size (and the chunk CRC, so only the size is wrong)."""
    start = data.index(b"IHDR")
    body = struct.pack(">II", width, height) + data[start + 12 : start + 17]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return data[:start] + b"IHDR" + body + crc + data[start + 21 :]


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    small = _png(tmp_path / "small.png", _gradient(64, 64)).read_bytes()
    path = tmp_path / "bomb.png"
    path.write_bytes(_patch_ihdr(small, 100_000, 100_000))
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert "decompression bomb" in _one_line_error(e, path)


def test_decompression_bomb_under_our_cap_but_over_pils(tmp_path, monkeypatch):
    # PIL only warns between MAX_IMAGE_PIXELS and twice that; load_image turns the warning into an error.
    path = _png(tmp_path / "big.png", _gradient(150, 150))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150 * 150 - 1)
    with pytest.raises(ImageError) as e:
        load_image(path, max_pixels=10**9)
    assert "decompression bomb" in _one_line_error(e, path)
    with pytest.raises(ImageError):
        load_image(path, max_pixels=100)


def test_exif_orientation_is_applied(tmp_path):
    arr = _gradient(130, 180)
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    assert load_image(path).shape == (180, 130, 3)


def test_decode_image_bytes():
    img = Image.fromarray(_gradient())
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    np.testing.assert_array_equal(decode_image(buf.getvalue()), _gradient())
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageError, match="upload.png"):
        decode_image(b"GIF89a garbage", name="upload.png")


def test_to_tensor_and_back_is_exact_for_every_value():
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    t = to_tensor(arr)
    assert t.dtype == torch.float32 and t.shape == (3, 16, 16)
    assert t.min().item() == -1.0 and t.max().item() == 1.0
    torch.testing.assert_close(t[0].flatten(), torch.arange(256, dtype=torch.float32) / 255 * 2 - 1)
    np.testing.assert_array_equal(to_uint8(t), arr)


def test_to_tensor_batched_and_gray():
    batch = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    t = to_tensor(batch)
    assert t.shape == (2, 3, 5, 7)
    np.testing.assert_array_equal(to_uint8(t), batch)
    gray = batch[0, :, :, 0]
    torch.testing.assert_close(to_tensor(gray), to_tensor(np.repeat(gray[:, :, None], 3, 2)))
    with pytest.raises(TypeError):
        to_tensor(batch.astype(np.float32))


def test_to_uint8_rounds_clamps_and_handles_nan():
    t = torch.tensor([-2.0, -1.0, 1.0 / 255, 1.0, 3.0, float("nan")]).view(1, 1, 6).expand(3, 1, 6)
    out = to_uint8(t)
    assert out.shape == (1, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 128, 255, 255, 128])


def test_save_image_round_trip_and_atomic(tmp_path):
    arr = _gradient(128, 128)
    path = save_image(tmp_path / "sub" / "out.png", to_tensor(arr))
    np.testing.assert_array_equal(load_image(path), arr)
    save_image(tmp_path / "gray.png", arr[..., 0])
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png")[..., 1], arr[..., 0])
    save_image(tmp_path / "batch1.jpg", to_tensor(arr[None]))
    assert load_image(tmp_path / "batch1.jpg").shape == (128, 128, 3)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["batch1.jpg", "gray.png", "out.png"]


def test_save_image_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = save_image(tmp_path / "keep.png", _gradient(128, 128))
    before = path.read_bytes()

    def disk_full(self, fp, format=None, **params):
        fp.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(ColorizerError) as e:
        save_image(path, np.zeros((128, 128, 3), dtype=np.uint8))
    assert "No space left" in str(e.value) and str(path) in str(e.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_save_image_rejects_unknown_format_and_bad_arrays(tmp_path):
    with pytest.raises(ColorizerError, match="unknown image format"):
        save_image(tmp_path / "x.notanimage", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        save_image(tmp_path / "x.png", torch.zeros(2, 3, 4, 4))


def test_loaded_arrays_are_writable(tmp_path):
    out = load_image(_png(tmp_path / "w.png", _gradient()))
    assert out.flags.writeable and out.flags.c_contiguous
    out[0, 0] = 1  # callers may modify what they get


def test_scan_folder_lists_each_entry_once_with_an_accurate_reason(tmp_path):
    # Issue 22 item 13: a link loop once listed a dangling link once per nesting level (42 times) and a
    # folder as "not a picture type". One walk: each entry once, loops not followed, true reasons.
    import os

    from colorizer.data.images import NOT_A_PICTURE, find_images, scan_folder

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    _png_file = root / "a.png"
    Image.new("RGB", (4, 4)).save(_png_file)
    (root / "notes.txt").write_text("x")
    (root / "sub" / "b.png").write_bytes(_png_file.read_bytes())
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # a loop
    (root / "gone.png").symlink_to(tmp_path / "deleted.png")  # dangling
    (root / "self").symlink_to(root / "self")  # a link to itself
    os.mkfifo(root / "pipe.png")
    scan = scan_folder(root)
    rel = {p.relative_to(root).as_posix(): why for p, why in scan.others}
    assert [p.relative_to(root).as_posix() for p in scan.images] == ["a.png", "sub/b.png"]
    assert find_images(root) == scan.images
    assert rel == {
        "gone.png": "a broken link",
        "notes.txt": NOT_A_PICTURE,
        "pipe.png": "not a regular file (a pipe, socket or device)",
        "self": "a link that points back to itself",
        "sub/up": "a link to a folder searched already (not followed again)",
    }
    assert len(scan.others) == len(rel)  # each once


def test_a_pipe_named_like_a_picture_is_refused_not_read(tmp_path):
    # Opening a FIFO for reading blocks until a writer comes; it is refused from its type instead.
    import os

    os.mkfifo(tmp_path / "p.png")
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path / "p.png")


def test_save_image_exclusive_keeps_a_file_that_is_there(tmp_path):
    path = tmp_path / "o.png"
    path.write_bytes(b"theirs")
    with pytest.raises(FileExistsError):
        save_image(path, np.zeros((4, 4, 3), np.uint8), exclusive=True)
    assert path.read_bytes() == b"theirs"
    save_image(tmp_path / "new.png", np.zeros((4, 4, 3), np.uint8), exclusive=True)
    assert load_image(tmp_path / "new.png", min_size=None).shape == (4, 4, 3)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ColorizerError, match="afile is a file, not a folder"):
        save_image(tmp_path / "afile" / "o.png", np.zeros((4, 4, 3), np.uint8))


def test_a_folder_nested_deeper_than_pythons_recursion_limit_is_walked(tmp_path):
    # os.walk recursed once per level: a folder nested deeper than the recursion limit (1,000 levels by
    # default) ended in a RecursionError traceback. The walk keeps its own stack. Shown here with the
    # limit lowered to 60 levels above this frame, on a tree pytest's own (recursive) clean-up can remove.
    import inspect
    import sys

    from colorizer.data.images import find_images

    (tmp_path.joinpath(*["a"] * 80)).mkdir(parents=True)
    tmp_path.joinpath(*["a"] * 80, "x.png").write_bytes(b"x")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 60)
    try:
        found = find_images(tmp_path)
    finally:
        sys.setrecursionlimit(limit)
    assert [len(p.relative_to(tmp_path).parts) for p in found] == [81]
