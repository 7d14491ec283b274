"""The GAN train step in images/s: the reference pipeline against the trainer's own step, per provider.

One timed round is one training step on one batch, data path included (from decoded 8-bit crops to the
optimizer updates); images/s = batch / seconds per step. Decoding, cropping and flipping are left
out of both pipelines (identical work in both, and not the subject).

Every provider runs the trainer's step, ``colorizer.train.step.GanStep`` (what ``Trainer.train_step``
calls): models from ``build_models``, Adam as configured, D frozen during G's backward, the non-finite
check on every update, GradScalers with fp16, DDP/compile wrappers as the trainer makes them. There is
no copy of the step here; what differs between the rows is configuration and the data path.

The reference pipeline (``reference_step``), as the public reference trains (delta6189/Anime-Sketch-
Colorizer ``dataloader.py`` and ``train.ipynb``): eager fp32; per sample, in the data-loading path, a
0.25x ``INTER_AREA`` resize and ``cv2.kmeans(K=9, criteria=(EPS + MAX_ITER, 10, 1.0), attempts=10,
KMEANS_PP_CENTERS)``, nine full-size uint8 color images converted to tensors and normalised; then
TWO generator forwards per step (one whose output is detached for the D update, one for the G
update), each update being ``GanStep``'s. The data path runs in the step's process, as a DataLoader
with ``num_workers=0`` would; with worker processes the cv2 work overlaps the device work, up to the
number of workers. ``reference_step(..., published_sketches=True)`` also regenerates each sample's
sketch with a Color2Sketch network at batch 1, as the published data loader does (a second row, for
the record).

The trainer's step (``lean_step``, the ``lean-*`` rows): ``GanStep.inputs`` (palettes for the whole batch
on the device with ``colorizer.palette.extract_palette``, the condition) and ``GanStep.step`` (ONE
generator forward whose output is detached for D). Providers: eager fp32, ``--amp bf16`` (autocast,
fp32 master weights; channels_last on a GPU; skipped on a CPU without native bf16, where the trainer
trains in float32), ``--compile``, and ``--kernels triton`` / ``native``.

Losses: ``colorizer.losses`` with the trainer's default weights. VGG: ImageNet weights cannot be
downloaded here, so the feature loss runs ``colorizer.losses.VGGFeatures`` randomly initialised (VGG16
conv1_1, ReLU, conv1_2, ReLU; frozen). Its cost is what counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn as nn

from benchmarks.ceilings import DTYPES_BY_NAME, Work, count_work
from benchmarks.palette_cv2 import reference_palettes
from benchmarks.timing import synchronized
from colorizer import losses
from colorizer.train.config import TrainConfig
from colorizer.train.step import GanStep, build_models

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
    "reference": "reference pipeline: cv2 palettes per sample, two G forwards (the trainer's updates), eager fp32",
    "reference-published": "reference pipeline + Color2Sketch sketch per sample (as the published loader)",
    "lean-eager": "the trainer's step (GanStep): device palettes, one G forward, eager fp32",
    "lean-bf16": "the trainer's step, --amp bf16 (autocast, fp32 master weights)",
    "lean-compile": "the trainer's step, --compile (G compiled; D eager: spectral norm)",
    "lean-triton": "the trainer's step, --kernels triton",
    "lean-native": "the trainer's step, --kernels native",
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
# The trainer's step, configured for a case


def train_config(
    case: TrainCase, kernels: str = "eager", amp: str = "none", compile: bool = False, channels_last: bool = False
) -> TrainConfig:
    """The TrainConfig of a case: its widths, batch and size, the trainer's defaults for the rest."""
    return TrainConfig(
        data="synthetic",
        channels=tuple(case.channels),
        d_channels=tuple(case.disc_channels),
        kernels=kernels,
        batch_size=case.batch,
        size=case.size,
        amp=amp,
        compile=compile,
        channels_last=channels_last,
    )


