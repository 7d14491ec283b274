"""The ``native`` kernel backend: fused CPU/CUDA ops from the compiled extension ``colorizer._C``.

The extension (built from csrc/ by setup.py) registers the ops ``torch.ops.colorizer.*``; this
module adds their autograd formulas and fake (meta) kernels, and the functions the model calls,
with exactly the signatures of ``colorizer.ops.reference``:

- ``group_norm_act(x, weight, bias, groups=32, eps=1e-5, act=None, residual=None, noise_weight=None,
  noise=None)``: x, residual (N, C, *spatial); weight, bias, noise_weight (C,); noise (N, 1, *spatial).
- ``noise_inject(x, weight, noise)``: x + weight[c] * noise.
- ``weight_standardize(w, eps=1e-5)``: w (C_out, ...), unbiased std, eps added to the std.
- ``attention_gate(...)``: the two GroupNorms, the add and the ReLU run as two native
  ``group_norm_act`` calls (the GroupNorm of ``x_proj`` takes the normalized ``g_proj`` as its
  residual); the 1-channel projection (``reference.sum_projection``: a product and a sum over the
  channels, whose bits do not depend on the thread count as the 1x1 convolution's do), InstanceNorm,
  sigmoid and product stay eager torch.
- ``kmeans_assign_accumulate(points, centers, weights=None, with_labels=True)``: one Lloyd step's
  assignment and sums (the palette's K-means step; no autograd).

Where the native kernels cover the call (float32 or bfloat16 on the CPU; also float16 on CUDA when
the extension was built with CUDA; residual in x's dtype), they run; other calls (float64, an
unsupported device, mixed dtypes) run the pure-torch reference, so a model on ``native`` always
works. Channels_last inputs give channels_last outputs: on the CPU the forward kernels of
group_norm_act and noise_inject run on them in place (vectors along C); the backward kernels and the
CUDA kernels compute on an NCHW copy and convert back (a copy each way). Statistics are fp32; bfloat16 storage
is read into fp32 registers.

``import colorizer.native`` works without the compiled library: ``NATIVE_AVAILABLE`` is False,
``NATIVE_UNAVAILABLE_REASON`` says why, and ``make_opset()`` (the backend registry's entry point,
see ``colorizer.ops.backends``) raises ``KernelsUnavailable`` with that reason.
"""

from __future__ import annotations

import torch

from colorizer.errors import KernelsUnavailable
from colorizer.ops import reference

try:
    from colorizer import _C  # noqa: F401  (loading the library registers torch.ops.colorizer)

    NATIVE_AVAILABLE = True
    NATIVE_UNAVAILABLE_REASON: str | None = None
    NATIVE_WITH_CUDA = bool(_C.WITH_CUDA)
    NATIVE_CPU_CAPABILITY: str = _C.CPU_CAPABILITY
except (ImportError, OSError) as exc:  # OSError: a library built against another torch
    NATIVE_AVAILABLE = False
    NATIVE_UNAVAILABLE_REASON = (
        f"the compiled extension colorizer._C cannot be loaded ({exc}); build it with "
        "`pip install --no-build-isolation -e .`"
    )
    NATIVE_WITH_CUDA = False
    NATIVE_CPU_CAPABILITY = "none"

ACT_NAMES = {None: "none", "relu": "relu", "leaky_relu": "leaky_relu"}
CPU_DTYPES = (torch.float32, torch.bfloat16)
CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

__all__ = [
    "NATIVE_AVAILABLE",
    "NATIVE_UNAVAILABLE_REASON",
    "NATIVE_WITH_CUDA",
    "KMEANS_TAKES_WEIGHTS",
    "attention_gate",
    "group_norm_act",
    "kmeans_assign_accumulate",
    "make_opset",
    "native_supports",
    "noise_inject",
    "weight_standardize",
]


def native_supports(x: torch.Tensor) -> bool:
    """True when the compiled kernels handle a tensor of x's device and dtype."""
    if not NATIVE_AVAILABLE:
        return False
    if x.device.type == "cpu":
        return x.dtype in CPU_DTYPES
    if x.device.type == "cuda":
        return NATIVE_WITH_CUDA and x.dtype in CUDA_DTYPES
    return False


