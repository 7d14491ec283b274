"""The GAN train step in images/s: the reference pipeline against our lean step, per provider.

One timed round is one training step on one batch, data path included (from decoded 8-bit crops to the
optimizer updates); images/s = batch / seconds per step. Decoding, cropping and flipping are left
out of both pipelines (identical work in both, and not the subject).

The reference pipeline (``reference_step``), as the public reference trains (delta6189/Anime-Sketch-
Colorizer ``dataloader.py`` and ``train.ipynb``): eager fp32; per sample, in the data-loading path, a
0.25x ``INTER_AREA`` resize and ``cv2.kmeans(K=9, criteria=(EPS + MAX_ITER, 10, 1.0), attempts=10,
KMEANS_PP_CENTERS)``, nine full-size uint8 color images converted to tensors and normalised; then
TWO generator forwards per step (one whose output is detached for the D update, one for the G
update); LSGAN + 100 L1 + feature + TV losses (SPEC.md weights); Adam(2e-4, (0.5, 0.999)).
The data path runs in the step's process, as a DataLoader with ``num_workers=0`` would; with worker
processes the cv2 work overlaps the device work, up to the number of workers.
``reference_step(..., published_sketches=True)`` also regenerates each sample's sketch with a
Color2Sketch network at batch 1, as the published data loader does (a second row, for the record).

The lean step (``lean_step``): palettes for the whole batch on the device with
``colorizer.palette.extract_palette``, ONE generator forward whose output is detached for D, the same
losses and optimizers. Providers: eager fp32, eager bf16 (autocast, fp32 master weights; channels_last
on a GPU), torch.compile of G, and the ``triton`` / ``native`` kernel backends.

Losses: ``colorizer.losses`` with its default weights. VGG: ImageNet weights cannot be downloaded here,
so the feature loss runs ``colorizer.losses.VGGFeatures`` randomly initialised (VGG16 conv1_1, ReLU,
conv1_2, ReLU; frozen). Its cost is what counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn as nn

from benchmarks.ceilings import DTYPES_BY_NAME, Work, count_work
from benchmarks.palette_cv2 import reference_palettes
from benchmarks.timing import synchronized
from colorizer import losses

REFERENCE_WIDTH = (64, 128, 256, 512)
PALETTE_K = 9
CV2_CRITERIA_ITERS = 10
CV2_CRITERIA_EPS = 1.0
CV2_ATTEMPTS = 10
# Adam reads param, grad, exp_avg, exp_avg_sq and writes param, exp_avg, exp_avg_sq: 7 fp32 words.
ADAM_WORDS_PER_PARAM = 7

PROVIDERS = (
    "reference",
    "reference-published",
    "lean-eager",
    "lean-bf16",
    "lean-compile",
    "lean-triton",
    "lean-native",
)
DESCRIPTIONS = {
    "reference": "reference pipeline: cv2 palettes per sample, two G forwards, eager fp32",
    "reference-published": "reference pipeline + Color2Sketch sketch per sample (as the published loader)",
    "lean-eager": "lean step: device palettes, one G forward, eager fp32",
    "lean-bf16": "lean step, bf16 autocast (fp32 master weights)",
    "lean-compile": "lean step, torch.compile of G (D eager: spectral norm)",
    "lean-triton": "lean step on the Triton kernels",
    "lean-native": "lean step on the native extension",
}


class Skip(Exception):
    """A provider that cannot run here; the message is the one-line reason."""


@dataclass(frozen=True)
class TrainCase:
    """channels: generator widths; batch N; square crop size S; device; disc_channels: the
    discriminator's four widths (the reference's by default; smaller only for quick runs)."""

    channels: tuple[int, ...] = REFERENCE_WIDTH
    batch: int = 2
    size: int = 256
    device: str = "cpu"
    disc_channels: tuple[int, int, int, int] = (64, 128, 256, 512)


# --------------------------------------------------------------------------------------------------
# Losses: colorizer.losses (SPEC.md "Losses and training"), its default weights.


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return losses.discriminator_loss(d_real, d_fake)


def generator_loss(d_fake: torch.Tensor, fake: torch.Tensor, real: torch.Tensor, vgg: nn.Module) -> torch.Tensor:
    total, _ = losses.generator_loss(d_fake, fake, real, losses.DEFAULT_WEIGHTS, vgg)
    return total


# --------------------------------------------------------------------------------------------------
# Models and optimizers


@dataclass
class GAN:
    generator: nn.Module
    discriminator: nn.Module
    vgg: nn.Module
    opt_g: torch.optim.Optimizer | None
    opt_d: torch.optim.Optimizer | None
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    sketcher: nn.Module | None = None
    notes: list[str] = field(default_factory=list)


def build_gan(
    case: TrainCase,
    kernels: str = "eager",
    autocast_dtype: torch.dtype | None = None,
    compile: bool = False,
    channels_last: bool = False,
    sketcher: bool = False,
    optimizers: bool = True,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> GAN:
    """Generator, discriminator, VGG stand-in and Adam optimizers on ``case.device``.

    dtype: parameter dtype (float32 for training; lower only for counting work on the meta device).
    """
    from colorizer.models import Color2Sketch, Discriminator, Sketch2Color

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Sketch2Color(channels=case.channels, kernels=kernels)
        discriminator = Discriminator(channels=case.disc_channels, kernels=kernels)
        vgg = losses.VGGFeatures()  # random weights: the timing stand-in for ImageNet VGG16's first layers
        sketch_net = Color2Sketch(channels=case.channels).eval() if sketcher else None
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    to = dict(device=case.device, dtype=dtype, memory_format=memory_format)
    generator, discriminator, vgg = generator.to(**to).train(), discriminator.to(**to).train(), vgg.to(**to)
    if sketch_net is not None:
        sketch_net = sketch_net.to(device=case.device)
    opt_g = opt_d = None
    if optimizers:
        opt_g = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(
            [p for p in discriminator.parameters() if p.requires_grad], lr=2e-4, betas=(0.5, 0.999)
        )
    if compile:
        torch._dynamo.reset()  # a fresh cache per run: a full one silently falls back to eager
        # Only G is compiled: D's spectral norm updates its power-iteration vectors in place on every
        # forward, and D runs twice (real, fake) before one backward, which compiled autograd rejects
        # ("modified by an inplace operation"). G is >95% of the step's FLOPs.
        generator = torch.compile(generator)
    return GAN(generator, discriminator, vgg, opt_g, opt_d, autocast_dtype, channels_last, sketch_net)


# --------------------------------------------------------------------------------------------------
# Data: pre-decoded 8-bit crops, and the two palette paths.


def sample_images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 (N, S, S, 3) RGB crops of real photographs (scikit-image's bundled color images),
    resized with area interpolation; synthetic flat-colored shapes when scikit-image is missing.
    Real pictures matter: K-means converges faster on them than on noise."""
    import cv2

    rng = np.random.default_rng(seed)
    try:
        import skimage.data as data

        sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    except ImportError:
        sources = [_synthetic_drawing(512, rng) for _ in range(4)]
    out = np.empty((batch, size, size, 3), dtype=np.uint8)
    for i in range(batch):
        src = sources[i % len(sources)]
        side = int(rng.integers(min(src.shape[:2]) // 2, min(src.shape[:2]) + 1))
        top = int(rng.integers(0, src.shape[0] - side + 1))
        left = int(rng.integers(0, src.shape[1] - side + 1))
        crop = np.ascontiguousarray(src[top : top + side, left : left + side])
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(crop, (size, size), interpolation=interp)
    return out


def _synthetic_drawing(size: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    img = np.full((size, size, 3), 255, dtype=np.uint8)
    for _ in range(12):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        center = tuple(int(c) for c in rng.integers(0, size, 2))
        cv2.circle(img, center, int(rng.integers(size // 16, size // 3)), color, -1)
        cv2.circle(img, center, int(rng.integers(size // 16, size // 3)), (0, 0, 0), 2)
    return img


def sample_sketches(images: np.ndarray) -> np.ndarray:
    """Gray line-art stand-ins (N, S, S) uint8 from the crops (a fixed, cheap gradient threshold);
    only their shape matters for timing."""
    gray = images.mean(axis=3)
    edges = np.abs(np.diff(gray, axis=1, prepend=gray[:, :1])) + np.abs(np.diff(gray, axis=2, prepend=gray[:, :, :1]))
    return np.where(edges > 24, 0, 255).astype(np.uint8)


def cv2_palette(image: np.ndarray) -> np.ndarray:
    """The reference's palette of one uint8 (H, W, 3) image: (9, 3) uint8 cluster centers
    (``benchmarks.palette_cv2.reference_palettes``: 0.25x INTER_AREA, cv2.kmeans, K=9, 10 attempts)."""
    return reference_palettes(image[None], k=PALETTE_K, restarts=CV2_ATTEMPTS, iters=CV2_CRITERIA_ITERS,
                              eps=CV2_CRITERIA_EPS)[0]  # fmt: skip


def _to_image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> float32 (C, H, W) in [-1, 1], as torchvision's to_tensor + normalize(0.5, 0.5)."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255.0).sub(0.5).div(0.5)


def reference_sample(image: np.ndarray, sketch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The published loader's per-sample work: (sketch (3, S, S), image (3, S, S), planes (27, S, S))."""
    centers = cv2_palette(image)
    # The reference builds nine full-size uint8 color images and converts each like a picture.
    planes = [_to_image_tensor(np.broadcast_to(centers[i], image.shape).copy()) for i in range(PALETTE_K)]
    sketch3 = _to_image_tensor(np.repeat(sketch[:, :, None], 3, axis=2))
    return sketch3, _to_image_tensor(image), torch.cat(planes, dim=0)


@dataclass
class Batch:
    """Decoded data of one step: images uint8 (N, S, S, 3) and sketches uint8 (N, S, S), on the CPU
    (reference path) and on the device (lean path)."""

    images: np.ndarray
    sketches: np.ndarray
    images_device: torch.Tensor
    sketches_device: torch.Tensor


def make_batch(case: TrainCase, seed: int = 0) -> Batch:
    images = sample_images(case.batch, case.size, seed)
    sketches = sample_sketches(images)
    return Batch(
        images=images,
        sketches=sketches,
        images_device=torch.from_numpy(images).to(case.device),
        sketches_device=torch.from_numpy(sketches).to(case.device),
    )


def reference_inputs(batch: Batch, device: str, sketcher: nn.Module | None = None):
    """The reference data path for a batch: (condition (N, 30, S, S), real (N, 3, S, S)) on device."""
    sketches, images, planes = [], [], []
    for image, sketch in zip(batch.images, batch.sketches):
        s, i, p = reference_sample(image, sketch)
        if sketcher is not None:
            # Published loader: the sketch is regenerated per sample by Color2Sketch at batch 1,
            # then made gray (ITU-R 601 luma, as PIL's L mode) and repeated to 3 channels.
            with torch.no_grad():
                edge = sketcher(i[None].to(device)).squeeze(0).cpu()
            gray = (0.299 * edge[0] + 0.587 * edge[1] + 0.114 * edge[2]).clamp(-1, 1)
            s = gray.expand(3, -1, -1)
        sketches.append(s)
        images.append(i)
        planes.append(p)
    condition = torch.cat((torch.stack(sketches), torch.stack(planes)), dim=1).to(device)
    return condition, torch.stack(images).to(device)


def lean_inputs(batch: Batch):
    """The lean data path: palettes batched on the device; (condition, real) on the device."""
    from colorizer.palette import extract_palette, palette_planes

    images = batch.images_device
    n, h, w, _ = images.shape
    planes = palette_planes(extract_palette(images, k=PALETTE_K), h, w)
    real = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    sketch = batch.sketches_device.float().div(127.5).sub(1.0)[:, None].expand(n, 3, h, w)
    return torch.cat((sketch, planes), dim=1), real


# --------------------------------------------------------------------------------------------------
# Steps


def _autocast(gan: GAN, device: str):
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):  # the meta device (work counting) has no autocast
        return contextlib.nullcontext()
    if gan.autocast_dtype is None:
        return torch.autocast(device_type=kind, enabled=False)
    return torch.autocast(device_type=kind, dtype=gan.autocast_dtype)


def _d_update(gan: GAN, condition, real, fake_detached, device, step: bool = True):
    with _autocast(gan, device):
        loss_d = discriminator_loss(gan.discriminator(condition, real), gan.discriminator(condition, fake_detached))
    if gan.opt_d is not None:
        gan.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    if step and gan.opt_d is not None:
        gan.opt_d.step()
    return loss_d


def _g_update(gan: GAN, condition, real, fake, device, step: bool = True):
    with _autocast(gan, device):
        loss_g = generator_loss(gan.discriminator(condition, fake), fake, real, gan.vgg)
    if gan.opt_g is not None:
        gan.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    if step and gan.opt_g is not None:
        gan.opt_g.step()
    return loss_g


def reference_step(gan: GAN, condition, real, device: str):
    """Two generator forwards: one detached for D, a fresh one for G. Returns (loss_d, loss_g)."""
    with _autocast(gan, device):
        fake = gan.generator(condition)
    loss_d = _d_update(gan, condition, real, fake.detach(), device)
    with _autocast(gan, device):
        fake = gan.generator(condition)
    return loss_d, _g_update(gan, condition, real, fake, device)


def lean_step(gan: GAN, condition, real, device: str, step: bool = True):
    """One generator forward, detached for D and reused for G. Returns (loss_d, loss_g)."""
    if gan.channels_last:
        condition = condition.contiguous(memory_format=torch.channels_last)
    with _autocast(gan, device):
        fake = gan.generator(condition)
    loss_d = _d_update(gan, condition, real, fake.detach(), device, step)
    return loss_d, _g_update(gan, condition, real, fake, device, step)


@dataclass
class PreparedStep:
    run: Callable[[], object]
    runs_on: str
    dtype: str
    note: str = ""


def prepare(provider: str, case: TrainCase) -> PreparedStep:
    """A callable doing one full step (data path + updates) for ``provider``; raises Skip(reason)."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown train provider {provider!r}; choose from {PROVIDERS}")
    on_cuda = case.device.startswith("cuda")
    batch = make_batch(case)
    if provider.startswith("reference"):
        published = provider == "reference-published"
        gan = build_gan(case, sketcher=published)

        def run():
            condition, real = reference_inputs(batch, case.device, gan.sketcher)
            reference_step(gan, condition, real, case.device)

        note = "cv2.kmeans per sample, 2 G forwards" + (", Color2Sketch per sample" if published else "")
        return PreparedStep(run=run, runs_on=case.device, dtype="float32", note=note)

    notes = []
    kernels, autocast_dtype, compile_models, dtype = "eager", None, False, "float32"
    if provider == "lean-bf16":
        if on_cuda and not torch.cuda.is_bf16_supported():
            raise Skip("this GPU has no bf16")
        autocast_dtype, dtype = torch.bfloat16, "bfloat16"
    elif provider == "lean-compile":
        compile_models = True
    elif provider in ("lean-triton", "lean-native"):
        from colorizer.ops import KernelsUnavailable, get_ops

        kernels = provider.split("-", 1)[1]
        if kernels == "triton" and not on_cuda:
            raise Skip("Triton kernels need a CUDA GPU; on the CPU Triton only runs in its interpreter")
        try:
            get_ops(kernels)
        except KernelsUnavailable as exc:
            raise Skip(str(exc).splitlines()[0]) from exc
    gan = build_gan(case, kernels=kernels, autocast_dtype=autocast_dtype, compile=compile_models, channels_last=on_cuda)
    if on_cuda:
        notes.append("channels_last")

    def run():
        condition, real = lean_inputs(batch)
        lean_step(gan, condition, real, case.device)

    return PreparedStep(run=run, runs_on=case.device, dtype=dtype, note="; ".join(notes))


def train_step_work(case: TrainCase, dtype: str = "float32") -> Work:
    """Work of the lean step (one G forward, G and D backward, VGG on fake and real), counted on the
    meta device with parameters in ``dtype``, plus Adam's traffic (7 fp32 words per trainable
    parameter). The palette is left out (it is not matmul or copy work; see the palette rows)."""
    meta = TrainCase(case.channels, case.batch, case.size, "meta", case.disc_channels)
    with torch.device("meta"):
        gan = build_gan(meta, optimizers=False, dtype=DTYPES_BY_NAME[dtype])
        condition = torch.empty(case.batch, 30, case.size, case.size, dtype=DTYPES_BY_NAME[dtype])
        real = torch.empty(case.batch, 3, case.size, case.size, dtype=DTYPES_BY_NAME[dtype])

    def run():
        lean_step(gan, condition, real, "meta", step=False)

    work = count_work(run, items=case.batch)
    params = sum(p.numel() for m in (gan.generator, gan.discriminator) for p in m.parameters() if p.requires_grad)
    adam = float(params * ADAM_WORDS_PER_PARAM * 4)
    return Work(flops=work.flops, bytes=work.bytes + adam, eager_bytes=work.eager_bytes + adam, items=case.batch)


# --------------------------------------------------------------------------------------------------
# pytest-benchmark entry points (collected by benchmarks/conftest.py; run with --benchmark-only).


@pytest.mark.parametrize("provider", PROVIDERS)
def test_train_step(benchmark, bench_options, provider):
    case = TrainCase(
        channels=bench_options.channels,
        batch=bench_options.train_batch,
        size=bench_options.size,
        device=bench_options.device,
    )
    try:
        prepared = prepare(provider, case)
    except Skip as skip:
        pytest.skip(str(skip))
    benchmark.group = f"train step {case.batch}x{case.size} {case.device}"
    benchmark.extra_info.update(provider=provider, batch=case.batch, size=case.size, dtype=prepared.dtype)
    benchmark.pedantic(
        synchronized(prepared.run, case.device),
        rounds=bench_options.rounds,
        warmup_rounds=bench_options.warmup,
        iterations=1,
    )
