"""Palette input: images to pixels, and the reference's 0.25x area downscale (bit-exact with OpenCV)."""

from __future__ import annotations

import numpy as np
import torch

from colorizer.errors import ImageError

__all__ = ["area_downscale", "image_pixels"]

_AREA_FACTOR = 4  # the reference's 0.25x resize


def _as_images(images) -> tuple[torch.Tensor, bool]:
    """Return (x, single) on the input's device: uint8 input stays uint8 (N, H, W, 3) (channels
    last, no float copy of the full-size batch); float input becomes float32 (N, 3, H, W) with
    integer values 0..255.

    Accepted: numpy or torch uint8 (H, W, 3) / (N, H, W, 3) RGB, or a floating torch tensor
    (N, 3, H, W) / (3, H, W) in [-1, 1] (the training batch; mapped by (x + 1) * 127.5 and rounded to
    the nearest integer, so an image that was made by x / 255 * 2 - 1 maps back to its exact bytes;
    values outside [-1, 1] are clamped).
    """
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ImageError(f"palette: numpy images must be uint8 RGB, got {images.dtype}")
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise ImageError(f"palette: expected a numpy array or torch tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        single = images.dim() == 3
        x = images.unsqueeze(0) if single else images
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ImageError(f"palette: uint8 images must be (H, W, 3) or (N, H, W, 3) RGB, got {tuple(images.shape)}")
        return x, single
    if images.is_floating_point():
        single = images.dim() == 3
        x = images.unsqueeze(0) if single else images
        if x.dim() != 4 or x.shape[1] != 3:
            raise ImageError(f"palette: float images must be (N, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        x = ((x.detach().float() + 1.0) * 127.5).round_()
        if not bool(torch.isfinite(x).all()):
            raise ImageError("palette: the float images contain NaN or infinity")
        return x.clamp_(0.0, 255.0), single
    raise ImageError(f"palette: unsupported image dtype {images.dtype} (use uint8 RGB or float in [-1, 1])")


def _area_size(n: int) -> int:
    # OpenCV sizes the output as saturate_cast<int>(n * 0.25), i.e. rounded half to even; it refuses
    # a zero size, we keep at least one pixel.
    return max(1, round(n / _AREA_FACTOR))


def area_downscale(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """OpenCV's ``cv2.resize(img, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)`` on a batch.

    x: (N, C, H, W), or (N, H, W, C) with ``channels_last``; uint8, or float holding integer values
    0..255. Returns float32 in the same layout with size (round(H / 4), round(W / 4)) and integer
    values: each output pixel is the mean of its 4x4 source block, rounded half to even. Like
    OpenCV's integer-scale fast path, blocks that run past the bottom/right edge average only the
    pixels that exist, and source rows/columns beyond 4 * output size are dropped. Equal to OpenCV
    bit for bit (tested on uint8 for many sizes). Images smaller than 3 pixels on a side give one
    output pixel (OpenCV refuses them). uint8 input is summed in int32 (no float copy of the input).
    """
    if channels_last:
        n, h, w, c = x.shape
    else:
        n, c, h, w = x.shape
    oh, ow = _area_size(h), _area_size(w)
    f = _AREA_FACTOR
    x = x[:, : oh * f, : ow * f] if channels_last else x[:, :, : oh * f, : ow * f]
    ph, pw = oh * f - min(h, oh * f), ow * f - min(w, ow * f)
    if ph or pw:
        pad = (0, 0, 0, pw, 0, ph) if channels_last else (0, pw, 0, ph)
        x = torch.nn.functional.pad(x, pad)
    # Block sums are exact (int32, or float32 below 2**24), so dividing by the pixel count in
    # float32 and rounding half to even reproduces OpenCV's rounding.
    sum_dtype = torch.int32 if x.dtype == torch.uint8 else torch.float32
    if channels_last:
        sums = x.reshape(n, oh, f, ow, f, c).sum(dim=(2, 4), dtype=sum_dtype).float()
    else:
        sums = x.reshape(n, c, oh, f, ow, f).sum(dim=(3, 5), dtype=sum_dtype).float()
    if ph == 0 and pw == 0:
        return sums.div_(f * f).round_()
    rows = torch.full((oh,), float(f), device=x.device)
    cols = torch.full((ow,), float(f), device=x.device)
    rows[-1] -= ph
    cols[-1] -= pw
    area = rows[:, None] * cols[None, :]
    return (sums / (area[:, :, None] if channels_last else area)).round_()


def image_pixels(images, downscale: bool = True) -> tuple[torch.Tensor, bool]:
    """(N, P, 3) float32 pixels (integer values 0..255) and whether one image was given; ``images`` as
    ``extract_palette`` takes them, ``downscale``: the 0.25x area resize first."""
    x, single = _as_images(images)
    channels_last = x.dtype == torch.uint8
    hw = x.shape[1:3] if channels_last else x.shape[2:]
    if x.shape[0] == 0:
        raise ImageError("palette: empty batch")
    if hw[0] == 0 or hw[1] == 0:
        raise ImageError(f"palette: empty image {tuple(hw)}")
    if downscale:
        x = area_downscale(x, channels_last=channels_last)
    if channels_last:
        return x.reshape(x.shape[0], -1, 3).float().contiguous(), single
    return x.flatten(2).transpose(1, 2).contiguous(), single