def _output_format(x: torch.Tensor) -> torch.memory_format:
    """Same rule as csrc/common.h output_format: channels_last stays channels_last."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _require_library() -> None:
    if not NATIVE_AVAILABLE:
        raise KernelsUnavailable(f"kernels='native' is not available: {NATIVE_UNAVAILABLE_REASON}")


# --------------------------------------------------------------------------------------------
# Fake kernels and autograd formulas (registered only when the library is loaded).
# --------------------------------------------------------------------------------------------
if NATIVE_AVAILABLE:

    @torch.library.register_fake("colorizer::group_norm_act")
    def _group_norm_act_fake(x, weight, bias, groups, eps, act, residual=None, noise_weight=None, noise=None):
        torch._check(x.shape[1] % groups == 0, lambda: "channels not divisible by groups")
        out = torch.empty_like(x, memory_format=_output_format(x))
        stats = x.new_empty((x.shape[0], groups), dtype=torch.float32)
        return out, stats, torch.empty_like(stats)

    @torch.library.register_fake("colorizer::group_norm_act_backward")
    def _group_norm_act_backward_fake(
        grad_out, x, weight, bias, mean, rstd, groups, act, residual=None, noise_weight=None, noise=None
    ):
        fmt = _output_format(x)
        grad_z = torch.empty_like(x, memory_format=fmt) if act != "none" else x.new_empty((0,))
        if noise is not None:
            grad_noise_weight = noise_weight.new_empty(noise_weight.shape)
        else:
            grad_noise_weight = x.new_empty((0,), dtype=torch.float32)
        return (
            torch.empty_like(x, memory_format=fmt),
            weight.new_empty(weight.shape),
            bias.new_empty(bias.shape),
            grad_z,
            grad_noise_weight,
        )

    @torch.library.register_fake("colorizer::noise_inject")
    def _noise_inject_fake(x, weight, noise):
        return torch.empty_like(x, memory_format=_output_format(x))

    @torch.library.register_fake("colorizer::noise_inject_backward")
    def _noise_inject_backward_fake(grad_out, weight, noise):
        return weight.new_empty(weight.shape)

    @torch.library.register_fake("colorizer::weight_standardize")
    def _weight_standardize_fake(w, eps):
        stats = w.new_empty((w.shape[0],), dtype=torch.float32)
        return w.new_empty(w.shape), stats, torch.empty_like(stats)

    @torch.library.register_fake("colorizer::weight_standardize_backward")
    def _weight_standardize_backward_fake(grad_out, w, mean, std, eps):
        return w.new_empty(w.shape)

    @torch.library.register_fake("colorizer::kmeans_assign_accumulate")
    def _kmeans_assign_accumulate_fake(points, centers, weights=None):
        B, P, _ = points.shape
        K = centers.shape[1]
        return (
            points.new_empty((B, P), dtype=torch.int64),
            points.new_empty((B, K, 3)),
            points.new_empty((B, K)),
            points.new_empty((B,)),
        )

    def _noise_grad(grad: torch.Tensor, weight: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """d/d noise of sum(grad * weight[c] * noise): sum over channels of grad * weight[c]."""
        shape = (1, -1) + (1,) * (grad.dim() - 2)
        return (grad * weight.reshape(shape).to(grad.dtype)).sum(1, keepdim=True).to(noise.dtype)

    def _reference_vjp(fn, inputs: tuple, need: tuple, grad_out: torch.Tensor) -> tuple:
        """Gradients of fn(*inputs) for the inputs in ``need``, by autograd through the reference with
        create_graph=True. The backward kernels have no derivative of their own, so a backward that
        must itself be differentiable (double backward: gradient penalties, Hessian-vector products)
        takes this path; a plain backward never does."""
        wrt = [t for t, n in zip(inputs, need) if n]
        out = fn(*inputs)
        grads = iter(torch.autograd.grad(out, wrt, grad_out, create_graph=True, allow_unused=True))
        return tuple(next(grads) if n else None for n in need)

    def _group_norm_act_setup(ctx, inputs, output):
        x, weight, bias, groups, eps, act, residual, noise_weight, noise = inputs
        _, mean, rstd = output
        ctx.save_for_backward(x, weight, bias, mean, rstd, residual, noise_weight, noise)
        ctx.groups, ctx.eps, ctx.act = groups, eps, act
        ctx.mark_non_differentiable(mean, rstd)

    def _group_norm_act_backward(ctx, grad_out, _grad_mean, _grad_rstd):
        x, weight, bias, mean, rstd, residual, noise_weight, noise = ctx.saved_tensors
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True
            act = None if ctx.act == "none" else ctx.act
            inputs = (x, weight, bias, ctx.groups, ctx.eps, act, residual, noise_weight, noise)
            return _reference_vjp(reference.group_norm_act, inputs, need, grad_out)
        grad_x, grad_w, grad_b, grad_z, grad_nw = torch.ops.colorizer.group_norm_act_backward(
            grad_out.contiguous(), x, weight, bias, mean, rstd, ctx.groups, ctx.act, residual, noise_weight, noise
        )
        grad_residual = None
        if residual is not None and need[6]:
            grad_residual = grad_out if ctx.act == "none" else grad_z
        grad_noise_weight = grad_nw if noise is not None and need[7] else None
        grad_noise = _noise_grad(grad_out, noise_weight, noise) if noise is not None and need[8] else None
        return (
            grad_x if need[0] else None,
            grad_w if need[1] else None,
            grad_b if need[2] else None,
            None,
            None,
            None,
            grad_residual,
            grad_noise_weight,
            grad_noise,
        )

    torch.library.register_autograd(
        "colorizer::group_norm_act", _group_norm_act_backward, setup_context=_group_norm_act_setup
    )

    def _noise_inject_setup(ctx, inputs, output):
        _, weight, noise = inputs
        ctx.save_for_backward(weight, noise)

    def _noise_inject_backward(ctx, grad_out):
        weight, noise = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad_w = None
        if need[1] and torch.is_grad_enabled():  # create_graph=True: the same sum in differentiable torch ops
            dims = [0, *range(2, grad_out.dim())]
            grad_w = (grad_out * noise.to(grad_out.dtype)).sum(dim=dims).to(weight.dtype)
        elif need[1]:
            grad_w = torch.ops.colorizer.noise_inject_backward(grad_out.contiguous(), weight, noise)
        grad_noise = _noise_grad(grad_out, weight, noise) if need[2] else None
        return grad_out if need[0] else None, grad_w, grad_noise

    torch.library.register_autograd(
        "colorizer::noise_inject", _noise_inject_backward, setup_context=_noise_inject_setup
    )

    def _weight_standardize_setup(ctx, inputs, output):
        w, eps = inputs
        _, mean, std = output
        ctx.save_for_backward(w, mean, std)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, std)

    def _weight_standardize_backward(ctx, grad_out, _grad_mean, _grad_std):
        w, mean, std = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            return _reference_vjp(reference.weight_standardize, (w, ctx.eps), ctx.needs_input_grad, grad_out)
        return torch.ops.colorizer.weight_standardize_backward(grad_out.contiguous(), w, mean, std, ctx.eps), None

    torch.library.register_autograd(
        "colorizer::weight_standardize", _weight_standardize_backward, setup_context=_weight_standardize_setup
    )


# --------------------------------------------------------------------------------------------
# The backend's functions (signatures of colorizer.ops.reference).
# --------------------------------------------------------------------------------------------
def group_norm_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    groups: int = 32,
    eps: float = 1e-5,
    act: str | None = None,
    residual: torch.Tensor | None = None,
    noise_weight: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """act(GroupNorm(x) + residual) + noise_weight[c] * noise in one fused pass (see the module doc).

    x, residual: (N, C, *spatial); weight, bias, noise_weight: (C,); noise: (N, 1, *spatial) or
    broadcastable to it. Returns x's shape and dtype. Unsupported cases run the reference.
    """
    if act not in ACT_NAMES:
        raise ValueError(f"unknown activation {act!r}; expected one of {reference.ACTIVATIONS}")
    if noise is None:
        noise_weight = None
    if (
        not native_supports(x)
        or x.numel() == groups  # one value per group: the reference raises, keep its error
        or (residual is not None and (residual.dtype != x.dtype or residual.shape != x.shape))
        or (noise is not None and not _noise_fits(x, noise))
    ):
        return reference.group_norm_act(x, weight, bias, groups, eps, act, residual, noise_weight, noise)
    if noise is not None:
        noise = noise.expand(x.shape[0], 1, *x.shape[2:])
    return torch.ops.colorizer.group_norm_act(
        x, weight, bias, groups, eps, ACT_NAMES[act], residual, noise_weight, noise
    )[0]


def _noise_fits(x: torch.Tensor, noise: torch.Tensor) -> bool:
    """noise broadcasts to (N, 1, *spatial) of x (what the kernels take) without changing x's shape."""
    if noise.dim() != x.dim() or noise.shape[1] != 1 or noise.shape[0] not in (1, x.shape[0]):
        return False
    return all(n == s for n, s in zip(noise.shape[2:], x.shape[2:]))


