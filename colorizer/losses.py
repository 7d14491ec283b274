"""Training losses (SPEC.md, "Losses and training").

- Discriminator, LSGAN with soft real labels: ``MSE(D(real), 0.9) + MSE(D(fake.detach()), 0)``.
- Generator: ``w_gan * MSE(D(fake), 0.9) + w_l1 * L1(fake, real) + w_feature * MSE(VGG(fake), VGG(real))
  + w_tv * TV(fake)``, weights from the design note by default (1, 100, 1e-4, 1e-2). The terms are
  declared in ``LOSS_TERMS``; the train_log.csv columns, the checks of the ``w_*`` options and the
  loss's dict are derived from it. ``LossWeights`` and the trainer's ``w_*`` fields are written out
  (so grep and type checkers find them) and checked against it at import (``check_loss_fields``).
  A new term is one function and one row here, plus one field in ``LossWeights`` and one ``w_`` field
  in ``colorizer/train/config.py``.
- ``VGGFeatures``: the first four layers of an ImageNet VGG16 (conv1_1, ReLU, conv1_2, ReLU), applied
  to the [-1, 1] image as it is (no ImageNet normalisation, as the reference). ImageNet weights cannot
  be downloaded here, so they come from a user-given file in torchvision's ``vgg16`` state-dict layout
  (``features.0.weight``, ``features.0.bias``, ``features.2.weight``, ``features.2.bias``). Without a
  file the feature term is disabled (weight 0) and the trainer says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from colorizer.errors import CheckpointError

REAL_LABEL = 0.9
FAKE_LABEL = 0.0
VGG_KEYS = ("features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """TV(x) = 2 * (sum dh^2 / count_h + sum dw^2 / count_w) / N for x (N, C, H, W), a 0-dim tensor.

    count_h = C * (H - 1) * W and count_w = C * H * (W - 1) (SPEC.md). Computed in float32 at least.
    """
    n, c, h, w = x.shape
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).sum()
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).sum()
    return 2.0 * (dh / (c * (h - 1) * w) + dw / (c * h * (w - 1))) / n


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """LSGAN discriminator loss; d_real and d_fake are D's (N, 1) scores for real and detached fake."""
    d_real, d_fake = d_real.float(), d_fake.float()
    return F.mse_loss(d_real, torch.full_like(d_real, REAL_LABEL)) + F.mse_loss(
        d_fake, torch.full_like(d_fake, FAKE_LABEL)
    )


class VGGFeatures(nn.Module):
    """conv1_1 (3->64, 3x3, pad 1) -> ReLU -> conv1_2 (64->64) -> ReLU of VGG16; frozen.

    Input (N, 3, H, W) in [-1, 1]; output (N, 64, H, W). The layer names are torchvision's
    (``features.0``, ``features.2``) so its state dict loads as is.
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()
        )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:  # always frozen, whatever the parent does
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    @classmethod
    def from_file(cls, path: str, map_location="cpu") -> VGGFeatures:
        """Load the four tensors from a torchvision vgg16 state dict (``.pth`` or ``.safetensors``).

        The file may hold the full vgg16 state dict (extra keys are ignored) or only the four
        ``features.0/2`` tensors; it is loaded without unpickling code. Raises CheckpointError.
        """
        if not os.path.isfile(path):
            raise CheckpointError(f"VGG16 weights file not found: {path}")
        try:
            if path.endswith(".safetensors"):
                from safetensors.torch import load_file

                state = load_file(path, device="cpu")
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any parse failure is a bad file, not a bug here
            from colorizer.checkpoint import torch_load_reason

            raise CheckpointError(f"cannot read VGG16 weights {path}: {torch_load_reason(exc)}") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} is not a VGG16 state dict")
        missing = [k for k in VGG_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"{path} is not in torchvision's vgg16 layout: missing {', '.join(missing)}")
        model = cls()
        expected = model.state_dict()
        for key in VGG_KEYS:
            if tuple(state[key].shape) != tuple(expected[key].shape):
                raise CheckpointError(
                    f"{path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(expected[key].shape)}"
                )
        model.load_state_dict({k: state[k].float() for k in VGG_KEYS}, strict=True)
        return model.to(map_location)


# --------------------------------------------------------------------------------------------
# the generator loss terms, declared once
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossInputs:
    """What a generator loss term may look at. d_fake: (N, 1) D scores of the (not detached) fake;
    fake, real: (N, 3, H, W) in [-1, 1] as the model made them; fake32/real32: the same in float32."""

    d_fake: torch.Tensor
    fake: torch.Tensor
    real: torch.Tensor
    fake32: torch.Tensor
    real32: torch.Tensor
    vgg: VGGFeatures | None


def gan_term(x: LossInputs) -> torch.Tensor:
    """LSGAN generator term MSE(D(fake), 0.9)."""
    return F.mse_loss(x.d_fake.float(), torch.full_like(x.d_fake, REAL_LABEL, dtype=torch.float32))


def l1_term(x: LossInputs) -> torch.Tensor:
    return F.l1_loss(x.fake32, x.real32)


def feature_term(x: LossInputs) -> torch.Tensor:
    """MSE of VGG16 conv1_2 features (0 without a VGG); the real image's features carry no gradient.

    The images enter the VGG in its own parameter dtype: a bf16 fake (mixed precision) meets float32
    weights outside autocast."""
    if x.vgg is None:
        return torch.zeros((), device=x.fake.device)
    dtype = next(x.vgg.parameters()).dtype
    with torch.no_grad():
        target = x.vgg(x.real.to(dtype))
    return F.mse_loss(x.vgg(x.fake.to(dtype)).float(), target.float())


def tv_term(x: LossInputs) -> torch.Tensor:
    return total_variation(x.fake32)


@dataclass(frozen=True)
class LossTerm:
    """One generator loss term: everything about it that other modules derive.

    name: the key in ``generator_loss``'s dict, the ``LossWeights`` field and the train_log.csv column;
    the trainer's config field (file key, ``--w-...`` flag) is ``w_<name>``. default: its weight.
    help: the config field's help text. fn: computes the unweighted term (a 0-dim float32 tensor).
    skip_at_zero: not computed at all when its weight is 0 (reported as 0), for a costly term.
    added_later: the term came after training runs were first written; its weight then enters a
    run's identity hash only when it is not the default, so those runs still resume cleanly.
    """

    name: str
    default: float
    help: str
    fn: Callable[[LossInputs], torch.Tensor]
    skip_at_zero: bool = False
    added_later: bool = False

    @property
    def config_field(self) -> str:
        return f"w_{self.name}"


# Order = the order of the CSV columns and of the config fields.
LOSS_TERMS: tuple[LossTerm, ...] = (
    LossTerm("gan", 1.0, "weight of the LSGAN generator term MSE(D(fake), 0.9)", gan_term),
    LossTerm("l1", 100.0, "weight of L1(fake, real)", l1_term),
    LossTerm(
        "feature",
        1e-4,
        "weight of the VGG16 conv1_2 feature MSE (needs --vgg-weights)",
        feature_term,
        skip_at_zero=True,
    ),
    LossTerm("tv", 1e-2, "weight of the total-variation term", tv_term),
)
LOSS_NAMES: tuple[str, ...] = tuple(term.name for term in LOSS_TERMS)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator loss terms: one field per row of ``LOSS_TERMS``, same name, same
    default (the design note's values). ``check_loss_fields`` (run at import) fails when they drift."""

    gan: float = 1.0
    l1: float = 100.0
    feature: float = 1e-4
    tv: float = 1e-2


