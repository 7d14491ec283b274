"""Losses against their formulas (SPEC.md, "Losses and training"), and the VGG16 feature extractor."""

import pytest
import torch
import torch.nn.functional as F

from colorizer.errors import CheckpointError
from colorizer.losses import (
    LossWeights,
    VGGFeatures,
    discriminator_loss,
    generator_loss,
    total_variation,
)
from colorizer.testing import assert_close


def _tv_by_loops(x: torch.Tensor) -> float:
    n, c, h, w = x.shape
    sh = sum(float((x[:, :, i + 1, :] - x[:, :, i, :]).pow(2).sum()) for i in range(h - 1))
    sw = sum(float((x[:, :, :, j + 1] - x[:, :, :, j]).pow(2).sum()) for j in range(w - 1))
    return 2.0 * (sh / (c * (h - 1) * w) + sw / (c * h * (w - 1))) / n


@pytest.mark.parametrize("shape", [(1, 3, 2, 2), (3, 3, 7, 5), (2, 1, 13, 4)])
def test_total_variation_formula(shape):
    x = torch.randn(shape, dtype=torch.float64)
    assert total_variation(x).item() == pytest.approx(_tv_by_loops(x), rel=1e-12)


def test_total_variation_of_constant_is_zero_and_half_precision_is_upcast():
    assert total_variation(torch.full((2, 3, 8, 8), 0.3)).item() == 0.0
    x = torch.randn(2, 3, 16, 16)
    assert total_variation(x.bfloat16()).dtype == torch.float32
    assert total_variation(x.half()).item() == pytest.approx(total_variation(x.half().float()).item(), rel=1e-6)


def test_discriminator_loss_is_lsgan_with_soft_real_label():
    d_real = torch.tensor([[0.7], [0.95], [0.2]], dtype=torch.float64)
    d_fake = torch.tensor([[0.1], [0.4], [0.0]], dtype=torch.float64)
    expected = ((d_real - 0.9) ** 2).mean() + (d_fake**2).mean()
    assert discriminator_loss(d_real, d_fake).item() == pytest.approx(expected.item(), rel=1e-6)


def _manual_vgg(vgg: VGGFeatures, x: torch.Tensor) -> torch.Tensor:
    sd = vgg.state_dict()
    y = F.relu(F.conv2d(x, sd["features.0.weight"], sd["features.0.bias"], padding=1))
    return F.relu(F.conv2d(y, sd["features.2.weight"], sd["features.2.bias"], padding=1))


def test_generator_loss_matches_formula_with_every_term():
    torch.manual_seed(1)
    vgg = VGGFeatures().double()
    for p in vgg.parameters():
        p.data.normal_(0, 0.1)
    fake = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    real = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    d_fake = torch.rand(2, 1, dtype=torch.float64)
    w = LossWeights(gan=0.5, l1=100.0, feature=1e-4, tv=1e-2)
    total, parts = generator_loss(d_fake, fake, real, w, vgg)
    gan = ((d_fake - 0.9) ** 2).mean().item()
    l1 = (fake - real).abs().mean().item()
    feature = ((_manual_vgg(vgg, fake) - _manual_vgg(vgg, real)) ** 2).mean().item()
    tv = _tv_by_loops(fake)
    assert parts["gan"].item() == pytest.approx(gan, rel=1e-6)
    assert parts["l1"].item() == pytest.approx(l1, rel=1e-6)
    assert parts["feature"].item() == pytest.approx(feature, rel=1e-5)
    assert parts["tv"].item() == pytest.approx(tv, rel=1e-6)
    assert total.item() == pytest.approx(0.5 * gan + 100 * l1 + 1e-4 * feature + 1e-2 * tv, rel=1e-6)


def test_generator_loss_default_weights_are_the_notes():
    assert LossWeights() == LossWeights(gan=1.0, l1=100.0, feature=1e-4, tv=1e-2)