def noise_inject(x: torch.Tensor, weight: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x + weight[c] * noise. x: (N, C, *spatial); weight: (C,); noise: (N, 1, *spatial)."""
    if not native_supports(x) or not _noise_fits(x, noise):
        return reference.noise_inject(x, weight, noise)
    return torch.ops.colorizer.noise_inject(x, weight, noise.expand(x.shape[0], 1, *x.shape[2:]))


def weight_standardize(w: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(w - mean) / (unbiased std + eps) per output channel. w: (C_out, C_in, kh, kw) (any rank >= 1)."""
    if not native_supports(w) or w.dim() < 1:
        return reference.weight_standardize(w, eps)
    return torch.ops.colorizer.weight_standardize(w, eps)[0]


def attention_gate(
    g_proj: torch.Tensor,
    x_proj: torch.Tensor,
    x: torch.Tensor,
    g_norm_weight: torch.Tensor,
    g_norm_bias: torch.Tensor,
    x_norm_weight: torch.Tensor,
    x_norm_bias: torch.Tensor,
    psi_weight: torch.Tensor,
    psi_bias: torch.Tensor,
    groups: int = 32,
    eps: float = 1e-5,
) -> torch.Tensor:
    """x * sigmoid(InstanceNorm(psi_weight . relu(GN(g_proj) + GN(x_proj)) + psi_bias)).

    Shapes as ``colorizer.ops.reference.attention_gate``. relu(GN(g) + GN(x)) is two native
    group_norm_act calls (the second adds the first as its residual); the rest is eager torch, with the
    projection as a sum over the channels (``reference.sum_projection``: thread-count invariant).
    """
    if not native_supports(g_proj) or x_proj.dtype != g_proj.dtype:
        return reference.attention_gate(
            g_proj, x_proj, x, g_norm_weight, g_norm_bias, x_norm_weight, x_norm_bias, psi_weight, psi_bias, groups, eps
        )
    g1 = group_norm_act(g_proj, g_norm_weight, g_norm_bias, groups, eps)
    p = group_norm_act(x_proj, x_norm_weight, x_norm_bias, groups, eps, act="relu", residual=g1)
    return reference.attention_gate_tail(p, x, psi_weight, psi_bias, eps, project=reference.sum_projection)


def kmeans_assign_accumulate(
    points: torch.Tensor, centers: torch.Tensor, weights: torch.Tensor | None = None, with_labels: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Lloyd step's assignment and per-center sums: ``colorizer.ops.reference.kmeans_assign_accumulate``.

    points: (Bp, P, 3) (used as float32); centers: (B, K, 3) float32, B a multiple of Bp (the
    kernel takes B == Bp: the points, and weights, are repeated per center row otherwise);
    weights: optional (Bp, P) point multiplicities (used as float32; 0 marks padding). Returns
    labels (B, P) int64 (None unless ``with_labels``), sums (B, K, 3), counts (B, K), sse (B,),
    float32, with the reference's float32 distance arithmetic, so labels match it exactly. No
    autograd. CUDA tensors need an extension built with CUDA (KernelsUnavailable otherwise).
    """
    _require_library()
    repeat = reference.check_kmeans_shapes(points, centers)
    if points.device.type == "cuda" and not NATIVE_WITH_CUDA:
        raise KernelsUnavailable("colorizer._C was built without CUDA; rebuild it on a machine with nvcc")
    if weights is not None and not KMEANS_TAKES_WEIGHTS:
        raise KernelsUnavailable(
            "this build of colorizer._C has no weights= in kmeans_assign_accumulate; rebuild it "
            "(`pip install --no-build-isolation -e .`)"
        )
    points = points.float()
    if weights is not None:
        weights = weights.to(torch.float32)
    if repeat > 1:
        points = points.repeat_interleave(repeat, dim=0)
        weights = None if weights is None else weights.repeat_interleave(repeat, dim=0)
    labels, sums, counts, sse = torch.ops.colorizer.kmeans_assign_accumulate(
        points.contiguous(), centers.float().contiguous(), None if weights is None else weights.contiguous()
    )
    return labels if with_labels else None, sums, counts, sse


def _declared_arguments(op: str) -> tuple[str, ...]:
    """The argument names csrc/ops.cpp declares for ``torch.ops.colorizer.<op>`` (() if it has no such op)."""
    if not NATIVE_AVAILABLE or not hasattr(torch.ops.colorizer, op):
        return ()
    return tuple(arg.name for arg in getattr(torch.ops.colorizer, op).default._schema.arguments)


# Whether the loaded library's K-means step takes point weights (declared in csrc/ops.cpp; a library
# built before they were added does not). Without them the palette would have to cluster every pixel
# instead of the distinct colors, several times the work on drawings, so the backend then leaves the
# op out (``make_opset``) and the palette runs the eager step.
KMEANS_TAKES_WEIGHTS = "weights" in _declared_arguments("kmeans_assign_accumulate")


def make_opset() -> dict:
    """Op name -> callable for the backend registry; raises KernelsUnavailable without the library."""
    _require_library()
    ops = {
        "weight_standardize": weight_standardize,
        "group_norm_act": group_norm_act,
        "noise_inject": noise_inject,
        "attention_gate": attention_gate,
    }
    if KMEANS_TAKES_WEIGHTS:
        ops["kmeans_assign_accumulate"] = kmeans_assign_accumulate
    return ops
