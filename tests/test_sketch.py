"""XDoG line extraction and the Color2Sketch wrapper (colorizer.sketch)."""

import numpy as np
import pytest
import torch

from colorizer.errors import CheckpointError
from colorizer.models import Color2Sketch, Sketch2Color
from colorizer.sketch import XDOG_DEFAULTS, SketchModel, gaussian_blur, gaussian_kernel1d, to_gray, xdog

SMALL = (64, 64, 64, 64)


def _square_image(size=64, lo=16, hi=48, inside=(-0.6, 0.2, 0.8), outside=(0.9, 0.9, 0.7)):
    img = torch.empty(3, size, size)
    img[:] = torch.tensor(outside).view(3, 1, 1)
    img[:, lo:hi, lo:hi] = torch.tensor(inside).view(3, 1, 1)
    return img


def test_gaussian_kernel_is_normalised_and_blur_keeps_constants():
    for sigma in (0.3, 0.6, 1.2, 4.0):
        k = gaussian_kernel1d(sigma, torch.float64)
        assert abs(k.sum().item() - 1.0) < 1e-12 and k.numel() % 2 == 1
        torch.testing.assert_close(k, k.flip(0))
    x = torch.full((2, 1, 5, 9), 0.37)
    torch.testing.assert_close(gaussian_blur(x, 1.5), x)  # also on sides shorter than the radius
    with pytest.raises(ValueError):
        gaussian_kernel1d(0.0)


