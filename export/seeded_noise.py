"""Counter-based Gaussian noise from a per-sample integer seed, built only from int32 arithmetic.

The ``seeded`` export mode computes the generator's eight noise maps *inside* the ONNX graph from a
``seed`` input, so a client (or a Triton server batching requests together) sends one integer per
image and gets a reproducible result that does not depend on what else was in the batch. ONNX's
RandomNormalLike cannot do that (its seed is a fixed attribute, and TensorRT ignores it), so the
noise is a pure function of (seed, position) written with ops that onnxruntime and the TensorRT ONNX
parser both support for INT32: Add, Sub, Mul, Div (on non-negative values, where truncation and
floor agree), Range, Cast, then Log / Sqrt / Cos in float32. Every integer intermediate stays below
2**31, so there is no reliance on overflow behaviour and every backend computes the same bits.

Algorithm (version 2; ``NOISE_ALGORITHM`` is written into the ONNX metadata):

1. The seed ``s`` (int32, 0 <= s < 2**31, the project's seed range, ``colorizer.limits``): its low
   30 bits, split into 15-bit halves, pass twice through a 6-round Feistel network with fixed round
   keys, giving (kL, kR). The six round keys of step 2 are kL, kR, then four mixes
   (a kL + b kR + c) mod 2**15, the first of them plus 2**14 times bit 30 of s. The key tuple
   determines s, so distinct seeds give distinct keys (version 1 let half the seeds share keys).
2. The eight maps noise7 .. noise0 (sizes ``noise_shapes``) are laid out one after another in
   row-major order: element ``i`` of that flat sequence uses the two counters ``2i`` and ``2i + 1``.
   Each counter (< 2**30) is split into 15-bit halves (L, R) and permuted by a 6-round Feistel
   network with round function F(R, k) = (((t * t + C * t) // 128) mod 2**15), t = (R + k) mod 2**15
   (a keyed middle-square). The output v is a uniform 30-bit integer.
3. Box-Muller in float32: u = (v + 0.5) / 2**30, u0 = max(u(2i), 2**-14), u1 = u(2i + 1),
   z = sqrt(-2 ln u0) * cos(2 pi u1). Each 30-bit v is converted as its two 15-bit halves and u0 is
   floored at float16's smallest normal, so a TensorRT fp16 engine cannot overflow or take log(0);
   the floor caps |z| at 4.4 (a 6e-5 tail).

So noise for a given seed depends on the image size (the layout of step 2), not on the batch. It is
not the same stream as ``Sketch2Color(..)(x, noise=int_seed)``, which uses torch's CPU generator;
``seeded_noise`` below reproduces the in-graph noise bit for bit in PyTorch (and is what the
exported graph is traced from). Limits: H * W < 2**28 per image (e.g. up to 16384 x 16384).
"""

from __future__ import annotations

import math

import torch

from colorizer.models.generator import noise_shapes

NOISE_ALGORITHM = "colorizer-feistel-boxmuller-v2"
HALF = 32768  # 2**15: the Feistel halves (every divisor below is a power of two)
ROUNDS = 6
_SEED_ROUND_KEYS = (12345, 29311, 7019, 31337, 2713, 19937)
# Round-function multipliers C_r (< 2**15 so t*t + C*t < 2**31) and round-key mixers.
_ROUND_MULT = (31081, 21911, 30011, 24989, 27361, 28933)
_KEY_MULT_L = (4093, 1021, 3067, 2039, 4091, 509)
_KEY_MULT_R = (2053, 4079, 1031, 3061, 257, 4073)
_KEY_ADD = (17, 8191, 127, 16127, 3001, 24001)
U0_MIN = 2.0**-14


def _floordiv(x: torch.Tensor, d: int) -> torch.Tensor:
    """x // d for non-negative int32 x and a power of two d.

    Exported as an integer Div (TensorRT's parser has no BitShift / BitwiseAnd); values are
    non-negative, so truncation equals floor ("trunc" avoids the sign-correction ops "floor" adds).
    Eagerly it is a shift, which PyTorch runs ~10x faster than integer division; same bits.
    """
    if torch.onnx.is_in_onnx_export():
        return torch.div(x, d, rounding_mode="trunc")
    return x >> (d.bit_length() - 1)


def _mod(x: torch.Tensor, d: int) -> torch.Tensor:
    """x mod d for non-negative int32 x and a power of two d (Div, Mul, Sub when exported)."""
    if torch.onnx.is_in_onnx_export():
        return x - torch.div(x, d, rounding_mode="trunc") * d
    return x & (d - 1)


