"""The GAN training step: the one ``Trainer`` runs and the one the benchmarks time.

``build_models(cfg, device)`` makes the generator and the discriminator as the trainer does (seeded,
memory format, train mode); ``GanStep(cfg, generator, discriminator, device)`` holds what one step needs (optimizers,
GradScalers, the autocast dtype, the loss weights, the DDP / ``torch.compile`` wrappers) and runs it:

1. ``inputs``: the palette of every image (``extract_palette`` on the device, from the color crop
   itself), its 27 planes, ``cond = cat(sketch, planes)`` (30 channels);
2. ``generate``: one generator forward ``fake = G(cond)`` (noise from the global torch RNG);
3. ``d_backward`` + ``apply``: ``MSE(D(cond, real), 0.9) + MSE(D(cond, fake.detach()), 0)``;
4. ``g_backward`` + ``apply``: ``w_gan*MSE(D(cond, fake), 0.9) + w_l1*L1 + w_feature*VGG MSE +
   w_tv*TV`` against the updated D, D's parameters frozen for this backward.

``apply`` steps an optimizer only when the loss and all gradients are finite on every process (with
fp16, the GradScaler handles overflowing gradients itself). With ``w_gan`` = 0 the discriminator is
neither run nor trained. ``step(color, cond)`` is 2-4 in this order.

``--amp``: fp16 and bf16 autocast on CUDA; on the CPU, bf16 autocast only where the CPU has native
bf16 (``colorizer.hardware.cpu_has_fast_bf16``), float32 otherwise (and fp16 always), with a note
that says why (``amp_dtype``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from colorizer.errors import ConfigError
from colorizer.losses import LOSS_TERMS, REAL_LABEL, LossWeights, VGGFeatures, discriminator_loss, generator_loss
from colorizer.train.config import TrainConfig
from colorizer.train.distributed import DistContext, any_across_ranks

PALETTE_K = 9
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str, device: torch.device) -> tuple[torch.dtype | None, str | None]:
    """(autocast dtype or None for float32, a one-line note when ``amp`` is not applied as asked)."""
    from colorizer.hardware import cpu_has_fast_bf16

    dtype = AMP_DTYPES[amp]
    if dtype is None or device.type == "cuda":
        return dtype, None
    if device.type == "cpu" and dtype == torch.bfloat16:
        if cpu_has_fast_bf16():
            return dtype, None
        return None, (
            "note: amp bf16: this CPU has no native bf16 (no AVX-512 BF16 or AMX), where bf16 is much "
            "slower than float32 (a training step ~28x); training in float32"
        )
    where = "CUDA and bf16 on CPUs with native bf16"
    return None, f"note: amp {amp} applies on {where}; training in float32 on {device}"


def build_models(cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """(Sketch2Color, Discriminator) as configured, seeded with ``cfg.seed``, on ``device``, in train mode."""
    from colorizer.models import Discriminator, Sketch2Color

    torch.manual_seed(cfg.seed)  # the same initial weights on every process
    try:
        generator = Sketch2Color(channels=cfg.channels, kernels=cfg.kernels, norm_groups=cfg.norm_groups)
        discriminator = Discriminator(channels=cfg.d_channels, kernels=cfg.kernels)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    generator.to(device, memory_format=memory_format)
    discriminator.to(device, memory_format=memory_format)
    return generator.train(), discriminator.train()


def _grads_finite(params: list[torch.Tensor]) -> torch.Tensor:
    """0-dim bool tensor: every gradient of ``params`` is finite (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(True)
    return torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(grads)]).sum())


