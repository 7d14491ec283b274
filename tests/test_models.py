import pytest
import torch
import torch.nn.functional as F

from colorizer.models import (
    AttentionGate,
    Color2Sketch,
    Discriminator,
    NoiseInjection,
    ResidualBlock,
    Sketch2Color,
    WSConv2d,
    fold_weight_standardization,
    noise_shapes,
)
from colorizer.ops import reference
from colorizer.testing import assert_close
from tests import reference_functional as rf

SMALL = (64, 64, 128, 128)


def test_weight_standardize_formula():
    w = torch.randn(7, 5, 3, 3, dtype=torch.float64)
    flat = w.reshape(7, -1)
    expected = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, unbiased=True, keepdim=True) + 1e-5)
    assert_close(reference.weight_standardize(w), expected.reshape_as(w), name="ws")


def test_wsconv_matches_plain_conv_with_standardized_weight():
    conv = WSConv2d(6, 4, 3, padding=1, bias=True).double()
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64)
    assert_close(conv(x), F.conv2d(x, rf.ws(conv.weight), conv.bias, padding=1), name="wsconv")


@pytest.mark.parametrize("ic,oc,sample", [(32, 64, "down"), (64, 64, None), (64, 32, "up")])
def test_residual_block_matches_formula(ic, oc, sample):
    blk = ResidualBlock(ic, oc, sample).double()
    for p in blk.parameters():
        p.data.normal_()
    x = torch.randn(2, ic, 8, 12, dtype=torch.float64)
    sd = {f"b.{k}": v for k, v in blk.state_dict().items()}
    assert_close(blk(x), rf.block(sd, "b", x, sample), name="block")
    shape = {"down": (4, 6), "up": (16, 24), None: (8, 12)}[sample]
    assert blk(x).shape == (2, oc, *shape)


def test_residual_block_fused_noise_equals_separate_injection():
    blk = ResidualBlock(64, 64).double()
    inj = NoiseInjection(64).double()
    inj.weight.data.normal_()
    x = torch.randn(2, 64, 8, 8, dtype=torch.float64)
    n = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    assert_close(blk(x, inj.weight, n), inj(blk(x), n), name="fused noise")


def test_identity_residual_params_are_frozen_but_kept():
    blk = ResidualBlock(64, 64)
    assert "convr.weight" in blk.state_dict() and "bnr.weight" in blk.state_dict()
    assert not blk.convr.weight.requires_grad
    assert ResidualBlock(32, 64).convr.weight.requires_grad


def test_attention_gate_matches_formula():
    gate = AttentionGate(64, 32, 32).double()
    for p in gate.parameters():
        p.data.normal_()
    g = torch.randn(3, 64, 5, 7, dtype=torch.float64)
    x = torch.randn(3, 32, 5, 7, dtype=torch.float64)
    sd = {f"a.{k}": v for k, v in gate.state_dict().items()}
    assert_close(gate(g, x), rf.att(sd, "a", g, x), name="attention")


def test_noise_injection_zero_init_and_broadcast():
    inj = NoiseInjection(4)
    assert torch.all(inj.weight == 0)
    inj.weight.data = torch.arange(4.0)
    x = torch.zeros(2, 4, 3, 3)
    n = torch.randn(2, 1, 3, 3)
    out = inj(x, n)
    for c in range(4):
        assert torch.equal(out[:, c : c + 1], c * n)


def test_reference_size_and_state_dict_names():
    g = Sketch2Color()
    n_params = sum(p.numel() for p in g.parameters())
    assert 63.0e6 < n_params < 64.0e6
    keys = set(g.state_dict())
    for key in [
        "encoder.layer1.conv1.weight",
        "encoder.layer5.convr.weight",
        "decoder.Att6.W_g.0.weight",
        "decoder.Att6.W_g.0.bias",
        "decoder.Att6.W_x.1.bias",
        "decoder.Att1.psi.0.weight",
        "decoder.noise7.weight",
        "decoder.noise0.weight",
        "decoder.layer7_up.bn2.weight",
        "decoder.layer0.weight",
        "decoder.layer0.bias",
    ]:
        assert key in keys, key
    assert g.encoder.layer1.conv1.weight.shape == (64, 30, 3, 3)
    assert Color2Sketch().encoder.layer1.conv1.weight.shape == (64, 3, 3, 3)
    d = Discriminator()
    assert d.conv1.weight_orig.shape == (64, 33, 4, 4)
    assert {"conv1.weight_u", "conv5.weight_v", "bn1.weight", "bn4.bias"} <= set(d.state_dict())


