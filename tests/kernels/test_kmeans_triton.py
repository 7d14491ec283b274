"""colorizer.kernels.kmeans (Triton) against the pure-torch oracle colorizer.ops.reference.kmeans_assign_accumulate.

Runs in Triton's interpreter on the CPU (tests/conftest.py sets TRITON_INTERPRET=1 without CUDA), so
shapes are small; the ``gpu`` cases use real sizes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.palette_cv2 import extract_palette_cv2
from colorizer import palette as pal
from colorizer.palette import clustering

pytest.importorskip("triton")
kmeans_kernel = pytest.importorskip("colorizer.kernels.kmeans")

pytestmark = pytest.mark.triton


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_against_oracle(points, centers, labels, sums, counts, sse, weights=None):
    """Labels equal to the oracle's except at float near-ties; sums/counts/SSE then match."""
    o_labels, o_sums, o_counts, o_sse = pal.assign_accumulate(points.float(), centers)
    repeat = centers.shape[0] // points.shape[0]
    x = points.double().repeat_interleave(repeat, dim=0)
    d = torch.stack([(x - centers[:, j, None, :].double()).square().sum(-1) for j in range(centers.shape[1])], -1)
    chosen = d.gather(-1, labels.long()[..., None]).squeeze(-1)
    assert torch.all(chosen - d.min(-1).values <= 1e-3 * (1 + d.min(-1).values)), "a label is not a nearest center"
    mismatch = (labels.long() != o_labels).float().mean().item()
    assert mismatch <= 1e-3, f"{mismatch:.2%} of labels differ from the oracle"
    w = torch.ones_like(x[..., 0]) if weights is None else weights.double().repeat_interleave(repeat, dim=0)
    onehot = torch.nn.functional.one_hot(labels.long(), centers.shape[1]).double() * w[..., None]
    torch.testing.assert_close(sums.double(), onehot.transpose(1, 2) @ x, rtol=1e-5, atol=1e-2)
    torch.testing.assert_close(counts.double(), onehot.sum(1), rtol=0, atol=1e-6)
    exp_sse = (chosen * w).sum(-1)
    torch.testing.assert_close(sse.double(), exp_sse, rtol=1e-5, atol=1e-2)
    if weights is None and mismatch == 0:
        torch.testing.assert_close(sums, o_sums, rtol=1e-6, atol=1e-3)
        torch.testing.assert_close(counts, o_counts)
        torch.testing.assert_close(sse, o_sse, rtol=1e-6, atol=1e-2)


@pytest.mark.parametrize(
    "bp,repeat,p,k,block_p",
    [
        (1, 1, 97, 9, 32),  # odd P over several chunks, B = 1
        (3, 1, 131, 9, 64),  # B = 3
        (2, 3, 45, 9, None),  # restarts sharing their image's points (B = 6 center rows)
        (1, 1, 7, 16, 8),  # K a power of two, P < K
        (1, 2, 19, 1, 16),  # K = 1
    ],
)
def test_kernel_matches_oracle(bp, repeat, p, k, block_p):
    gen = torch.Generator().manual_seed(p * 10 + k)
    points = (torch.rand(bp, p, 3, generator=gen) * 255).to(_device())
    centers = (torch.rand(bp * repeat, k, 3, generator=gen) * 255).to(_device())
    out = kmeans_kernel.kmeans_assign_accumulate(points, centers, block_p=block_p)
    assert out[0].shape == (bp * repeat, p) and out[0].dtype == torch.int32
    assert out[1].shape == (bp * repeat, k, 3) and out[2].shape == (bp * repeat, k) and out[3].shape == (bp * repeat,)
    _check_against_oracle(points.cpu(), centers.cpu(), *(t.cpu() for t in out))


def test_kernel_uint8_points_weights_and_no_labels():
    gen = torch.Generator().manual_seed(5)
    points = torch.randint(0, 256, (2, 61, 3), generator=gen, dtype=torch.uint8).to(_device())
    centers = (torch.rand(4, 9, 3, generator=gen) * 255).to(_device())
    weights = torch.randint(0, 5, (2, 61), generator=gen).float().to(_device())
    labels, sums, counts, sse = kmeans_kernel.kmeans_assign_accumulate(points, centers, block_p=16, weights=weights)
    _check_against_oracle(points.cpu(), centers.cpu(), labels.cpu(), sums.cpu(), counts.cpu(), sse.cpu(), weights.cpu())
    none, sums2, counts2, sse2 = kmeans_kernel.kmeans_assign_accumulate(
        points, centers, with_labels=False, block_p=16, weights=weights
    )
    assert none is None
    assert torch.equal(sums, sums2) and torch.equal(counts, counts2) and torch.equal(sse, sse2)


