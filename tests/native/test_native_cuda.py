"""The CUDA kernels of colorizer._C (csrc/cuda/) against the float64 reference and the CPU kernels.

Marked ``gpu``: auto-skipped without a CUDA device (tests/conftest.py), and skipped when the
extension was built without CUDA (a CPU build of torch, or no nvcc at build time).
"""

import pytest
import torch

from colorizer import native
from colorizer.ops import reference
from colorizer.testing import assert_close, tolerance

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not native.NATIVE_AVAILABLE, reason=f"{native.NATIVE_UNAVAILABLE_REASON}"),
    pytest.mark.skipif(not native.NATIVE_WITH_CUDA, reason="colorizer._C was built without CUDA"),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _parity(native_fn, reference_fn, tensors: dict, dtype, kwargs: dict, name: str):
    cuda = {k: v.to("cuda", dtype).requires_grad_(True) for k, v in tensors.items()}
    oracle = {k: v.to(dtype).double().requires_grad_(True) for k, v in tensors.items()}
    out = native_fn(**cuda, **kwargs)
    ref = reference_fn(**oracle, **kwargs)
    grad = torch.randn(ref.shape, dtype=torch.float64).to(dtype)
    out.backward(grad.cuda())
    ref.backward(grad.double())
    assert out.dtype == dtype and out.device.type == "cuda"
    assert_close(out, ref, dtype=dtype, name=f"{name} forward")
    atol, rtol = tolerance(dtype)
    for key in tensors:
        scale = max(1.0, oracle[key].grad.abs().max().item())
        assert_close(cuda[key].grad, oracle[key].grad, dtype=dtype, name=f"{name} grad {key}",
                     atol=atol * scale, rtol=rtol)  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", [None, "relu", "leaky_relu"])
@pytest.mark.parametrize("shape", [(2, 64, 7, 9), (1, 96, 130, 67), (3, 32, 1, 1)], ids=str)
def test_group_norm_act_cuda(shape, act, dtype):
    n, c = shape[:2]
    tensors = {
        "x": torch.randn(shape) * 2 + 0.5,
        "weight": 1 + 0.3 * torch.randn(c),
        "bias": 0.3 * torch.randn(c),
        "residual": torch.randn(shape),
        "noise_weight": torch.randn(c),
        "noise": torch.randn(n, 1, *shape[2:]),
    }
    _parity(native.group_norm_act, reference.group_norm_act, tensors, dtype, {"act": act}, f"gn{shape}")
    plain = {k: tensors[k] for k in ("x", "weight", "bias")}
    _parity(native.group_norm_act, reference.group_norm_act, plain, dtype, {"act": act}, f"gn{shape} plain")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_noise_inject_and_weight_standardize_cuda(dtype):
    x, w, n = torch.randn(2, 64, 33, 17), torch.randn(64), torch.randn(2, 1, 33, 17)
    _parity(native.noise_inject, reference.noise_inject, {"x": x, "weight": w, "noise": n}, dtype, {}, "noise")
    wt = torch.randn(64, 30, 3, 3) * 0.02
    _parity(native.weight_standardize, reference.weight_standardize, {"w": wt}, dtype, {"eps": 1e-5}, "ws")


def test_cuda_matches_cpu_kernels_and_is_deterministic():
    x = torch.randn(2, 128, 64, 64)
    w, b, r = torch.randn(128), torch.randn(128), torch.randn(2, 128, 64, 64)
    cpu = native.group_norm_act(x, w, b, act="relu", residual=r)
    runs = [native.group_norm_act(x.cuda(), w.cuda(), b.cuda(), act="relu", residual=r.cuda()) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert_close(runs[0].cpu(), cpu.double(), dtype=torch.float32)


def test_kmeans_assign_accumulate_cuda_matches_palette_oracle():
    gen = torch.Generator().manual_seed(7)
    points = torch.randint(0, 256, (4, 3001, 3), generator=gen).float()
    centers = torch.rand(4, 9, 3, generator=gen) * 255
    ours = native.kmeans_assign_accumulate(points.cuda(), centers.cuda())
    theirs = reference.kmeans_assign_accumulate(points, centers)
    assert torch.equal(ours[0].cpu(), theirs[0])
    assert torch.equal(ours[2].cpu(), theirs[2])
    assert_close(ours[1].cpu(), theirs[1].double(), dtype=torch.float32, name="sums")
    assert_close(ours[3].cpu(), theirs[3].double(), dtype=torch.float32, name="sse")


def test_opcheck_cuda():
    x = torch.randn(2, 64, 5, 3, device="cuda", requires_grad=True)
    w = torch.randn(64, device="cuda", requires_grad=True)
    b = torch.randn(64, device="cuda", requires_grad=True)
    noise = torch.randn(2, 1, 5, 3, device="cuda")
    torch.library.opcheck(torch.ops.colorizer.group_norm_act.default, (x, w, b, 32, 1e-5, "relu", None, w, noise))
    torch.library.opcheck(torch.ops.colorizer.noise_inject.default, (x, w, noise))
    torch.library.opcheck(
        torch.ops.colorizer.weight_standardize.default, (torch.randn(8, 5, 3, 3, device="cuda"), 1e-5)
    )
    pts, ctr = torch.rand(2, 100, 3, device="cuda") * 255, torch.rand(2, 4, 3, device="cuda") * 255
    torch.library.opcheck(torch.ops.colorizer.kmeans_assign_accumulate.default, (pts, ctr))