def test_xdog_shape_range_dtype():
    x = torch.rand(3, 3, 40, 56) * 2 - 1
    out = xdog(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    torch.testing.assert_close(out[:, 0], out[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 0], out[:, 2], rtol=0, atol=0)
    single = xdog(x[1])
    assert single.shape == (3, 40, 56)
    # float32 convolutions may block a batch differently; phi * (1 + p) amplifies that rounding.
    torch.testing.assert_close(single, out[1], rtol=0, atol=2e-3)
    assert xdog(x.double()).dtype == torch.float64
    assert xdog(x.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError):
        xdog(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError):
        xdog(x, k=1.0)


def test_xdog_batch_equals_images_one_by_one():
    x = torch.rand(4, 3, 33, 47) * 2 - 1
    batch = xdog(x)
    for i in range(4):
        torch.testing.assert_close(batch[i], xdog(x[i : i + 1])[0], rtol=0, atol=2e-3)
    torch.testing.assert_close(xdog(x.double())[2], xdog(x[2:3].double())[0], rtol=0, atol=1e-9)


def test_xdog_flat_images_are_white_paper():
    for value in (-1.0, -0.3, 0.0, 0.5, 1.0):
        assert torch.all(xdog(torch.full((1, 3, 24, 24), value)) == 1.0)


def test_xdog_lines_land_on_edges():
    img = _square_image()
    out = xdog(img)[0]
    dark = out < 0.0
    ys, xs = torch.nonzero(dark, as_tuple=True)
    assert len(ys) > 0
    # Distance of every dark pixel to the square's border (rows/cols 16 and 47/48).
    dist = torch.minimum(
        torch.minimum((ys - 16).abs(), (ys - 47).abs()).where((xs >= 13) & (xs <= 50), torch.tensor(99)),
        torch.minimum((xs - 16).abs(), (xs - 47).abs()).where((ys >= 13) & (ys <= 50), torch.tensor(99)),
    )
    assert dist.max() <= 3, f"dark pixels {dist.max().item()} px away from the edge"
    # Every side of the square is drawn, along most of its length.
    for side in (dark[14:19, 20:44], dark[45:50, 20:44], dark[20:44, 14:19].T, dark[20:44, 45:50].T):
        assert side.any(dim=0).float().mean() > 0.9
    # Far from edges it is paper.
    assert torch.all(out[24:40, 24:40] == 1.0) and torch.all(out[:8] == 1.0)


def test_xdog_parameters_matter():
    img = _square_image()
    thin = (xdog(img, sigma=0.4) < 0).sum()
    thick = (xdog(img, sigma=1.2) < 0).sum()
    assert thick > thin
    assert (xdog(img, p=2.0) < 0).sum() < (xdog(img) < 0).sum()
    assert set(XDOG_DEFAULTS) == {"sigma", "k", "p", "epsilon", "phi"}


def _save_color2sketch(path, wrap="netG", prefix="", net=None):
    if net is None:
        net = Color2Sketch(channels=SMALL)
        for p in net.parameters():  # non-trivial weights, including the noise scales
            p.data.normal_(0, 0.2 if p.dim() > 1 else 0.05).add_(1.0 if p.dim() == 1 else 0.0)
    state = {prefix + k: v for k, v in net.state_dict().items()}
    torch.save({wrap: state, "netD": {}} if wrap else state, path)
    return net


def test_sketch_model_matches_generator_gray(tmp_path):
    net = _save_color2sketch(tmp_path / "c2s.pth")
    model = SketchModel(tmp_path / "c2s.pth", device="cpu")
    assert model.channels == [64] * 7
    x = torch.rand(3, 128, 128) * 2 - 1
    out = model(x)[None]
    assert out.shape == (1, 3, 128, 128) and out.dtype == torch.float32
    net.eval()
    with torch.no_grad():
        expected = to_gray(net(x[None], noise="zero")).clamp(-1, 1).expand(-1, 3, -1, -1)
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    assert out.min() >= -1 and out.max() <= 1


def test_sketch_model_plain_and_prefixed_state_dicts_and_odd_sizes(tmp_path):
    net = _save_color2sketch(tmp_path / "plain.pth", wrap=None)
    _save_color2sketch(tmp_path / "ddp.pth", wrap=None, prefix="module.", net=net)
    plain = SketchModel(tmp_path / "plain.pth")
    ddp = SketchModel(tmp_path / "ddp.pth")
    for a, b in zip(plain.net.state_dict().values(), ddp.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    seeded = SketchModel(tmp_path / "plain.pth", noise=3)
    x = torch.rand(1, 3, 100, 90) * 2 - 1  # padded to 128 x 128 inside, cropped back
    a = seeded(x)
    assert a.shape == (1, 3, 100, 90) and torch.isfinite(a).all()


def test_sketch_model_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        SketchModel(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        SketchModel(tmp_path / "junk.pth")
    torch.save({"netG": Sketch2Color(channels=SMALL).state_dict()}, tmp_path / "s2c.pth")
    with pytest.raises(CheckpointError, match="3 input channels"):
        SketchModel(tmp_path / "s2c.pth")
    net = Color2Sketch(channels=SMALL)
    state = net.state_dict()
    state.pop("decoder.layer0.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "keys.pth")
    with pytest.raises(CheckpointError, match="missing keys.*unexpected keys"):
        SketchModel(tmp_path / "keys.pth")
    torch.save({"netG": {"a": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a generator"):
        SketchModel(tmp_path / "other.pth")


def test_sketch_model_never_unpickles_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"netG": Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError):
        SketchModel(tmp_path / "evil.pth")


def test_xdog_on_synthetic_drawing_traces_its_outlines():
    from colorizer.data import render_drawing, to_tensor

    color, lines = render_drawing(0, 1)
    out = xdog(to_tensor(color))[0].numpy()
    outline = lines < 64
    # Most drawn outlines are found by XDoG (within a pixel); it also adds shade borders.
    near = np.zeros_like(outline)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= np.roll(np.roll(out < 0, dy, 0), dx, 1)
    assert (near & outline).sum() / outline.sum() > 0.9


@pytest.mark.gpu
def test_xdog_and_sketch_model_on_cuda_match_cpu(tmp_path, monkeypatch):
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    # The blur runs in float32 on both; phi * (1 + p) amplifies reduction-order differences.
    torch.testing.assert_close(xdog(x.cuda()).cpu(), xdog(x), rtol=0, atol=5e-3)
    assert xdog(x.cuda().half()).dtype == torch.float16
    _save_color2sketch(tmp_path / "c2s.pth")
    on_gpu = SketchModel(tmp_path / "c2s.pth", device="cuda")
    out = on_gpu(x)  # a CPU batch is moved to the model's device
    assert out.device.type == "cuda" and out.shape == (2, 3, 128, 128)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare like with like
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.testing.assert_close(on_gpu(x).cpu(), SketchModel(tmp_path / "c2s.pth")(x), rtol=1e-3, atol=1e-3)
