"""Parity of the native CPU ops (colorizer._C) with the pure-torch reference, forward and gradients.

Oracle: colorizer.ops.reference run in float64 on the same input values (bfloat16 inputs upcast
exactly), the same grad_output for both; tolerances from colorizer.testing by the native dtype.
"""

import pytest
import torch

from colorizer import native
from colorizer.ops import reference
from colorizer.testing import assert_close, tolerance

pytestmark = pytest.mark.skipif(not native.NATIVE_AVAILABLE, reason=f"{native.NATIVE_UNAVAILABLE_REASON}")

# (N, C, *spatial), groups: ones, primes, non-powers of two, a 1-D and a wide spatial case that runs
# the vector loops and their scalar tails.
GN_SHAPES = [
    ((2, 32, 1, 1), 32),
    ((2, 64, 7, 9), 32),
    ((3, 96, 13, 1), 32),
    ((1, 64, 19, 23), 32),
    ((2, 30, 5, 5), 5),
    ((2, 64, 31), 32),
]
EPILOGUES = ["plain", "residual", "residual+noise", "noise"]
ACTS = [None, "relu", "leaky_relu"]
DTYPES = [torch.float32, torch.bfloat16]


def _run(fn, tensors: dict, grad_out: torch.Tensor, kwargs: dict):
    """fn(**tensors, **kwargs) and the gradients of sum(out * grad_out) w.r.t. every tensor."""
    leaves = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in tensors.items()}
    out = fn(**leaves, **kwargs)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), {k: v.grad for k, v in leaves.items() if v.requires_grad}


def _check_parity(native_fn, reference_fn, tensors: dict, dtype: torch.dtype, kwargs: dict, name: str):
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    with torch.no_grad():
        grad_out = torch.randn(native_fn(**tensors, **kwargs).shape).to(dtype)
    out, grads = _run(native_fn, tensors, grad_out, kwargs)
    ref_out, ref_grads = _run(reference_fn, {k: v.double() for k, v in tensors.items()}, grad_out.double(), kwargs)
    assert out.dtype == dtype
    assert_close(out, ref_out, dtype=dtype, name=f"{name} forward")
    for key, ref_grad in ref_grads.items():
        assert grads[key] is not None, f"{name}: no gradient for {key}"
        assert grads[key].dtype == tensors[key].dtype
        # Parameter gradients are sums over N * spatial elements: scale atol by their magnitude.
        scale = max(1.0, ref_grad.abs().max().item())
        atol, rtol = tolerance(dtype)
        assert_close(grads[key], ref_grad, dtype=dtype, name=f"{name} grad {key}", atol=atol * scale, rtol=rtol)


def _gn_inputs(shape, epilogue):
    n, c = shape[0], shape[1]
    t = {"x": torch.randn(shape) * 2 + 0.5, "weight": 1 + 0.3 * torch.randn(c), "bias": 0.3 * torch.randn(c)}
    if "residual" in epilogue:
        t["residual"] = torch.randn(shape)
    if "noise" in epilogue:
        t["noise_weight"] = torch.randn(c)
        t["noise"] = torch.randn(n, 1, *shape[2:])
    return t