def test_kernel_is_deterministic():
    gen = torch.Generator().manual_seed(9)
    points = (torch.rand(1, 300, 3, generator=gen) * 255).to(_device())
    centers = (torch.rand(2, 9, 3, generator=gen) * 255).to(_device())
    a = kmeans_kernel.kmeans_assign_accumulate(points, centers, block_p=64)
    b = kmeans_kernel.kmeans_assign_accumulate(points, centers, block_p=64)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_seeding_kernels_match_torch():
    gen = torch.Generator().manual_seed(11)
    points = torch.randint(0, 256, (2, 53, 3), generator=gen, dtype=torch.uint8).to(_device())
    dist = (torch.rand(6, 53, generator=gen) * 5000).to(_device())
    cand = torch.randint(0, 256, (6, 4, 3), generator=gen).float().to(_device())
    weights = torch.randint(0, 4, (2, 53), generator=gen).float().to(_device())
    x = points.float().repeat_interleave(3, dim=0)
    w = weights.repeat_interleave(3, dim=0)
    d_cand = (x[:, None] - cand[:, :, None]).square().sum(-1)
    expected = (torch.minimum(d_cand, dist[:, None]) * w[:, None]).double().sum(-1)
    got = kmeans_kernel.kmeanspp_potentials(points, dist, cand, weights, block_p=16)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-2)
    updated = kmeans_kernel.kmeanspp_update(points, dist.clone(), cand[:, 1], block_p=16)
    torch.testing.assert_close(updated, torch.minimum(dist, d_cand[:, 1]), rtol=0, atol=0)


def test_seeding_with_kernels_equals_torch_seeding():
    """Integer pixels: every distance and potential is exact either way, so the same draws."""
    gen = torch.Generator().manual_seed(4)
    points = torch.randint(0, 256, (2, 40, 3), generator=gen).float().to(_device())
    colors, weights = pal.dedup_colors(points)
    x_aug = clustering._augment(colors)
    kernels = (kmeans_kernel.kmeanspp_potentials, kmeans_kernel.kmeanspp_update, colors.to(torch.uint8), weights)
    g1 = torch.Generator(device=_device()).manual_seed(0)
    g2 = torch.Generator(device=_device()).manual_seed(0)
    a, pa = clustering._seed_kmeanspp(colors, x_aug, weights, 3, 9, 4, g1)
    b, pb = clustering._seed_kmeanspp(colors, x_aug, weights, 3, 9, 4, g2, kernels=kernels)
    assert torch.equal(a, b)
    torch.testing.assert_close(pa, pb)


def test_kernel_rejects_bad_shapes():
    with pytest.raises(ValueError):
        kmeans_kernel.kmeans_assign_accumulate(torch.zeros(2, 5, 3), torch.zeros(3, 9, 3))
    with pytest.raises(ValueError):
        kmeans_kernel.kmeans_assign_accumulate(torch.zeros(2, 5, 4), torch.zeros(2, 9, 3))


def test_extract_palette_triton_matches_eager_quality():
    """End to end with kernels='triton' (interpreter on the CPU): same seeding, same Lloyd, so the same
    compactness as kernels='eager' up to float near-ties."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)
    imgs[1, :, :16] = [200, 30, 30]
    imgs = torch.from_numpy(imgs).to(_device())
    tri = pal.extract_palette(imgs, kernels="triton", restarts=2, iters=4)
    assert tri.shape == (2, 9, 3) and tri.dtype == torch.uint8 and tri.device.type == _device()
    points, _ = pal.image_pixels(imgs, downscale=True)
    ref = pal.extract_palette(imgs, kernels="eager", restarts=2, iters=4)  # same RNG, eager step
    c_tri = pal.compactness(points, tri.float())
    c_ref = pal.compactness(points, ref.float())
    torch.testing.assert_close(c_tri, c_ref, rtol=1e-3, atol=1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("n,restarts,size", [(8, 10, 256), (3, 10, 512)])
def test_kernel_real_sizes_on_gpu(n, restarts, size):
    gen = torch.Generator(device="cuda").manual_seed(0)
    p = (size // 4) ** 2
    points = torch.randint(0, 256, (n, p, 3), device="cuda", generator=gen, dtype=torch.uint8)
    centers = torch.rand(n * restarts, 9, 3, device="cuda", generator=gen) * 255
    out = kmeans_kernel.kmeans_assign_accumulate(points, centers)
    _check_against_oracle(points.cpu(), centers.cpu(), *(t.cpu() for t in out))


@pytest.mark.gpu
def test_extract_palette_on_gpu_matches_cv2_quality():
    cv2 = pytest.importorskip("cv2")
    skdata = pytest.importorskip("skimage.data")
    rng = np.random.default_rng(1)
    photos = [getattr(skdata, n)()[..., :3] for n in ("astronaut", "coffee", "chelsea", "rocket")]
    imgs = []
    for i in range(64):
        ph = photos[i % len(photos)]
        y, x = rng.integers(0, ph.shape[0] - 256), rng.integers(0, ph.shape[1] - 256)
        imgs.append(ph[y : y + 256, x : x + 256])
    batch = np.stack(imgs)
    ours = pal.extract_palette(torch.from_numpy(batch).cuda(), kernels="auto")
    assert ours.is_cuda
    ref = extract_palette_cv2(batch)
    points, _ = pal.image_pixels(batch, downscale=True)
    r = (pal.compactness(points, ours.cpu().float()) / pal.compactness(points, ref.float())).numpy()
    assert np.median(r) <= 1.0 and np.percentile(r, 95) <= 1.01 and r.max() <= 1.035, r
    del cv2