def _round_function(r: torch.Tensor, key: torch.Tensor, mult: int) -> torch.Tensor:
    t = _mod(r + key, HALF)
    return _mod(_floordiv(t * t + t * mult, 128), HALF)


def _feistel(left: torch.Tensor, right: torch.Tensor, keys) -> tuple[torch.Tensor, torch.Tensor]:
    for key, mult in zip(keys, _ROUND_MULT):
        left, right = right, _mod(left + _round_function(right, key, mult), HALF)
    return left, right


def _sample_keys(seed: torch.Tensor) -> list[torch.Tensor]:
    """seed (N,) int32 -> ROUNDS round keys, each (N, 1) int32 in [0, 2**15).

    Injective: distinct seeds in [0, 2**31) give distinct key tuples. The low 30 bits go through
    two Feistel networks (a bijection) to (kl, kr), which are the first two keys; the top bit t
    moves the third key by 2**14, so (kl, kr, t) can be read back from the keys. (Version 1 mixed
    (kl, kr) into every key linearly, a map that sends (kl, kr) and (kl + 2**14, kr + 2**14) to the
    same keys, and folded t into kr: one seed in two shared its noise with another.)
    """
    s_lo = _mod(seed, HALF)
    s_hi = _floordiv(seed, HALF)  # < 2**16
    top = _floordiv(s_hi, HALF)  # bit 30: 0 or 1
    kl, kr = _feistel(s_lo, _mod(s_hi, HALF), _SEED_ROUND_KEYS)
    kl, kr = _feistel(kl, kr, _SEED_ROUND_KEYS)
    keys = [kl, kr]
    for j, (a, b, c) in enumerate(zip(_KEY_MULT_L[2:], _KEY_MULT_R[2:], _KEY_ADD[2:])):
        mixed = kl * a + kr * b + c
        if j == 0:
            mixed = mixed + top * (HALF // 2)
        keys.append(_mod(mixed, HALF))
    return [k.unsqueeze(1) for k in keys]


def _uniform(counter: torch.Tensor, keys) -> torch.Tensor:
    """counter (1, L) int32 < 2**30 -> (N, L) float32 (v + 0.5) / 2**30 in (0, 1), v uniform in [0, 2**30).

    The two 15-bit halves are converted separately (each < 2**15): a 30-bit integer would overflow
    float16 (max 65504) if TensorRT ran the Cast in half precision.
    """
    left, right = _feistel(_floordiv(counter, HALF), _mod(counter, HALF), keys)
    return left.to(torch.float32) * (1.0 / HALF) + (right.to(torch.float32) + 0.5) * (1.0 / HALF**2)


def seeded_noise(seed: torch.Tensor, height, width) -> list[torch.Tensor]:
    """The eight noise maps noise7 .. noise0 for per-sample seeds.

    seed: (N,) integer tensor, 0 <= seed < 2**31. height, width: the image size in pixels
    (multiples of 128; ints, or traced sizes during export). Returns eight float32 tensors of shapes
    ``noise_shapes(N, height, width)`` on seed's device, standard normal.
    """
    seed = seed.to(torch.int32)
    n = seed.shape[0]
    keys = _sample_keys(seed)
    sizes = [(height // (2**s), width // (2**s)) for s in (7, 6, 5, 4, 3, 2, 1, 0)]
    total = sum(h * w for h, w in sizes)
    # Counters 2i and 2i + 1 for element i, hashed in one pass: (1, 2L) -> (N, L, 2).
    counter = torch.arange(2 * total, dtype=torch.int32, device=seed.device).unsqueeze(0)
    u = _uniform(counter, keys).reshape(n, total, 2)
    # u0 is kept >= 2**-14 (float16's smallest normal) so log(u0) is finite in any precision; that
    # caps |z| at 4.4 (a 6e-5 tail of each map), harmless for noise injection.
    u0 = torch.clamp(u[:, :, 0], min=U0_MIN)
    z = torch.sqrt(-2.0 * torch.log(u0)) * torch.cos(u[:, :, 1] * (2.0 * math.pi))  # (N, L)
    maps, start = [], 0
    for h, w in sizes:
        maps.append(z[:, start : start + h * w].reshape(n, 1, h, w))
        start = start + h * w
    return maps


__all__ = ["NOISE_ALGORITHM", "noise_shapes", "seeded_noise"]