# The reference's noise injection is defined for 4-D (N, C, H, W) tensors only.
GN_CASES = [
    pytest.param(shape, groups, epilogue, id=f"{shape}-g{groups}-{epilogue}")
    for shape, groups in GN_SHAPES
    for epilogue in EPILOGUES
    if len(shape) == 4 or "noise" not in epilogue
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape,groups,epilogue", GN_CASES)
def test_group_norm_act_matches_reference(shape, groups, epilogue, act, dtype):
    tensors = _gn_inputs(shape, epilogue)
    _check_parity(
        native.group_norm_act,
        reference.group_norm_act,
        tensors,
        dtype,
        {"groups": groups, "eps": 1e-5, "act": act},
        f"group_norm_act{shape} {epilogue} {act}",
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,groups", [((2, 64, 11, 13), 32), ((1, 30, 23, 19), 5)], ids=str)
def test_group_norm_act_channels_last(shape, groups, dtype):
    """The channels_last forward kernel (vectors along C, channel tails, several position blocks)."""
    tensors = _gn_inputs(shape, "residual+noise")
    for key in ("x", "residual"):
        tensors[key] = tensors[key].contiguous(memory_format=torch.channels_last)
    kwargs = {"groups": groups, "eps": 1e-5, "act": "relu"}
    x_cl = tensors["x"].to(dtype)
    out = native.group_norm_act(
        x_cl,
        tensors["weight"],
        tensors["bias"],
        residual=tensors["residual"].to(dtype),
        noise_weight=tensors["noise_weight"],
        noise=tensors["noise"],
        **kwargs,
    )
    assert out.is_contiguous(memory_format=torch.channels_last)
    _check_parity(native.group_norm_act, reference.group_norm_act, tensors, dtype, kwargs, "channels_last")


def test_group_norm_act_mixed_parameter_dtype():
    """bfloat16 activations with float32 parameters (autocast-style): parameter grads stay float32."""
    x = torch.randn(2, 64, 6, 7).bfloat16()
    w, b = torch.randn(64, requires_grad=True), torch.randn(64, requires_grad=True)
    out = native.group_norm_act(x, w, b, act="relu")
    assert out.dtype == torch.bfloat16
    assert_close(out, reference.group_norm_act(x.double(), w.double(), b.double(), act="relu"), dtype=torch.bfloat16)
    out.float().sum().backward()
    assert w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (1, 64, 33, 17), (3, 5, 1, 11)], ids=str)
def test_noise_inject_matches_reference(shape, dtype):
    tensors = {"x": torch.randn(shape), "weight": torch.randn(shape[1]), "noise": torch.randn(shape[0], 1, *shape[2:])}
    _check_parity(native.noise_inject, reference.noise_inject, tensors, dtype, {}, f"noise_inject{shape}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels", [8, 37])
def test_noise_inject_broadcast_batch_and_channels_last(channels, dtype):
    x = torch.randn(3, channels, 5, 6).to(dtype).contiguous(memory_format=torch.channels_last)
    w, noise = torch.randn(channels), torch.randn(1, 1, 5, 6)
    out = native.noise_inject(x, w, noise)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == dtype
    assert_close(out, reference.noise_inject(x.double(), w.double(), noise.double()), dtype=dtype)
    tensors = {"x": x, "weight": w, "noise": noise.expand(3, 1, 5, 6).contiguous()}
    _check_parity(native.noise_inject, reference.noise_inject, tensors, dtype, {}, "noise_inject channels_last")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 2, 1, 1), (7, 5, 3, 3), (64, 30, 3, 3), (3, 257), (2, 4, 1, 1)], ids=str)
def test_weight_standardize_matches_reference(shape, dtype):
    tensors = {"w": torch.randn(shape) * 0.02 + 0.01}
    _check_parity(native.weight_standardize, reference.weight_standardize, tensors, dtype, {"eps": 1e-5}, "ws")


def test_weight_standardize_fan_in_one_is_nan_like_reference():
    w = torch.randn(4, 1, 1, 1)
    assert torch.isnan(native.weight_standardize(w)).all()
    assert torch.isnan(reference.weight_standardize(w)).all()