class GanStep:
    """One D update and one G update, as ``cfg`` configures them.

    generator, discriminator: from ``build_models``. vgg: the feature-loss network (None: no feature term). ctx: the
    DistContext under DDP (G and D are then wrapped in DistributedDataParallel here).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        generator: nn.Module,
        discriminator: nn.Module,
        device: torch.device,
        *,
        vgg: VGGFeatures | None = None,
        ctx: DistContext | None = None,
    ):
        self.cfg = cfg
        self.G, self.D, self.vgg = generator, discriminator, vgg
        self.device = torch.device(device)
        self.ctx = ctx or DistContext(device=self.device)
        self.d_trainable = [p for p in discriminator.parameters() if p.requires_grad]
        self.g_trainable = [p for p in generator.parameters() if p.requires_grad]
        g_params = self.g_trainable
        if cfg.lr_g_norm is not None:  # two groups: conv weights at lr_g, the 1-D parameters at lr_g_norm
            g_params = [
                {"params": [p for p in self.g_trainable if p.dim() > 1]},
                {"params": [p for p in self.g_trainable if p.dim() <= 1], "lr": cfg.lr_g_norm},
            ]
        self.opt_g = torch.optim.Adam(g_params, lr=cfg.lr_g, betas=tuple(cfg.betas_g))
        self.opt_d = torch.optim.Adam(self.d_trainable, lr=cfg.lr_d, betas=tuple(cfg.betas_d))
        self.amp_dtype, self.amp_note = amp_dtype(cfg.amp, self.device)
        use_scaler = self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.weights = LossWeights(**{term.name: getattr(cfg, term.config_field) for term in LOSS_TERMS})
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

        self.g_forward: nn.Module = generator
        self.d_forward: nn.Module = discriminator
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_forward = DistributedDataParallel(generator, device_ids=ids)
            self.d_forward = DistributedDataParallel(discriminator, device_ids=ids)
        if cfg.compile:
            self.g_forward = torch.compile(self.g_forward)

    @property
    def trains_discriminator(self) -> bool:
        """False with ``w_gan`` = 0: D is then neither run nor trained, and has no loss to show."""
        return self.weights.gan != 0

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def inputs(
        self, color: torch.Tensor, sketch: torch.Tensor, palette_seed: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(color, palette uint8 (N, 9, 3), cond (N, 30, S, S)) in the step's memory format.

        color, sketch: (N, 3, S, S) float in [-1, 1] on the device; palette_seed: the K-means seed.
        """
        from colorizer.palette import extract_palette, palette_planes

        palette = extract_palette(color, k=PALETTE_K, seed=palette_seed)
        planes = palette_planes(palette, color.shape[-2], color.shape[-1]).to(self.device, color.dtype)
        cond = torch.cat([sketch, planes], dim=1).contiguous(memory_format=self.memory_format)
        return color.contiguous(memory_format=self.memory_format), palette, cond

    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.g_forward(cond)

    def d_backward(self, cond: torch.Tensor, color: torch.Tensor, fake_detached: torch.Tensor) -> torch.Tensor:
        """D's loss on real and the detached fake, backpropagated (scaled); returns the loss."""
        with self.autocast():
            d_real = self.d_forward(cond, color)
            d_fake = self.d_forward(cond, fake_detached)
        loss_d = discriminator_loss(d_real, d_fake)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss_d).backward()
        return loss_d

    def g_backward(
        self, cond: torch.Tensor, color: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's loss against the current D, backpropagated (scaled) with D's parameters frozen (no
        gradient for D, no DDP reduction); returns (loss, its unweighted terms). With ``w_gan`` = 0 D
        is not run: the GAN term is a constant zero."""
        if not self.trains_discriminator:
            no_gan = torch.full((fake.shape[0], 1), REAL_LABEL, device=fake.device)  # a zero GAN term
            loss_g, parts = generator_loss(no_gan, fake, color, self.weights, self.vgg)
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(loss_g).backward()
            return loss_g, parts
        for p in self.d_trainable:
            p.requires_grad_(False)
        try:
            with self.autocast():
                d_fake_for_g = self.D(cond, fake)
            loss_g, parts = generator_loss(d_fake_for_g, fake, color, self.weights, self.vgg)
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(loss_g).backward()
        finally:
            for p in self.d_trainable:
                p.requires_grad_(True)
        return loss_g, parts

    def apply(self, opt, scaler, loss: torch.Tensor, params: list[torch.Tensor]) -> bool:
        """optimizer.step() when loss and gradients are finite on every process; True if applied."""
        if scaler.is_enabled():
            scaler.unscale_(opt)
        loss_ok = bool(torch.isfinite(loss.detach()).item())
        grads_ok = bool(_grads_finite(params).item())
        loss_bad, grads_bad = any_across_ranks(self.ctx, [not loss_ok, not grads_ok])
        if scaler.is_enabled():
            if loss_bad:
                opt.zero_grad(set_to_none=True)
                scaler.update()
                return False
            scaler.step(opt)  # skips by itself on overflow; that is not a bad step
            scaler.update()
            return True
        if loss_bad or grads_bad:
            opt.zero_grad(set_to_none=True)
            return False
        opt.step()
        return True

    def step(self, color: torch.Tensor, cond: torch.Tensor) -> dict[str, float]:
        """One step on prepared inputs (``inputs``): the losses as floats and 'bad' (0/1).

        Without a D update (``w_gan`` = 0) ``loss_d`` and ``gan`` are nan: not trained, not measured.
        """
        fake = self.generate(cond)
        d_ok = True
        loss_d = None
        if self.trains_discriminator:
            loss_d = self.d_backward(cond, color, fake.detach())
            d_ok = self.apply(self.opt_d, self.scaler_d, loss_d, self.d_trainable)
        loss_g, parts = self.g_backward(cond, color, fake)
        g_ok = self.apply(self.opt_g, self.scaler_g, loss_g, self.g_trainable)
        stats = {
            "loss_d": float("nan") if loss_d is None else loss_d.item(),
            "loss_g": loss_g.item(),
            **{k: v.item() for k, v in parts.items()},
        }
        if loss_d is None:
            stats["gan"] = float("nan")
        stats["bad"] = 0.0 if (d_ok and g_ok) else 1.0
        return stats