def test_initialisation_statistics():
    g = Sketch2Color()
    w = g.decoder.layer6.conv1.weight
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.001
    gn = g.decoder.layer6.bn1
    assert abs(gn.weight.mean().item() - 1.0) < 0.01 and torch.all(gn.bias == 0)


@torch.no_grad()
def test_generator_matches_functional_reference_with_same_noise():
    g = Sketch2Color(channels=SMALL).double()
    for m in g.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.normal_()
    x = torch.randn(2, 30, 128, 128, dtype=torch.float64)
    sd = g.state_dict()
    # random mode: same global-RNG draws in the same order as the reference
    torch.manual_seed(123)
    ours = g(x)
    torch.manual_seed(123)
    theirs = rf.generator(sd, x)
    assert_close(ours, theirs, name="generator random noise")
    # explicit maps
    maps = [torch.randn(s, dtype=torch.float64) for s in noise_shapes(2, 128, 128)]
    assert_close(g(x, noise=maps), rf.generator(sd, x, maps), name="generator explicit noise")


@torch.no_grad()
def test_noise_modes():
    g = Sketch2Color(channels=SMALL)
    for m in g.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(0.5)
    x = torch.randn(1, 30, 128, 256)
    assert torch.equal(g(x, noise=7), g(x, noise=7))
    assert not torch.equal(g(x, noise=7), g(x, noise=8))
    zero = g(x, noise="zero")
    maps = [torch.zeros(s) for s in noise_shapes(1, 128, 256)]
    assert_close(zero, g(x, noise=maps), name="zero noise")
    with pytest.raises(ValueError, match="noise"):
        g(x, noise="loud")
    with pytest.raises(ValueError, match="expected 8"):
        g(x, noise=maps[:3])


def test_bad_sizes_and_widths():
    g = Sketch2Color(channels=SMALL)
    with pytest.raises(ValueError, match="multiples of 128"):
        g(torch.randn(1, 30, 100, 128))
    with pytest.raises(ValueError, match=r"\(N, 30, H, W\)"):
        g(torch.randn(1, 3, 128, 128))
    with pytest.raises(ValueError, match="multiples of 64"):
        Sketch2Color(channels=(32, 64))


@torch.no_grad()
def test_folded_weight_standardization_is_equal():
    g = Sketch2Color(channels=SMALL).double().eval()
    folded = fold_weight_standardization(g)
    x = torch.randn(1, 30, 128, 128, dtype=torch.float64)
    assert_close(folded(x, noise=3), g(x, noise=3), name="folded")
    assert set(folded.state_dict()) == set(g.state_dict())


def test_discriminator_shape_and_range():
    d = Discriminator()
    out = d(torch.randn(2, 30, 128, 128), torch.randn(2, 3, 128, 128))
    assert out.shape == (2, 1) and torch.all((out > 0) & (out < 1))


def test_group_norm_groups_and_eps_are_read_from_the_modules():
    """The blocks pass each nn.GroupNorm's own num_groups and eps to the op (not a second copy)."""
    blk = ResidualBlock(64, 64).double()
    for p in blk.parameters():
        p.data.normal_()
    x = torch.randn(2, 64, 8, 8, dtype=torch.float64)
    for norm in (blk.bn1, blk.bn2, blk.bnr):
        norm.num_groups, norm.eps = 16, 0.5
    expected = F.relu(blk.bn1(blk.conv1(x)))  # nn.GroupNorm's own forward uses its num_groups and eps
    expected = F.relu(blk.bn2(blk.conv2(expected)) + x)
    assert_close(blk(x), expected, name="block with 16 groups, eps 0.5")
    d = Discriminator().double().eval()  # eval: spectral norm's power iteration stays put
    d.bn2.num_groups, d.bn2.eps = 8, 0.25
    cond, image = torch.randn(1, 30, 32, 32, dtype=torch.float64), torch.randn(1, 3, 32, 32, dtype=torch.float64)
    h = F.leaky_relu(d.bn2(d.conv2(F.leaky_relu(d.conv1(torch.cat((cond, image), 1)), 0.2))), 0.2)
    for conv, norm in ((d.conv3, d.bn3), (d.conv4, d.bn4)):
        h = F.leaky_relu(norm(conv(h)), 0.2)
    assert_close(d(cond, image), torch.sigmoid(d.conv5(h)).mean(dim=(2, 3)), name="discriminator")