def test_float64_and_unsupported_calls_fall_back_to_reference():
    x = torch.randn(2, 64, 5, 5, dtype=torch.float64)
    w, b = torch.randn(64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    assert torch.equal(native.group_norm_act(x, w, b, act="relu"), reference.group_norm_act(x, w, b, act="relu"))
    # A residual of another dtype promotes in the reference; the native path must not truncate it.
    xf = x.float()
    out = native.group_norm_act(xf, w.float(), b.float(), residual=x)
    assert out.dtype == torch.float64
    with pytest.raises(ValueError, match="unknown activation"):
        native.group_norm_act(xf, w.float(), b.float(), act="gelu")


def test_bad_arguments_raise_clear_errors():
    x = torch.randn(2, 64, 4, 4)
    w = torch.randn(64)
    with pytest.raises(RuntimeError, match="not divisible by groups"):
        torch.ops.colorizer.group_norm_act(x, w, w, 7, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="weight and bias must be"):
        torch.ops.colorizer.group_norm_act(x, w[:10], w, 32, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="unknown act"):
        torch.ops.colorizer.group_norm_act(x, w, w, 32, 1e-5, "gelu")
    with pytest.raises(RuntimeError, match="float32 and bfloat16"):
        torch.ops.colorizer.group_norm_act(x.half(), w, w, 32, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="noise must be"):
        torch.ops.colorizer.noise_inject(x, w, torch.randn(2, 2, 4, 4))


def test_results_do_not_depend_on_thread_count():
    """Every reduction is per row and combined in a fixed order: bitwise equal across thread counts."""
    x = torch.randn(1, 64, 40, 40, requires_grad=True)
    w, b, r = torch.randn(64, requires_grad=True), torch.randn(64), torch.randn(1, 64, 40, 40)
    g = torch.randn(1, 64, 40, 40)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            x.grad = w.grad = None
            out = native.group_norm_act(x, w, b, act="relu", residual=r)
            out.backward(g)
            results.append((out.detach(), x.grad.clone(), w.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            assert torch.equal(a, e)


def _oracle_assign(points, centers):
    d = (points[:, :, None, :] - centers[:, None, :, :]).square().sum(-1)  # (B, P, K), float32 as palette
    best, labels = d.min(dim=2)
    return labels, best


def test_kmeans_assign_accumulate_matches_oracle():
    gen = torch.Generator().manual_seed(3)
    B, P, K = 3, 5003, 9
    points = torch.randint(0, 256, (B, P, 3), generator=gen).float()
    centers = torch.rand(B, K, 3, generator=gen) * 255
    centers[1, 4] = centers[1, 2]  # an exact tie: the lower index must win
    labels, sums, counts, sse = native.kmeans_assign_accumulate(points, centers)
    assert labels.dtype == torch.int64 and sums.dtype == counts.dtype == sse.dtype == torch.float32
    ref_labels, best = _oracle_assign(points, centers)
    assert torch.equal(labels, ref_labels)
    assert not (labels[1] == 4).any()
    onehot = torch.nn.functional.one_hot(labels, K).double()
    assert torch.equal(counts.double(), onehot.sum(1))
    assert_close(sums, torch.einsum("bpk,bpc->bkc", onehot, points.double()), dtype=torch.float32)
    assert_close(sse, best.double().sum(1), dtype=torch.float32)
    # Integer multiplicities (0 = padding) weight every accumulated quantity; labels do not change.
    weights = torch.randint(0, 4, (B, P), generator=gen)
    w_labels, w_sums, w_counts, w_sse = native.kmeans_assign_accumulate(points, centers, weights)
    assert torch.equal(w_labels, labels)
    w = weights.double()
    assert torch.equal(w_counts.double(), torch.einsum("bpk,bp->bk", onehot, w))
    assert_close(w_sums, torch.einsum("bpk,bp,bpc->bkc", onehot, w, points.double()), dtype=torch.float32)
    assert_close(w_sse, (best.double() * w).sum(1), dtype=torch.float32)
    with pytest.raises(RuntimeError, match="weights must be float32"):
        torch.ops.colorizer.kmeans_assign_accumulate(points, centers, weights[:, :5].float())


def test_kmeans_assign_accumulate_matches_palette_contract():
    gen = torch.Generator().manual_seed(5)
    points = torch.rand(2, 777, 3, generator=gen) * 255
    centers = torch.rand(2, 9, 3, generator=gen) * 255
    ours = native.kmeans_assign_accumulate(points, centers)
    theirs = reference.kmeans_assign_accumulate(points, centers)
    assert torch.equal(ours[0], theirs[0])
    assert torch.equal(ours[2], theirs[2])
    for a, e, name in zip(ours[1::2], theirs[1::2], ("sums", "sse")):
        assert_close(a, e.double(), dtype=torch.float32, name=name)


# One sample per op and epilogue for torch.library.opcheck (schema, autograd registration, fake
# kernel, AOT dispatch). Kept small: opcheck compiles each sample.
def _opcheck_samples():
    x = torch.randn(2, 64, 5, 3)
    w, b = torch.randn(64), torch.randn(64)
    res, nw, noise = torch.randn(2, 64, 5, 3), torch.randn(64), torch.randn(2, 1, 5, 3)
    mean = torch.randn(2, 32)
    rstd = torch.rand(2, 32) + 0.5
    gn = torch.ops.colorizer.group_norm_act.default
    yield "gn_relu_res_noise", gn, (x, w, b, 32, 1e-5, "relu", res, nw, noise), True
    yield "gn_plain", gn, (x, w, b, 32, 1e-5, "none"), True
    yield "gn_leaky_cl", gn, (x.contiguous(memory_format=torch.channels_last), w, b, 32, 1e-5, "leaky_relu"), True
    gnb = torch.ops.colorizer.group_norm_act_backward.default
    yield "gn_bwd", gnb, (torch.randn_like(x), x, w, b, mean, rstd, 32, "relu", res, nw, noise), False
    yield "gn_bwd_none", gnb, (torch.randn_like(x), x, w, b, mean, rstd, 32, "none"), False
    yield "noise", torch.ops.colorizer.noise_inject.default, (x, nw, noise), True
    yield "noise_bwd", torch.ops.colorizer.noise_inject_backward.default, (x, nw, noise), False
    wt = torch.randn(8, 5, 3, 3)
    yield "ws", torch.ops.colorizer.weight_standardize.default, (wt, 1e-5), True
    ws_mean, ws_std = wt.reshape(8, -1).mean(1), wt.reshape(8, -1).std(1)
    yield "ws_bwd", torch.ops.colorizer.weight_standardize_backward.default, (wt, wt, ws_mean, ws_std, 1e-5), False
    pts, ctr = torch.rand(2, 100, 3) * 255, torch.rand(2, 4, 3) * 255
    yield "kmeans", torch.ops.colorizer.kmeans_assign_accumulate.default, (pts, ctr), False
    yield "kmeans_weights", torch.ops.colorizer.kmeans_assign_accumulate.default, (pts, ctr, torch.rand(2, 100)), False


OPCHECK_CASES = (
    [pytest.param(op, args, differentiable, id=name) for name, op, args, differentiable in _opcheck_samples()]
    if native.NATIVE_AVAILABLE
    else []
)


@pytest.mark.parametrize("op,args,differentiable", OPCHECK_CASES)
def test_opcheck(op, args, differentiable):
    if differentiable:
        args = tuple(a.clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("op", ["group_norm_act", "noise_inject", "weight_standardize"])
def test_double_backward_matches_reference(op):
    """create_graph=True (a gradient penalty) differentiates the backward through the reference."""
    gen = torch.Generator().manual_seed(11)
    if op == "group_norm_act":
        tensors = [torch.randn(2, 64, 5, 6, generator=gen), 1 + 0.1 * torch.randn(64, generator=gen)]
        tensors += [torch.randn(64, generator=gen), torch.randn(2, 64, 5, 6, generator=gen)]

        def call(impl, x, w, b, r):
            return impl.group_norm_act(x, w, b, act="leaky_relu", residual=r)
    elif op == "noise_inject":
        tensors = [torch.randn(2, 8, 5, 6, generator=gen), torch.randn(8, generator=gen)]
        tensors += [torch.randn(2, 1, 5, 6, generator=gen)]

        def call(impl, x, w, n):
            return impl.noise_inject(x, w, n)
    else:
        tensors = [torch.randn(6, 4, 3, 3, generator=gen)]

        def call(impl, w):
            return impl.weight_standardize(w)

    results = []
    for impl, dtype in ((native, torch.float32), (reference, torch.float64)):
        leaves = [t.to(dtype).requires_grad_(True) for t in tensors]
        out = call(impl, *leaves)
        grad_out = torch.linspace(-1, 1, out.numel(), dtype=dtype).reshape(out.shape)
        first = torch.autograd.grad(out, leaves, grad_out, create_graph=True)
        penalty = sum(g.square().sum() for g in first)
        results.append(torch.autograd.grad(penalty, leaves, allow_unused=True))
    for i, (ours, ref) in enumerate(zip(*results)):
        if ref is None:
            assert ours is None or not ours.any()
            continue
        scale = max(1.0, ref.abs().max().item())
        assert_close(ours, ref, dtype=torch.float32, name=f"{op} second-order grad {i}",
                     atol=tolerance(torch.float32)[0] * scale)  # fmt: skip


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_group_norm_act_channels_last_forward_epilogues(epilogue, act):
    tensors = _gn_inputs((2, 96, 7, 5), epilogue)
    for key in ("x", "residual"):
        if key in tensors:
            tensors[key] = tensors[key].contiguous(memory_format=torch.channels_last)
    out = native.group_norm_act(**tensors, groups=32, act=act)
    assert out.is_contiguous(memory_format=torch.channels_last)
    ref = reference.group_norm_act(**{k: v.double() for k, v in tensors.items()}, groups=32, act=act)
    assert_close(out, ref, dtype=torch.float32, name=f"channels_last {epilogue} {act}")
