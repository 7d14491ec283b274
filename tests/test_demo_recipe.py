"""The trainer options the demo recipe uses: lr_g_norm, warmup_steps, lr_schedule, and w_gan = 0."""

import math

import pytest
import torch

from colorizer.errors import run_cli
from colorizer.train import Trainer, resolve_config
from colorizer.train.__main__ import main
from tests.test_train_support import FixedDataset, synthetic_tensors, tiny_config


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr-schedule", "step"], "lr_schedule: must be one of constant, cosine"),
        (["--warmup-steps", "-1"], "warmup_steps: must be >= 0"),
        (["--lr-g-norm", "0"], "lr_g_norm: must be a positive finite number"),
        (["--lr-g-norm", "inf"], "lr_g_norm: must be a positive finite number"),
    ],
)
def test_bad_recipe_values_give_one_line_errors(argv, message, capsys):
    assert run_cli(main, ["--preset", "tiny", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_new_fields_enter_the_run_identity_only_when_set():
    # A run started before these options existed hashed a config without them: at their defaults they
    # stay out of the identity, so that run resumes without a config-mismatch warning.
    plain, _ = resolve_config(["--preset", "tiny"])
    assert not {"lr_g_norm", "lr_schedule", "warmup_steps"} & set(plain.identity())
    tuned, _ = resolve_config(["--preset", "tiny", "--lr-schedule", "cosine", "--warmup-steps", "5"])
    assert tuned.identity()["lr_schedule"] == "cosine" and tuned.identity()["warmup_steps"] == 5


def test_warmup_then_cosine_sets_every_group_each_step(tmp_path):
    config = tiny_config(
        tmp_path / "run",
        lr_g=1e-3,
        lr_g_norm=1e-2,
        lr_d=4e-4,
        warmup_steps=2,
        lr_schedule="cosine",
        epochs=2,
        max_steps=6,
    )
    trainer = Trainer(config, dataset=FixedDataset(*synthetic_tensors(8, 128)))
    vectors, weights = trainer.opt_g.param_groups[1]["params"], trainer.opt_g.param_groups[0]["params"]
    assert all(p.dim() <= 1 for p in vectors) and all(p.dim() == 4 for p in weights)
    assert len(vectors) + len(weights) == len(trainer.g_trainable)
    trainer.fit()
    assert trainer.progress.step == 6
    # factors: warmup 1/2, 2/2, then cosine over the 4 remaining steps: 1, cos^2 steps ..., last step > 0
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert [trainer.lr_factor(s) for s in range(6)] == pytest.approx(expected)
    last = expected[-1]
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * last)
    assert trainer.opt_g.param_groups[1]["lr"] == pytest.approx(1e-2 * last)
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(4e-4 * last)


def test_constant_schedule_keeps_one_group_and_the_configured_rate(tmp_path):
    trainer = Trainer(
        tiny_config(tmp_path / "run", lr_g=3e-4, max_steps=2), dataset=FixedDataset(*synthetic_tensors(8, 128))
    )
    assert len(trainer.opt_g.param_groups) == 1  # the optimizer state of older runs still loads
    trainer.fit()
    assert [trainer.lr_factor(s) for s in range(3)] == [1.0, 1.0, 1.0]
    assert trainer.opt_g.param_groups[0]["lr"] == 3e-4


def test_without_the_gan_term_the_discriminator_is_not_trained(tmp_path):
    trainer = Trainer(
        tiny_config(tmp_path / "run", w_gan=0.0, max_steps=3), dataset=FixedDataset(*synthetic_tensors(8, 128))
    )
    d_before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    g_before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    trainer.fit()
    assert all(torch.equal(v, trainer.D.state_dict()[k]) for k, v in d_before.items())
    assert any(not torch.equal(v, trainer.G.state_dict()[k]) for k, v in g_before.items())
    rows = trainer.csv.rows()
    assert rows and all(math.isnan(float(r["loss_d"])) and math.isnan(float(r["gan"])) for r in rows)
    assert all(math.isfinite(float(r["l1"])) and float(r["loss_g"]) > 0 for r in rows)
    assert trainer.progress.bad_total == 0