def build_step(
    case: TrainCase,
    kernels: str = "eager",
    amp: str = "none",
    compile: bool = False,
    channels_last: bool = False,
    sketcher: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[GanStep, nn.Module | None]:
    """(the trainer's GanStep on ``case.device``, a Color2Sketch network or None).

    The VGG of the feature term is ``VGGFeatures`` with random weights (its cost is what counts).
    dtype: parameter dtype (float32 for training; lower only for counting work on the meta device).
    """
    from colorizer.models import Color2Sketch

    config = train_config(case, kernels=kernels, amp=amp, compile=compile, channels_last=channels_last)
    device = torch.device(case.device)
    if compile:
        torch._dynamo.reset()  # a fresh cache per run: a full one silently falls back to eager
    with torch.random.fork_rng(devices=[]):
        generator, discriminator = build_models(config, device)
        vgg = losses.VGGFeatures()  # random weights: the timing stand-in for ImageNet VGG16's first layers
        sketch_net = Color2Sketch(channels=case.channels).eval() if sketcher else None
    vgg = vgg.to(device=device, dtype=dtype)
    if dtype != torch.float32:
        generator.to(dtype=dtype)
        discriminator.to(dtype=dtype)
    if sketch_net is not None:
        sketch_net = sketch_net.to(device=device)
    return GanStep(config, generator, discriminator, device, vgg=vgg), sketch_net


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


def lean_inputs(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's data path before its step: (color, sketch) float (N, 3, S, S) in [-1, 1] on the
    device, as ``colorizer.data.collate`` gives them."""
    images = batch.images_device
    n, h, w, _ = images.shape
    color = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    sketch = batch.sketches_device.float().div(127.5).sub(1.0)[:, None].expand(n, 3, h, w)
    return color, sketch


# --------------------------------------------------------------------------------------------------
# Steps: both are GanStep's updates; only the number of generator forwards differs.


def reference_step(step: GanStep, condition: torch.Tensor, real: torch.Tensor) -> None:
    """The reference's two generator forwards: one detached for D, a fresh one for G."""
    fake = step.generate(condition)
    loss_d = step.d_backward(condition, real, fake.detach())
    step.apply(step.opt_d, step.scaler_d, loss_d, step.d_trainable)
    fake = step.generate(condition)
    loss_g, _ = step.g_backward(condition, real, fake)
    step.apply(step.opt_g, step.scaler_g, loss_g, step.g_trainable)


def lean_step(step: GanStep, color: torch.Tensor, sketch: torch.Tensor, palette_seed: int = 0) -> dict[str, float]:
    """The trainer's step (``Trainer.train_step`` without the learning-rate schedule): palettes and
    condition (``GanStep.inputs``), then ``GanStep.step``. Returns its losses."""
    color, _, condition = step.inputs(color, sketch, palette_seed)
    return step.step(color, condition)


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
        step, sketcher = build_step(case, sketcher=published)

        def run():
            condition, real = reference_inputs(batch, case.device, sketcher)
            reference_step(step, condition, real)

        note = "cv2.kmeans per sample, 2 G forwards" + (", Color2Sketch per sample" if published else "")
        return PreparedStep(run=run, runs_on=case.device, dtype="float32", note=note)

    notes = []
    kernels, amp, compile_models, dtype = "eager", "none", False, "float32"
    if provider == "lean-bf16":
        if on_cuda and not torch.cuda.is_bf16_supported():
            raise Skip("this GPU has no bf16")
        amp, dtype = "bf16", "bfloat16"
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
    step, _ = build_step(case, kernels=kernels, amp=amp, compile=compile_models, channels_last=on_cuda)
    if amp != "none" and step.amp_dtype is None:  # the trainer would train in float32 here
        raise Skip(step.amp_note.removeprefix("note: "))
    if on_cuda:
        notes.append("channels_last")

    def run():
        lean_step(step, *lean_inputs(batch))

    return PreparedStep(run=run, runs_on=case.device, dtype=dtype, note="; ".join(notes))


def train_step_work(case: TrainCase, dtype: str = "float32") -> Work:
    """Work of the trainer's step (one G forward, G and D backward, VGG on fake and real: ``GanStep``'s
    ``generate``, ``d_backward`` and ``g_backward``), counted on the meta device with parameters in
    ``dtype``, plus Adam's traffic (7 fp32 words per trainable parameter). The palette is left out (it
    is not matmul or copy work; see the palette rows)."""
    meta = TrainCase(case.channels, case.batch, case.size, "meta", case.disc_channels)
    with torch.device("meta"):
        step, _ = build_step(meta, dtype=DTYPES_BY_NAME[dtype])
        condition = torch.empty(case.batch, 30, case.size, case.size, dtype=DTYPES_BY_NAME[dtype])
        real = torch.empty(case.batch, 3, case.size, case.size, dtype=DTYPES_BY_NAME[dtype])

    def run():
        fake = step.generate(condition)
        step.d_backward(condition, real, fake.detach())
        step.g_backward(condition, real, fake)

    work = count_work(run, items=case.batch)
    params = sum(p.numel() for p in step.g_trainable + step.d_trainable)
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