def test_generator_loss_without_vgg_has_no_feature_term_and_gradient_reaches_fake_only():
    vgg = VGGFeatures()
    fake = (torch.rand(1, 3, 8, 8) * 2 - 1).requires_grad_()
    real = torch.rand(1, 3, 8, 8) * 2 - 1
    total, parts = generator_loss(torch.full((1, 1), 0.5), fake, real, LossWeights(), None)
    assert parts["feature"].item() == 0.0
    total, _ = generator_loss(torch.full((1, 1), 0.5), fake, real, LossWeights(), vgg)
    total.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()
    assert all(p.grad is None for p in vgg.parameters())  # frozen


def test_vgg_features_are_frozen_and_stay_in_eval_mode():
    vgg = VGGFeatures()
    vgg.train()
    assert not vgg.training and not any(p.requires_grad for p in vgg.parameters())
    assert vgg(torch.zeros(1, 3, 8, 8)).shape == (1, 64, 8, 8)


def test_vgg_loads_torchvision_layout_and_ignores_the_rest(tmp_path):
    torch.manual_seed(2)
    state = {
        "features.0.weight": torch.randn(64, 3, 3, 3),
        "features.0.bias": torch.randn(64),
        "features.2.weight": torch.randn(64, 64, 3, 3),
        "features.2.bias": torch.randn(64),
        "features.5.weight": torch.randn(128, 64, 3, 3),  # deeper layers of the full vgg16
        "classifier.0.weight": torch.randn(8, 4),
    }
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    vgg = VGGFeatures.from_file(str(path))
    x = torch.rand(2, 3, 12, 12) * 2 - 1
    assert_close(vgg(x), _manual_vgg(vgg, x), name="vgg")
    assert torch.equal(vgg.state_dict()["features.2.weight"], state["features.2.weight"])

    from safetensors.torch import save_file

    st = tmp_path / "vgg16.safetensors"
    save_file({k: v for k, v in state.items() if k.startswith("features.0") or k.startswith("features.2")}, str(st))
    assert torch.equal(VGGFeatures.from_file(str(st)).state_dict()["features.0.bias"], state["features.0.bias"])


def test_vgg_bad_files_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        VGGFeatures.from_file(str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, wrong)
    with pytest.raises(CheckpointError, match="vgg16 layout: missing features.0.weight"):
        VGGFeatures.from_file(str(wrong))
    shape = tmp_path / "shape.pth"
    torch.save(
        {
            "features.0.weight": torch.zeros(32, 3, 3, 3),
            "features.0.bias": torch.zeros(32),
            "features.2.weight": torch.zeros(64, 64, 3, 3),
            "features.2.bias": torch.zeros(64),
        },
        shape,
    )
    with pytest.raises(CheckpointError, match="features.0.weight has shape"):
        VGGFeatures.from_file(str(shape))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read VGG16 weights"):
        VGGFeatures.from_file(str(junk))


def test_every_place_a_loss_term_appears_matches_the_one_table():
    """LOSS_TERMS is the one declaration: LossWeights and the w_* options (written out) match it (names,
    order, defaults, help); generator_loss's dict, the flags, checks and the train_log.csv columns
    follow it, in its order."""
    import dataclasses

    from colorizer.errors import ConfigError
    from colorizer.losses import LOSS_NAMES, LOSS_TERMS
    from colorizer.train.config import TrainConfig, build_parser, fields
    from colorizer.train.visuals import LOG_FIELDS

    assert LOSS_NAMES == ("gan", "l1", "feature", "tv")  # the columns of committed train logs
    assert tuple(f.name for f in dataclasses.fields(LossWeights)) == LOSS_NAMES
    assert LOG_FIELDS[:4] == ("step", "epoch", "loss_d", "loss_g") and LOG_FIELDS[4:8] == LOSS_NAMES
    assert [f.name for f in fields() if f.name.startswith("w_")] == [t.config_field for t in LOSS_TERMS]
    by_name = {f.name: f for f in fields()}
    for term in LOSS_TERMS:
        assert by_name[term.config_field].default == term.default
        assert by_name[term.config_field].metadata["help"] == term.help
        assert {f.name: f.default for f in dataclasses.fields(LossWeights)}[term.name] == term.default
    config = TrainConfig()
    assert LossWeights(**{t.name: getattr(config, t.config_field) for t in LOSS_TERMS}) == LossWeights()
    _, parts = generator_loss(torch.full((1, 1), 0.5), torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4))
    assert tuple(parts) == LOSS_NAMES
    assert build_parser().parse_args(["--w-tv", "0.5"]).w_tv == "0.5"
    for term in LOSS_TERMS:
        with pytest.raises(ConfigError, match=f"^{term.config_field}: must be a finite number >= 0"):
            TrainConfig(data="synthetic", **{term.config_field: -1.0}).validate()


