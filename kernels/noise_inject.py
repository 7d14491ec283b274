"""Noise injection x + weight[c] * noise[n, 0, h, w], forward and backward; the noise either given
as a tensor (what the model passes) or drawn inside the kernel from Philox (seed, offset).

Tensor path: ``noise_inject(x, weight, noise)``, the math of ``colorizer.ops.reference.noise_inject``.
The model usually fuses this into the preceding GroupNorm (``group_norm_act(..., noise_weight,
noise)``); this op is the standalone injection (``noise7`` and ``noise0`` of the generator).

Philox path: ``noise_inject_philox(x, weight, seed, offset)`` draws noise[n, h, w] =
``tl.randn(seed, offset + (n * H + h) * W + w)``: one standard normal per pixel, the same value for
every channel, reproducible from (seed, offset). What is identical on every device is the integer
part: Philox 4x32-10 gives the same 32-bit words on any GPU and in the CPU interpreter. The floats
are not bit-identical across devices: the uniform-to-normal transform (Box-Muller) is compiled on a
GPU with ``div.full`` (approximate division), ``sqrt.approx``/``lg2.approx`` and FMA contraction,
while the interpreter evaluates it in numpy, so the two may differ in the last bits
(tests/kernels/test_gpu.py compares the GPU with recorded interpreter values at 1e-5). Two runs on
one device, and the forward and backward of one op, do draw bit-identical values. It uses N * H * W
counters starting at ``offset``; draw the next map from ``offset + N * H * W`` to get independent
noise. Nothing is stored for the backward: it draws the same numbers again from (seed, offset) to
form d(weight). ``philox_noise(...)`` materialises the same map as a tensor.

Layout: x and dy are read through their strides as (N, C, H*W) (NCHW, channels_last and zero-stride
views work without a copy); the output keeps x's memory format. Programs take [BLOCK_C, BLOCK_HW]
tiles that follow the layout: long runs of pixels on NCHW, all (up to the tile) neighbouring
channels of a few pixels on channels_last (``tuning.channel_tiling``). Backward: dx = dy (no
kernel); d(weight)[c] = sum dy * noise from fp32 partials (N, hw_blocks, C) summed in a fixed shape
(deterministic); d(noise) = sum_c dy * weight[c] from fp32 partials (N, channel_blocks, H*W), only
when the noise tensor requires grad.
"""

# ruff: noqa: N803 (Triton convention: pointer and constexpr arguments in capitals)
from __future__ import annotations

import torch
import triton
import triton.language as tl

from colorizer.kernels.backend import (
    OP_LIBRARY,
    flat_spatial,
    new_empty,
    new_empty_like,
    on_device_of_first_tensor,
    use_triton,
)
from colorizer.kernels.tuning import channel_tiling, interpreting
from colorizer.ops import KernelsUnavailable, reference

MAX_COUNTER = 2**31  # Philox counters are int32 offsets here


@triton.jit
def _noise_values(NOISE, n64, n, hw, hmask, HW, snn, snhw, seed, offset, FROM_SEED: tl.constexpr):
    """Noise of pixels hw [BLOCK_HW] of sample n, fp32: Philox from (seed, offset) or loaded."""
    if FROM_SEED:
        nz = tl.randn(seed, offset + n * HW + hw)
    else:
        nz = tl.load(NOISE + n64 * snn + hw * snhw, mask=hmask, other=0.0).to(tl.float32)
    return nz


