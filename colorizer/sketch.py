"""Sketches from color images: XDoG line extraction and the Color2Sketch network.

Both produce the model's sketch format (SPEC.md, "Tensors"): one gray line-art image repeated to 3
channels, float in [-1, 1], white paper = +1 and dark lines.

XDoG (Winnemoeller, Kyprianidis and Olsen, "XDoG: an eXtended difference-of-Gaussians compendium",
Computers & Graphics 2012), on the luminance I in [0, 1] (ITU-R BT.601 weights, as cv2/PIL):

    S = (1 + p) * G_sigma(I) - p * G_{k sigma}(I)
    T = 1                              where S >= epsilon
        1 + tanh(phi * (S - epsilon))  elsewhere

G_s is a Gaussian blur of standard deviation s pixels (separable, truncated at 3 s, reflect
padding). On a flat region S = I >= 0 >= epsilon, so flat areas of any color stay white paper; at an
edge the darker side gets a negative lobe of p times the difference of Gaussians and turns into a
line. Defaults (tuned by eye at 256 px on skimage's astronaut, coffee and chelsea photos and on the
synthetic cel drawings): sigma 0.6 px, k 2.0, p 25, epsilon -0.02, phi 20. Lines are about two
pixels wide at these settings; scale sigma with the image size for other resolutions.

Color2Sketch: ``SketchModel`` wraps a trained generator (the reference's line extractor, which its
training regenerates every sketch with) and returns its output as gray repeated to 3 channels, as
the reference's data loader does (cv2 RGB -> gray, then 3 channels).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from colorizer.errors import CheckpointError

XDOG_DEFAULTS = {"sigma": 0.6, "k": 2.0, "p": 25.0, "epsilon": -0.02, "phi": 20.0}
# ITU-R BT.601 luma weights (cv2.COLOR_RGB2GRAY, PIL "L").
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) BT.601 luma, in the same value range as the input."""
    w = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * w).sum(dim=1, keepdim=True)


def gaussian_kernel1d(sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` px, radius ceil(3 sigma) (at least 1)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), reflect padding (replicate when a side is too short)."""
    k = gaussian_kernel1d(sigma, x.dtype, x.device)
    r = k.numel() // 2
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    mode_w = "reflect" if w > r else "replicate"
    mode_h = "reflect" if h > r else "replicate"
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=mode_w), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode=mode_h), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def xdog(
    images: torch.Tensor,
    sigma: float = XDOG_DEFAULTS["sigma"],
    k: float = XDOG_DEFAULTS["k"],
    p: float = XDOG_DEFAULTS["p"],
    epsilon: float = XDOG_DEFAULTS["epsilon"],
    phi: float = XDOG_DEFAULTS["phi"],
) -> torch.Tensor:
    """XDoG line art of a color batch (formula and defaults in the module docstring).

    images: float (N, 3, H, W) or (3, H, W) in [-1, 1], any device. sigma: inner Gaussian standard
    deviation in pixels; k: ratio of the outer to the inner sigma; p: edge emphasis (strength of the
    difference of Gaussians); epsilon: threshold on S (I in [0, 1] units) below which a pixel
    darkens; phi: softness of that threshold (large = hard black and white).
    Returns the same shape and dtype in [-1, 1]: gray repeated to 3 channels, paper +1, lines -1.
    Every image of a batch is processed independently (a batch equals its images one by one).
    """
    single = images.dim() == 3
    if single:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"xdog expects (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    if not k > 1:
        raise ValueError(f"k must be greater than 1, got {k}")
    dtype = images.dtype
    x = images.float() if dtype in (torch.float16, torch.bfloat16) else images
    gray = (to_gray(x) + 1.0) * 0.5
    s = (1.0 + p) * gaussian_blur(gray, sigma) - p * gaussian_blur(gray, k * sigma)
    t = torch.where(s >= epsilon, torch.ones_like(s), 1.0 + torch.tanh(phi * (s - epsilon)))
    out = (t.clamp(0.0, 1.0) * 2.0 - 1.0).expand(-1, 3, -1, -1).to(dtype).contiguous()
    return out[0] if single else out


class SketchModel:
    """A Color2Sketch generator turned into a sketch maker: color batch in, sketch batch out.

    checkpoint_path: a ``torch.save`` file holding ``{'netG': state_dict, ...}`` (the reference's
    format) or a plain state dict, or a ``.safetensors`` file; loaded with ``weights_only=True``,
    never unpickling code. Widths are read from the weight shapes, so any width variant loads.
    device: where the network runs (inputs are moved there; outputs stay there).
    noise: the generator's noise (see ``colorizer.models.generator``): ``"zero"`` (default, a
    deterministic sketch for a given image), an int seed, or ``"random"`` (the reference's
    behaviour, fresh noise from torch's global RNG on every call).
    Raises CheckpointError (one line) for a missing, unreadable or mismatched checkpoint.
    """

    def __init__(self, checkpoint_path: str | os.PathLike, device="cpu", noise="zero", kernels: str = "eager"):
        from colorizer.checkpoint import load_generator
        from colorizer.models import Color2Sketch, fold_weight_standardization

        path = os.fspath(checkpoint_path)
        net = load_generator(path)  # any supported format, strict, widths from the shapes
        if not isinstance(net, Color2Sketch):
            raise CheckpointError(
                f"{path}: expected a Color2Sketch generator (3 input channels), got {net.in_channels}"
            )
        widths = [int(getattr(net.encoder, f"layer{k}").conv1.weight.shape[0]) for k in range(1, 8)]
        self.path = path
        self.device = torch.device(device)
        self.noise = noise
        self.channels = widths
        # The weights are fixed here, so weight standardisation is computed once instead of per call.
        self.net = fold_weight_standardization(net).to(self.device).set_kernels(kernels)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images: float (N, 3, H, W) or (3, H, W) in [-1, 1], any H, W (padded internally to a
        multiple of 128 by reflection and cropped back). Returns float32 of the same shape on
        ``self.device``: the generator's output to gray (BT.601), clamped to [-1, 1], 3 channels.
        """
        from colorizer.models import SIZE_MULTIPLE

        single = images.dim() == 3
        if single:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"SketchModel expects (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
        x = images.to(device=self.device, dtype=torch.float32)
        h, w = x.shape[2:]
        pad_h, pad_w = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        out = self.net(x, noise=self.noise)[:, :, :h, :w]
        gray = to_gray(out).clamp_(-1.0, 1.0)
        sketch = gray.expand(-1, 3, -1, -1).contiguous()
        return sketch[0] if single else sketch