def test_a_costly_term_at_weight_zero_is_not_computed():
    calls = []

    class CountingVGG(VGGFeatures):
        def forward(self, x):
            calls.append(x.shape)
            return super().forward(x)

    fake, real = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    _, parts = generator_loss(torch.full((1, 1), 0.5), fake, real, LossWeights(feature=0.0), CountingVGG())
    assert parts["feature"].item() == 0.0 and calls == []
    generator_loss(torch.full((1, 1), 0.5), fake, real, LossWeights(), CountingVGG())
    assert len(calls) == 2  # the fake and the real image


def test_a_new_loss_term_forgotten_in_one_place_fails_naming_it(monkeypatch):
    """A toy term added to LOSS_TERMS: the field-by-field places (LossWeights, TrainConfig's w_*) fail
    their import-time check naming themselves; everything derived (generator_loss, the CSV columns,
    the checks of the options) picks the term up once the fields exist."""
    import dataclasses

    from colorizer import losses
    from colorizer.train import config as train_config

    toy = losses.LossTerm("toy", 0.5, "weight of a toy term", lambda x: x.fake32.abs().mean())
    monkeypatch.setattr(losses, "LOSS_TERMS", (*losses.LOSS_TERMS, toy))
    weights = {f.name: (f.default, None) for f in dataclasses.fields(LossWeights)}
    with pytest.raises(TypeError, match=r"^LossWeights: .*missing toy"):
        losses.check_loss_fields("LossWeights", weights)
    w_fields = {f.name: (f.default, f.metadata["help"]) for f in train_config.fields() if f.name.startswith("w_")}
    with pytest.raises(TypeError, match=r"^TrainConfig: .*missing w_toy"):
        losses.check_loss_fields("TrainConfig", w_fields, prefix="w_")
    with pytest.raises(TypeError, match=r"^TrainConfig: w_l1 defaults to 10.0"):
        losses.check_loss_fields("TrainConfig", {**w_fields, "w_l1": (10.0, None), "w_toy": (0.5, None)}, "w_")
    with pytest.raises(TypeError, match="TrainConfig: w_tv_typo has no row"):
        train_config._loss_weight("tv_typo")

    # With the field added, the rest follows the table: the loss computes and reports the term.
    toy_weights = dataclasses.make_dataclass("ToyWeights", [("toy", float, 0.5)], bases=(LossWeights,), frozen=True)
    losses.check_loss_fields("ToyWeights", {f.name: (f.default, None) for f in dataclasses.fields(toy_weights)})
    fake, real = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    total, parts = generator_loss(torch.full((1, 1), 0.9), fake, real, toy_weights(), None)
    assert tuple(parts) == ("gan", "l1", "feature", "tv", "toy") and parts["toy"].item() == 0.0
    assert_close(total, 100.0 * parts["l1"] + 1e-2 * parts["tv"])


def test_the_feature_term_takes_a_bf16_fake_with_float32_vgg_weights():
    """Mixed precision: G's bf16 output meets the float32 VGG outside autocast (it raised before)."""
    torch.manual_seed(0)
    vgg = VGGFeatures()
    fake, real = torch.rand(1, 3, 8, 8) * 2 - 1, torch.rand(1, 3, 8, 8) * 2 - 1
    _, parts16 = generator_loss(torch.full((1, 1), 0.5), fake.bfloat16(), real, LossWeights(), vgg)
    _, parts32 = generator_loss(torch.full((1, 1), 0.5), fake.bfloat16().float(), real, LossWeights(), vgg)
    assert parts16["feature"].dtype == torch.float32
    assert_close(parts16["feature"], parts32["feature"])