@triton.jit(do_not_specialize=["seed", "offset"])
def _noise_inject_fwd_kernel(
    X,  # (N, C, HW) by strides sx*
    NOISE,  # (N, 1, HW) by strides sn*; unused when FROM_SEED
    W,  # (C,) per-channel noise weight
    Y,  # (N, C, HW) by strides sy*, dtype of X
    C,
    HW,
    sxn,
    sxc,
    sxhw,
    snn,
    snhw,
    syn,
    syc,
    syhw,
    seed,
    offset,
    FROM_SEED: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    channel_blocks = tl.cdiv(C, BLOCK_C)
    n = tl.program_id(0) // channel_blocks
    c = (tl.program_id(0) % channel_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    n64 = n.to(tl.int64)
    cmask = c < C
    hmask = hw < HW
    mask = cmask[:, None] & hmask[None, :]
    nz = _noise_values(NOISE, n64, n, hw, hmask, HW, snn, snhw, seed, offset, FROM_SEED)
    w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32)
    x = tl.load(X + n64 * sxn + c[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(tl.float32)
    y = x + w[:, None] * nz[None, :]
    tl.store(Y + n64 * syn + c[:, None] * syc + hw[None, :] * syhw, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["seed", "offset"])
def _noise_inject_bwd_kernel(
    DY,  # (N, C, HW) by strides sd*
    NOISE,  # (N, 1, HW) by strides sn*; unused when FROM_SEED
    W,  # (C,)
    PDW,  # fp32 (N, hw_blocks, C) partial d(weight)
    PDN,  # fp32 (N, channel_blocks, HW) partial d(noise); written when NEED_DNOISE
    C,
    HW,
    sdn,
    sdc,
    sdhw,
    snn,
    snhw,
    seed,
    offset,
    FROM_SEED: tl.constexpr,
    NEED_DNOISE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    channel_blocks = tl.cdiv(C, BLOCK_C)
    cb = tl.program_id(0) % channel_blocks
    n = tl.program_id(0) // channel_blocks
    s = tl.program_id(1)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = s * BLOCK_HW + tl.arange(0, BLOCK_HW)
    n64 = n.to(tl.int64)
    cmask = c < C
    hmask = hw < HW
    mask = cmask[:, None] & hmask[None, :]
    nz = _noise_values(NOISE, n64, n, hw, hmask, HW, snn, snhw, seed, offset, FROM_SEED)
    dy = tl.load(DY + n64 * sdn + c[:, None] * sdc + hw[None, :] * sdhw, mask=mask, other=0.0).to(tl.float32)
    dw = tl.sum(dy * tl.where(hmask, nz, 0.0)[None, :], axis=1)
    tl.store(PDW + (n64 * tl.num_programs(1) + s) * C + c, dw, mask=cmask)
    if NEED_DNOISE:
        w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32)
        dn = tl.sum(dy * w[:, None], axis=0)
        tl.store(PDN + (n64 * channel_blocks + cb) * HW + hw, dn, mask=hmask)


def _channels_contiguous(x: torch.Tensor) -> bool:
    """Neighbouring channels are neighbours in memory (channels_last)."""
    return x.shape[1] > 1 and x.stride(1) == 1 and x.shape[2] * x.shape[3] > 1


def _check_philox_range(x: torch.Tensor, seed: int, offset: int) -> None:
    n, _, h, w = x.shape
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    if offset < 0 or offset + n * h * w > MAX_COUNTER:
        raise ValueError(f"Philox counters offset..offset+N*H*W must stay below 2**31, got offset {offset}")


@torch.library.custom_op(f"{OP_LIBRARY}::noise_inject_forward", mutates_args=())
@on_device_of_first_tensor
def noise_inject_forward(
    x: torch.Tensor, weight: torch.Tensor, noise: torch.Tensor | None, seed: int, offset: int, block_size: int
) -> torch.Tensor:
    """x: (N, C, H, W); weight: (C,); noise: (N, 1, H, W), or None to draw Philox noise from (seed,
    offset). Returns x + weight[c] * noise like x (dtype, memory format)."""
    n, c, h, w = x.shape
    hw = h * w
    y = new_empty_like(x)
    if y.numel() == 0:
        return y
    tiling = channel_tiling(c, hw, block_size or None, channels_contiguous=_channels_contiguous(x))
    xs, sxn, sxc, sxhw = flat_spatial(x)
    _, syn, syc, syhw = flat_spatial(y)
    from_seed = noise is None
    ns, snn, _, snhw = (xs, 0, 0, 0) if from_seed else flat_spatial(noise)
    _noise_inject_fwd_kernel[(n * tiling.channel_blocks, tiling.hw_blocks)](
        xs,
        ns,
        weight,
        y,
        c,
        hw,
        sxn,
        sxc,
        sxhw,
        snn,
        snhw,
        syn,
        syc,
        syhw,
        seed,
        offset,
        FROM_SEED=from_seed,
        BLOCK_C=tiling.block_c,
        BLOCK_HW=tiling.block_hw,
        num_warps=tiling.num_warps,
    )
    return y


@noise_inject_forward.register_fake
def _(x, weight, noise, seed, offset, block_size):
    return torch.empty_like(x)


@torch.library.custom_op(f"{OP_LIBRARY}::noise_inject_backward", mutates_args=())
@on_device_of_first_tensor
def noise_inject_backward(
    dy: torch.Tensor,
    weight: torch.Tensor,
    noise: torch.Tensor | None,
    seed: int,
    offset: int,
    need_dnoise: bool,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (d(weight) in weight's dtype, d(noise) (N, 1, H, W) in noise's dtype, or an empty
    tensor unless need_dnoise)."""
    n, c, h, w = dy.shape
    hw = h * w
    tiling = channel_tiling(c, hw, block_size or None, channels_contiguous=_channels_contiguous(dy))
    need_dnoise = need_dnoise and noise is not None
    pdw = new_empty((n, tiling.hw_blocks, c), dtype=torch.float32, device=dy.device)
    pdn = new_empty((n, tiling.channel_blocks, hw), dtype=torch.float32, device=dy.device) if need_dnoise else pdw
    if dy.numel() > 0:
        ds, sdn, sdc, sdhw = flat_spatial(dy)
        ns, snn, _, snhw = (ds, 0, 0, 0) if noise is None else flat_spatial(noise)
        _noise_inject_bwd_kernel[(n * tiling.channel_blocks, tiling.hw_blocks)](
            ds,
            ns,
            weight,
            pdw,
            pdn,
            c,
            hw,
            sdn,
            sdc,
            sdhw,
            snn,
            snhw,
            seed,
            offset,
            FROM_SEED=noise is None,
            NEED_DNOISE=need_dnoise,
            BLOCK_C=tiling.block_c,
            BLOCK_HW=tiling.block_hw,
            # Philox at 16 warps got an 8-byte stack frame from ptxas on sm_90 (compile_check); 8 warps
            # hold the same tile in 50 registers without one.
            num_warps=min(tiling.num_warps, 8) if noise is None else tiling.num_warps,
        )
    else:
        pdw.zero_()
        pdn.zero_()
    dweight = pdw.sum(dim=(0, 1)).to(weight.dtype)
    if not need_dnoise:
        return dweight, dy.new_empty(0)
    dnoise = pdn.sum(dim=1).reshape(n, 1, h, w).to(noise.dtype)
    return dweight, dnoise


@noise_inject_backward.register_fake
def _(dy, weight, noise, seed, offset, need_dnoise, block_size):
    if need_dnoise and noise is not None:
        return torch.empty_like(weight), torch.empty_like(noise)
    return torch.empty_like(weight), dy.new_empty(0)


class NoiseInjectFunction(torch.autograd.Function):
    """noise None means Philox noise from (seed, offset)."""

    @staticmethod
    def forward(ctx, x, weight, noise, seed, offset, block_size):
        y = noise_inject_forward(x, weight, noise, seed, offset, block_size)
        ctx.save_for_backward(weight, noise)
        ctx.seed, ctx.offset, ctx.block_size = seed, offset, block_size
        return y

    @staticmethod
    def backward(ctx, dy):
        weight, noise = ctx.saved_tensors
        need_dnoise = noise is not None and ctx.needs_input_grad[2]
        dweight, dnoise = noise_inject_backward(dy, weight, noise, ctx.seed, ctx.offset, need_dnoise, ctx.block_size)
        return dy, dweight, dnoise if need_dnoise else None, None, None, None


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"noise_inject expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
    if weight.shape != (x.shape[1],):
        raise ValueError(f"weight must have shape ({x.shape[1]},), got {tuple(weight.shape)}")


def noise_inject(
    x: torch.Tensor, weight: torch.Tensor, noise: torch.Tensor, *, block_size: int | None = None
) -> torch.Tensor:
    """x + weight[c] * noise. x: (N, C, H, W) fp32/bf16/fp16, NCHW or channels_last; weight: (C,);
    noise: (N, 1, H, W), one map shared by all channels. Returns a tensor like x."""
    _check(x, weight)
    n, _, h, w = x.shape
    if noise.shape != (n, 1, h, w):
        raise ValueError(f"noise must have shape {(n, 1, h, w)}, got {tuple(noise.shape)}")
    if not use_triton(x):
        return reference.noise_inject(x, weight, noise)
    return NoiseInjectFunction.apply(x, weight, noise, 0, 0, int(block_size or 0))


def noise_inject_philox(
    x: torch.Tensor, weight: torch.Tensor, seed: int, offset: int = 0, *, block_size: int | None = None
) -> torch.Tensor:
    """x + weight[c] * noise with noise (N, 1, H, W) drawn in the kernel from Philox (seed, offset):
    the same value for all channels of a pixel; the same Philox integers on every device and in the
    interpreter, the same floats up to the last bits (see the module docstring).

    Uses counters offset .. offset + N*H*W - 1 (must stay below 2**31). The backward draws the same
    noise again from (seed, offset); ``philox_noise`` returns the map itself. Needs CUDA or the
    interpreter (the pure-torch fallback cannot reproduce Philox numbers): raises KernelsUnavailable
    otherwise.
    """
    _check(x, weight)
    _check_philox_range(x, seed, offset)
    if not (x.is_cuda or interpreting()):
        raise KernelsUnavailable("noise_inject_philox needs a CUDA tensor (or TRITON_INTERPRET=1 on the CPU)")
    return NoiseInjectFunction.apply(x, weight, None, int(seed), int(offset), int(block_size or 0))


def philox_noise(
    batch: int,
    height: int,
    width: int,
    seed: int,
    offset: int = 0,
    device: torch.device | str = "cuda",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The (batch, 1, height, width) noise map that ``noise_inject_philox`` adds for (seed, offset)."""
    zeros = torch.zeros(batch, 1, height, width, dtype=dtype, device=device)
    ones = torch.ones(1, dtype=torch.float32, device=device)
    with torch.no_grad():
        return noise_inject_philox(zeros, ones, seed, offset)