def check_loss_fields(owner: str, found: dict[str, tuple[float, str | None]], prefix: str = "") -> None:
    """Raise TypeError naming ``owner`` unless ``found`` ({field name: (default, help or None)}) has one
    field per ``LOSS_TERMS`` row, ``prefix + name``, in its order, with its default (and help).

    The places that list the loss terms field by field (``LossWeights``, ``TrainConfig``'s ``w_*``) call
    it when their module is imported, so a term added to the table but forgotten in one of them fails
    at once, naming the place.
    """
    expected = [prefix + term.name for term in LOSS_TERMS]
    if list(found) != expected:
        missing = [n for n in expected if n not in found]
        extra = [n for n in found if n not in expected]
        detail = f"missing {', '.join(missing) or '-'}; not in LOSS_TERMS {', '.join(extra) or '-'}"
        raise TypeError(f"{owner}: its loss-weight fields must be {', '.join(expected)} (LOSS_TERMS order): {detail}")
    for term in LOSS_TERMS:
        default, help_text = found[prefix + term.name]
        if default != term.default:
            raise TypeError(f"{owner}: {prefix}{term.name} defaults to {default!r}, LOSS_TERMS says {term.default!r}")
        if help_text is not None and help_text != term.help:
            raise TypeError(f"{owner}: the help of {prefix}{term.name} differs from its LOSS_TERMS row")


check_loss_fields("LossWeights", {f.name: (f.default, None) for f in fields(LossWeights)})
DEFAULT_WEIGHTS = LossWeights()


def generator_loss(
    d_fake: torch.Tensor,
    fake: torch.Tensor,
    real: torch.Tensor,
    weights: LossWeights = DEFAULT_WEIGHTS,
    vgg: VGGFeatures | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Generator loss and its unweighted terms.

    d_fake: (N, 1) D scores of the (not detached) fake; fake, real: (N, 3, H, W) in [-1, 1].
    Returns (total, {name: term} in LOSS_TERMS order, e.g. "gan", "l1", "feature", "tv") as 0-dim
    float32 tensors; "feature" is 0 when ``vgg`` is None or its weight is 0 (then VGG is not run at all).
    """
    inputs = LossInputs(d_fake, fake, real, fake.float(), real.float(), vgg)
    parts: dict[str, torch.Tensor] = {}
    total = None
    for term in LOSS_TERMS:
        weight = getattr(weights, term.name)
        if term.skip_at_zero and weight == 0:
            parts[term.name] = torch.zeros((), device=fake.device)
        else:
            parts[term.name] = term.fn(inputs)
        weighted = weight * parts[term.name]
        total = weighted if total is None else total + weighted
    return total, parts
