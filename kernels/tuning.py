"""Block-size heuristics for every Triton op in colorizer.kernels, in one place.

Pure Python (no Triton import), so the launchers and the benchmark can ask for a tiling without
compiling anything.

Every op tiles its tensor into programs of about ``tile_elements()`` elements and splits reductions
across programs at the grid level (fp32 partials, combined in a fixed order), so no kernel has a loop
whose bound is a runtime argument (such loops break the interpreter of triton 3.6 with numpy >= 2.4,
triton issue 9171). Two regimes:

- CUDA: about 4096 elements per program for split passes and up to 8192 for a group that is
  normalised in one program (one read of x instead of two); small groups share a program up to
  about 2048 elements (enough work per program, enough programs to fill the SMs). These are
  starting points (see ``num_warps_for`` for the register counts behind them); they are not yet
  timed on a GPU (none was available when they were written: ``benchmarks/gpu_kernels.py`` is the
  tool to tune them).
- Interpreter (``TRITON_INTERPRET=1``): each program runs one after another in Python at about 1 ms of
  overhead, so the tiles are made as large as possible and the grids as small as possible.

Tests force the split-reduction path at tiny shapes with ``block_size=`` (elements per program).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SPLIT_TILE_CUDA = 4096
FUSED_TILE_CUDA = 8192
TILE_INTERPRETER = 1 << 16
PACK_TILE_CUDA = 2048  # small groups share a program up to about this many elements
MIN_CONTIGUOUS_CHANNELS = 16  # channels_last: neighbouring channels per program (64 bytes of fp32)
MAX_SPLITS = 4096  # partials per group; far above any generator shape (256x256 needs 32)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1 at import time)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def split_tile(block_size: int | None = None) -> int:
    """Elements per program of a split (multi-program) pass."""
    if block_size is not None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        return next_power_of_2(block_size)
    return TILE_INTERPRETER if interpreting() else SPLIT_TILE_CUDA


def fused_tile(block_size: int | None = None) -> int:
    """Largest group (elements) normalised by one program in a single pass."""
    if block_size is not None:
        return split_tile(block_size)
    return TILE_INTERPRETER if interpreting() else FUSED_TILE_CUDA


def pack_tile() -> int:
    """Elements up to which several small groups share one program."""
    return TILE_INTERPRETER if interpreting() else PACK_TILE_CUDA


MIN_SPLITS_PAD = 16  # partial-combine blocks are at least this wide: fewer compiled variants


def splits_pad(splits: int) -> int:
    """Block size of the loop-free combine over ``splits`` partials: 1 for one, else a power of two
    of at least MIN_SPLITS_PAD (masked), so sites with 2 to 16 partials share one compiled variant."""
    return 1 if splits <= 1 else max(MIN_SPLITS_PAD, next_power_of_2(splits))


def num_warps_for(tile: int) -> int:
    """About 8 values per thread (1 to 32 warps). Compiled for sm_90 (triton 3.9, cuobjdump; see
    ``python -m tests.kernels.compile_check``), the GroupNorm and gate kernels then hold 25 to 120
    registers and never spill. The fused 8192-element groups (e.g. 256 channels at 32x32) get 32
    warps: at 16 warps (16 values per thread) they took 52 to 116 registers, so one 16-warp block per
    SM; at 32 warps they take 32 to 61 (<= 64), so a 32-warp block fits: twice the warps in flight.
    Register counts, not timings: no GPU has timed this choice yet (benchmarks/gpu_check.py does)."""
    return max(1, min(32, tile // 256))


@dataclass(frozen=True)
class GroupTiling:
    """How a (N, G groups x CG channels, HW) tensor is tiled: programs of
    [block_g groups, block_cg channels, block_hw pixels]; ``splits`` programs share one group when the
    group does not fit one program (then block_g == 1)."""

    block_g: int
    block_cg: int
    block_hw: int
    group_blocks: int  # programs along the groups axis per sample: cdiv(G, block_g)
    splits: int  # programs along HW per group
    splits_pad: int  # block size for combining the partials (``splits_pad``)
    num_warps: int

    @property
    def fused(self) -> bool:
        return self.splits == 1


def group_tiling(
    groups: int,
    channels_per_group: int,
    hw: int,
    block_size: int | None = None,
    channels_contiguous: bool = False,
) -> GroupTiling:
    """Tiling of a group-normalised tensor. A group of at most ``fused_tile`` elements is held by one
    program (one pass over x); a larger one is split along HW into chunks of ``split_tile`` elements.
    Small groups share a program up to ``pack_tile`` elements (the interpreter packs all it can; a
    GPU keeps programs small enough to fill its SMs).

    channels_contiguous (channels_last tensors): a program takes at least MIN_CONTIGUOUS_CHANNELS
    neighbouring channels (several groups), so each pixel is read as one contiguous run of at least
    32 bytes instead of a group's 2 to 16 channels, except where that would split a group that fits
    one program on its own (one pass over x beats longer runs).

    block_size caps the elements of ONE group in one program (tests use a tiny one to force the
    split path); the packing of groups into programs keeps the default tile.
    """
    block_cg = next_power_of_2(channels_per_group)
    min_g = 1
    if channels_contiguous and block_size is None:
        min_g = min(next_power_of_2(groups), max(1, MIN_CONTIGUOUS_CHANNELS // block_cg))
        # Never turn a group that one program can normalise (one pass over x) into a split (two).
        one_group = block_cg * next_power_of_2(hw)
        if one_group <= fused_tile():
            min_g = max(1, min(min_g, fused_tile() // one_group))
    block_hw = next_power_of_2(hw)
    if min_g * block_cg * block_hw > fused_tile(block_size):
        block_hw = max(1, min(block_hw, split_tile(block_size) // (min_g * block_cg)))
    splits = cdiv(hw, block_hw)
    if splits > MAX_SPLITS:
        raise ValueError(
            f"a group of {channels_per_group} x {hw} needs {splits} partials (> {MAX_SPLITS}); raise block_size"
        )
    tile = pack_tile() if splits == 1 else split_tile()
    block_g = max(min_g, min(next_power_of_2(groups), tile // (block_cg * block_hw)))
    return GroupTiling(
        block_g=block_g,
        block_cg=block_cg,
        block_hw=block_hw,
        group_blocks=cdiv(groups, block_g),
        splits=splits,
        splits_pad=splits_pad(splits),
        num_warps=num_warps_for(block_g * block_cg * block_hw),
    )


def all_groups_tiling(groups: int, channels_per_group: int, hw: int, block_size: int | None = None) -> GroupTiling:
    """Tiling where every program holds all channels of a sample (for a reduction over channels, as
    the attention gate's 1-channel projection) and a chunk of pixels: [groups, channels per group,
    block_hw]. block_size caps the elements of one group in one program, as in ``group_tiling``."""
    block_g = next_power_of_2(groups)
    block_cg = next_power_of_2(channels_per_group)
    tile = split_tile() if block_size is None else split_tile(block_size) * block_g
    block_hw = max(1, min(next_power_of_2(hw), tile // (block_g * block_cg)))
    splits = cdiv(hw, block_hw)
    if splits > MAX_SPLITS:
        raise ValueError(f"{hw} pixels need {splits} partials (> {MAX_SPLITS}); raise block_size")
    return GroupTiling(
        block_g=block_g,
        block_cg=block_cg,
        block_hw=block_hw,
        group_blocks=1,
        splits=splits,
        splits_pad=splits_pad(splits),
        num_warps=num_warps_for(block_g * block_cg * block_hw),
    )


def pixel_rows_tiling(channels: int, hw: int, block_size: int | None = None) -> GroupTiling:
    """Tiling where every program holds all ``channels`` of a sample (a reduction over channels per
    pixel) and a chunk of pixels; block_size caps the pixels per program."""
    block_c = next_power_of_2(channels)
    if block_size is None:
        block_hw = max(1, min(next_power_of_2(hw), split_tile() // block_c))
    else:
        block_hw = min(next_power_of_2(hw), split_tile(block_size))
    splits = cdiv(hw, block_hw)
    return GroupTiling(
        block_g=1,
        block_cg=block_c,
        block_hw=block_hw,
        group_blocks=1,
        splits=splits,
        splits_pad=splits_pad(splits),
        num_warps=num_warps_for(block_c * block_hw),
    )


@dataclass(frozen=True)
class ChannelTiling:
    """Elementwise tiling of (N, C, HW) into [block_c, block_hw] programs."""

    block_c: int
    block_hw: int
    channel_blocks: int
    hw_blocks: int
    num_warps: int


def channel_tiling(
    channels: int, hw: int, block_size: int | None = None, channels_contiguous: bool = False
) -> ChannelTiling:
    """block_size caps the pixels per program (tests use a small one to get several partials along
    H*W). NCHW: the pixels fill the tile first (long contiguous runs along H*W), then the channels.
    channels_contiguous (channels_last): the channels fill it first (each pixel's channels are one
    contiguous run), then the pixels; otherwise a 32-channel map at 256x256 would get programs of one
    channel x 4096 pixels, every element C apart in memory."""
    if channels_contiguous:
        block_c = min(next_power_of_2(channels), split_tile())
        block_hw = max(1, min(next_power_of_2(hw), split_tile(block_size), split_tile() // block_c))
    else:
        block_hw = min(next_power_of_2(hw), split_tile(block_size))
        block_c = max(1, min(next_power_of_2(channels), split_tile() // block_hw))
    return ChannelTiling(
        block_c=block_c,
        block_hw=block_hw,
        channel_blocks=cdiv(channels, block_c),
        hw_blocks=cdiv(hw, block_hw),
        num_warps=num_warps_for(block_c * block_hw),
    )


@dataclass(frozen=True)
class RowTiling:
    """Tiling of a (rows, K) matrix reduced along K: programs of [block_r, block_k], each looping
    over ``k_chunks`` chunks of K (a compile-time count)."""

    block_r: int
    block_k: int
    k_chunks: int
    row_blocks: int
    num_warps: int


ROW_BLOCK_K_CUDA = 1024  # weight standardization on CUDA: columns per chunk, for every fan-in


def row_tiling(rows: int, k: int, block_size: int | None = None) -> RowTiling:
    """block_size caps the columns per chunk (tests use a small one to get several chunks per row);
    the rows then fill the default tile.

    On CUDA (no block_size) a weight gets [4 rows, 1024 columns] programs (a fan-in above 4096:
    [1, 4096]) and a power-of-two number of chunks, at most 4 (the extra ones fully masked): the
    generator's 73 weights then compile a handful of variants instead of 17
    (``python -m tests.kernels.compile_check --model 2``); weights are small, so the masked lanes
    cost instructions, not memory traffic. (16 unrolled chunks of 1024 spilled 88 B on sm_90.)"""
    if block_size is None and not interpreting():
        block_k = ROW_BLOCK_K_CUDA if k <= 4 * ROW_BLOCK_K_CUDA else split_tile()
        block_r = split_tile() // block_k
        return RowTiling(
            block_r=block_r,
            block_k=block_k,
            k_chunks=next_power_of_2(cdiv(k, block_k)),
            row_blocks=cdiv(rows, block_r),
            num_warps=num_warps_for(block_r * block_k),
        )
    block_k = min(next_power_of_2(k), split_tile(block_size))
    block_r = max(1, min(next_power_of_2(rows), split_tile() // block_k))
    return RowTiling(
        block_r=block_r,
        block_k=block_k,
        k_chunks=cdiv(k, block_k),
        row_blocks=cdiv(rows, block_r),
        num_warps=num_warps_for(block_r * block_k),
    )
