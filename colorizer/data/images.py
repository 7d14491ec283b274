"""Reading, converting and writing images.

``load_image`` turns any image file PIL can read into 8-bit RGB (H, W, 3) uint8, or raises
``colorizer.errors.ImageError`` with one line naming the file. ``to_tensor`` / ``to_uint8`` convert
between that and the model's float32 (3, H, W) tensors in [-1, 1] (SPEC.md, "Tensors"), and
``save_image`` writes atomically (``colorizer.atomic``: a temporary file in the same folder, then ``os.replace``), so a
crash never leaves a half-written picture under the final name.

Conversions done by ``load_image`` (the issue's "converted, not rejected" inputs):

- grayscale (``L``, ``1``) -> gray repeated to RGB;
- 16-bit (``I;16*``, ``I``) -> 8-bit by x * 255 / 65535, rounded (PIL's own ``convert`` would clip
  instead of scale, turning most 16-bit pictures white);
- 32-bit float (``F``) -> taken as 0..1 when its maximum is at most 1, else as 0..255, then clipped;
- anything with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent index) ->
  composited on white, since line art and references are drawn on white paper;
- palette (``P``), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` -> RGB through PIL;
- the EXIF orientation tag is applied, so phone photos come out upright; only the first frame of
  an animation is used.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from colorizer import atomic
from colorizer.errors import ColorizerError, ImageError

# Decompression-bomb cap: images with more pixels than this are refused before decoding. 8192 x
# 8192 RGB is 192 MiB as uint8 and 768 MiB as a float32 tensor, already more than any training or
# inference path here needs (the model runs at 256 to 1024 px).
DEFAULT_MAX_PIXELS = 8192 * 8192
# Smallest side accepted by default: the generator needs 128 px (seven halvings).
DEFAULT_MIN_SIZE = 128
# File name endings treated as images when scanning data folders (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name ends with one of IMAGE_EXTENSIONS (case-insensitive); no decoding."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def find_images(root: str | os.PathLike) -> list[Path]:
    """All image files under ``root``, recursively, by extension, sorted by path (deterministic).

    Hidden files and folders (names starting with '.') are ignored; see ``scan_folder``.
    """
    return scan_folder(root).images


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """What ``scan_folder`` found: ``images`` (sorted paths) and ``others`` ((path, reason), sorted):
    every other entry a user would expect to be read, with why it is not (a broken link, not a
    picture type, not a regular file, a link back to a folder searched already, an unreadable folder)."""

    images: list[Path]
    others: list[tuple[Path, str]]


NOT_A_PICTURE = "not a picture type (" + ", ".join(IMAGE_EXTENSIONS) + ")"


def scan_folder(root: str | os.PathLike) -> FolderScan:
    """One walk of ``root``: its image files (by extension) and every other entry with the reason.

    Symlinked folders are followed (data sets are often linked in), each real folder once: a link to a
    folder searched already (a loop, or a second link to one folder) is listed in ``others`` and not
    followed, so each file is listed once however the links nest. Hidden names are ignored. Raises
    ImageError when ``root`` itself cannot be listed.
    """
    root = Path(root)
    images: list[Path] = []
    others: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, bool]] = [(root, False)]  # (folder, reached through a link)
    while stack:
        folder, linked = stack.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                others.append((folder, "a link to a folder searched already (not followed again)"))
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            if folder == root:
                raise ImageError(f"{root}: cannot list the folder ({exc.strerror or exc})") from None
            others.append((folder, f"cannot list the folder ({exc.strerror or exc})"))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            try:
                mode = entry.stat().st_mode  # follows links
            except OSError as exc:
                if entry.is_symlink():
                    loop = exc.errno == errno.ELOOP
                    others.append((path, "a link that points back to itself" if loop else "a broken link"))
                else:
                    others.append((path, f"cannot read ({exc.strerror or exc})"))
                continue
            if stat.S_ISDIR(mode):
                subfolders.append((path, entry.is_symlink()))
            elif not stat.S_ISREG(mode):
                others.append((path, "not a regular file (a pipe, socket or device)"))
            elif is_image_file(entry.name):
                images.append(path)
            else:
                others.append((path, NOT_A_PICTURE))
        stack.extend(reversed(subfolders))
    return FolderScan(sorted(images), sorted(others))


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB (see the module docstring for the rules)."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img).astype(np.float64)
        gray = np.clip(np.rint(arr * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if mode == "RGBA" or has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode == "1":
        img = img.convert("L")
    return np.asarray(img.convert("RGB"))


def _decode(source, name: str, min_size: int | None, max_pixels: int | None) -> np.ndarray:
    """Open ``source`` (a path or a binary file object) with PIL and convert it; wrap every failure.

    Decoders raise many exception types on hostile input (OSError, ValueError, SyntaxError,
    EOFError, struct.error, IndexError, ...). They all mean the same thing to the user: this file
    cannot be used. Only the decoding is inside the broad handler; our own checks raise ImageError.
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; make every bomb an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width * height > limit:
                    raise ImageError(
                        f"{name}: {width}x{height} = {width * height} pixels is over the limit of {limit} "
                        "(possible decompression bomb)"
                    )
                img.seek(0)
                img.load()
                try:
                    img = ImageOps.exif_transpose(img)
                except Exception:  # noqa: BLE001 - a damaged EXIF block only loses the orientation
                    pass
                rgb = _to_rgb(img)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or an unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({exc})") from None
    except MemoryError:
        raise ImageError(f"{name}: too large to decode in memory") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on a bad file, see docstring
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, EOFError):
            raise ImageError(f"{name}: truncated image file ({reason})") from None
        raise ImageError(f"{name}: corrupt image file ({reason})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"{name}: decoded to an unsupported layout {rgb.shape} {rgb.dtype}")
    if min_size is not None and min(rgb.shape[0], rgb.shape[1]) < min_size:
        raise ImageError(
            f"{name}: {rgb.shape[1]}x{rgb.shape[0]} px is too small (needs at least {min_size} px on each side)"
        )
    if not rgb.flags.writeable or not rgb.flags.c_contiguous:
        rgb = np.array(rgb, order="C")  # PIL hands out read-only views; callers may write in place
    return rgb


def load_image(
    path: str | os.PathLike,
    min_size: int | None = DEFAULT_MIN_SIZE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read an image file as a writable, C-contiguous (H, W, 3) uint8 RGB array.

    min_size: smallest accepted side in pixels (None: no check). max_pixels: largest accepted
    width * height, checked from the header before decoding (None: DEFAULT_MAX_PIXELS).
    Raises ImageError (one line, naming the file) for a missing, zero-byte, truncated, corrupt or
    non-image file, a too small image, or a possible decompression bomb.
    """
    name = os.fspath(path)
    try:
        info = os.stat(name)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{name}: is a folder, not an image file")
        if not stat.S_ISREG(info.st_mode):  # a pipe would block the read; a device has no picture
            raise ImageError(f"{name}: not a regular file (a pipe, socket or device), not an image file")
        if info.st_size == 0:
            raise ImageError(f"{name}: empty file (0 bytes)")
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from None
    return _decode(name, name, min_size, max_pixels)


def decode_image(
    data: bytes,
    name: str = "<bytes>",
    min_size: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """``load_image`` for image bytes already in memory; ``name`` is used in error messages."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, min_size, max_pixels)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 RGB (H, W, 3) or (N, H, W, 3) -> float32 (3, H, W) or (N, 3, H, W) in [-1, 1].

    x / 255 * 2 - 1 (SPEC.md, "Tensors"). A 2-D (H, W) gray array is repeated to 3 channels.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"to_tensor expects uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError(f"to_tensor expects (H, W, 3) or (N, H, W, 3), got {arr.shape}")
    # Converted in numpy (single-threaded): torch's intra-op threads cost more than they save on
    # one picture, badly so on a busy machine, and this runs once per sample in data loading.
    scaled = arr.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(scaled, -1, -3)))


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float (3, H, W) or (N, 3, H, W) in [-1, 1] -> uint8 numpy (H, W, 3) or (N, H, W, 3).

    The inverse of ``to_tensor``: (x + 1) / 2 * 255, rounded to nearest (half to even) and clamped to
    0..255. NaN becomes mid-gray (128) rather than an undefined cast. Computed in numpy (one thread, no
    torch op on a float32 CPU tensor; see ``colorizer.inference.sketch_to_tensor``).
    """
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
    x = np.asarray(tensor, dtype=np.float32)
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"to_uint8 expects (3, H, W) or (N, 3, H, W), got {tuple(x.shape)}")
    with np.errstate(over="ignore", invalid="ignore"):  # +-inf saturate to 255 / 0, as the cast of torch's clamp
        y = (np.nan_to_num(x, nan=0.0) + np.float32(1.0)) * np.float32(127.5)
    y = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(y, -3, -1))


def _as_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        if image.dim() == 4 and image.shape[0] == 1:
            image = image[0]
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"save_image expects a (3, H, W) or (1, 3, H, W) tensor, got {tuple(image.shape)}")
        return Image.fromarray(to_uint8(image))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"save_image expects a float tensor in [-1, 1] or a uint8 array, got {arr.dtype}")
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3):
        return Image.fromarray(np.ascontiguousarray(arr))
    raise ValueError(f"save_image expects a uint8 (H, W) or (H, W, 3) array, got {arr.shape}")


def save_image(path: str | os.PathLike, image, exclusive: bool = False) -> Path:
    """Write ``image`` to ``path`` atomically; the format comes from the file extension.

    image: a float tensor (3, H, W) or (1, 3, H, W) in [-1, 1], a uint8 array (H, W, 3) or (H, W)
    gray, or a PIL image. Missing parent folders are created. The picture is written to a
    temporary file in the destination folder and moved over ``path`` (``colorizer.atomic``), so readers
    see either the old file or the complete new one. A write failure (read-only folder, disk full)
    raises ColorizerError naming the path and leaves any previous file intact.

    exclusive: write only if no file has the name ``path`` when the picture is put in place (one
    atomic step, ``colorizer.atomic.write_with``); else FileExistsError (not translated: the caller
    decides what a file that appeared meanwhile means) and that file is untouched.
    """
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ColorizerError(f"{path}: unknown image format {path.suffix!r} (use .png or .jpg)")
    pil = _as_pil(image)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file where a folder is needed
        raise ColorizerError(f"cannot write {path}: {exc.filename or path.parent} is a file, not a folder") from None
    except OSError as exc:
        raise ColorizerError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        atomic.write_with(path, lambda f: pil.save(f, format=fmt), exclusive=exclusive)
    except FileExistsError:
        raise  # only with exclusive: a file took the name meanwhile
    except OSError as exc:
        raise ColorizerError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
