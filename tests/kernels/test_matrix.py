"""The case matrix of the Triton ops against the float64 reference, forward and every gradient (one
``assert_close`` per gradient, tolerances by dtype from colorizer.testing).

Factors: every activation, with and without residual, no / tensor / in-kernel (Philox) noise, NCHW,
channels_last and mixed layouts, fused and forced-split reductions, fp32 / bf16 / fp16, and a dense
or broadcast (zero-stride) upstream gradient. The full product is hundreds of cases (each one a new
set of compiled variants on a GPU), so the matrix is an all-pairs covering array: every pair of
levels of any two factors appears in at least one case (``all_pairs``).

Where they run (tests/kernels/parity.py): on a GPU every case, compiled; on the CPU, in Triton's
interpreter, the representative subset that still contains every level of every factor at least
once (``cpu_subset``); the other cases are marked ``gpu_only``. Batch 32 at the generator's real
shapes, bitwise determinism and CUDA graphs are GPU tests (tests/kernels/test_gpu.py).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from colorizer.ops import reference
from tests.kernels.parity import DEVICE, channels_last, check_parity, gpu_only, needs_kernels

pytest.importorskip("triton")
from colorizer.kernels.attention_gate import attention_gate  # noqa: E402
from colorizer.kernels.group_norm_act import group_norm_act  # noqa: E402
from colorizer.kernels.noise_inject import noise_inject, noise_inject_philox, philox_noise  # noqa: E402
from colorizer.kernels.weight_standardize import weight_standardize  # noqa: E402
from tests.kernels import test_attention_gate as gate_tests  # noqa: E402
from tests.kernels import test_group_norm_act as gn_tests  # noqa: E402

pytestmark = [pytest.mark.triton, needs_kernels]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def all_pairs(factors: dict[str, list]) -> list[dict]:
    """A small list of cases in which every pair of levels of any two factors occurs (greedy:
    repeatedly take the combination that covers the most uncovered pairs; deterministic)."""
    names = list(factors)
    sizes = [len(factors[n]) for n in names]
    pairs = list(itertools.combinations(range(len(names)), 2))
    uncovered = {(i, a, j, b) for i, j in pairs for a in range(sizes[i]) for b in range(sizes[j])}
    chosen = []
    while uncovered:
        best = max(
            itertools.product(*(range(s) for s in sizes)),
            key=lambda combo: sum((i, combo[i], j, combo[j]) in uncovered for i, j in pairs),
        )
        chosen.append(best)
        uncovered -= {(i, best[i], j, best[j]) for i, j in pairs}
    return [{n: factors[n][k] for n, k in zip(names, combo)} for combo in chosen]


def cpu_subset(cases: list[dict]) -> set[int]:
    """Indices of a few cases that together contain every level of every factor (greedy)."""
    missing = {(n, repr(v)) for case in cases for n, v in case.items()}
    picked: set[int] = set()
    while missing:
        index = max(
            range(len(cases)),
            key=lambda i: (sum((n, repr(v)) in missing for n, v in cases[i].items()), -i),
        )
        picked.add(index)
        missing -= {(n, repr(v)) for n, v in cases[index].items()}
    return picked


def params(cases: list[dict]) -> list:
    on_cpu = cpu_subset(cases)
    return [
        pytest.param(case, id="-".join(str(v) for v in case.values()), marks=() if i in on_cpu else (gpu_only,))
        for i, case in enumerate(cases)
    ]


def upstream(kind: str):
    """check_parity's upstream gradient: dense (None) or broadcast from one value per (n, c)."""
    if kind == "dense":
        return None

    def broadcast(out: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(77)
        per_channel = torch.randn(out.shape[0], out.shape[1], 1, 1, generator=gen).to(out.device, out.dtype)
        dy = per_channel.expand(out.shape)
        assert 0 in dy.stride()
        return dy

    return broadcast


GN_CASES = all_pairs(
    {
        "act": ["none", "relu", "leaky_relu"],
        "residual": [False, True],
        "noise": ["none", "tensor", "philox"],
        "layout": ["nchw", "channels_last", "mixed"],
        "split": [False, True],
        "dtype": list(DTYPES),
        "dy": ["dense", "broadcast"],
    }
)


@pytest.mark.parametrize("case", params(GN_CASES))
def test_group_norm_act_matrix(case):
    shape = (2, 64, 3, 5, 32)
    n, c, h, w, groups = shape
    dtype = DTYPES[case["dtype"]]
    act = None if case["act"] == "none" else case["act"]
    args = gn_tests.make_args(*shape, act=act, residual=case["residual"], noise=case["noise"] != "none", dtype=dtype)
    if case["layout"] in ("channels_last", "mixed"):
        args["x"] = channels_last(args["x"])  # mixed: x channels_last, residual NCHW
    if case["layout"] == "channels_last" and case["residual"]:
        args["residual"] = channels_last(args["residual"])
    block_size = gn_tests.split_block(*shape) if case["split"] else None
    grads = gn_tests.grads_of(args)
    op, kwargs = group_norm_act, {"block_size": block_size}
    if case["noise"] == "philox":
        args["noise"] = philox_noise(n, h, w, seed=11, offset=3, device=DEVICE)  # fp32, as the kernel draws it
        grads = tuple(g for g in grads if g != "noise")

        def op(noise, **kw):
            return group_norm_act(**kw, noise_seed=11, noise_offset=3)

    check_parity(op, reference.group_norm_act, args, grads, dtype=dtype, op_kwargs=kwargs, dy=upstream(case["dy"]))


GATE_CASES = all_pairs(
    {
        "layout": ["nchw", "channels_last", "mixed"],
        "split": [False, True],
        "dtype": list(DTYPES),
        "dy": ["dense", "broadcast"],
    }
)


@pytest.mark.parametrize("case", params(GATE_CASES))
def test_attention_gate_matrix(case):
    dtype = DTYPES[case["dtype"]]
    args = gate_tests.make_args(2, 64, 32, 3, 5, dtype=dtype)
    if case["layout"] == "channels_last":
        for key in ("g_proj", "x_proj", "x"):
            args[key] = channels_last(args[key])
    elif case["layout"] == "mixed":
        args["g_proj"], args["x"] = channels_last(args["g_proj"]), channels_last(args["x"])
    check_parity(
        attention_gate,
        reference.attention_gate,
        args,
        gate_tests.GRADS,
        dtype=dtype,
        op_kwargs={"block_size": 8 if case["split"] else None},
        dy=upstream(case["dy"]),
    )


NOISE_CASES = all_pairs(
    {
        "source": ["tensor", "philox"],
        "layout": ["nchw", "channels_last"],
        "split": [False, True],
        "dtype": list(DTYPES),
        "dy": ["dense", "broadcast"],
    }
)


@pytest.mark.parametrize("case", params(NOISE_CASES))
def test_noise_inject_matrix(case):
    n, c, h, w = 2, 32, 3, 5
    dtype = DTYPES[case["dtype"]]
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(n, c, h, w, generator=gen).to(dtype)
    if case["layout"] == "channels_last":
        x = channels_last(x)
    args = {"x": x, "weight": torch.randn(c, generator=gen)}
    block_size = 4 if case["split"] else None
    if case["source"] == "tensor":
        args["noise"] = torch.randn(n, 1, h, w, generator=gen).to(dtype)
        op, grads = noise_inject, ("x", "weight", "noise")
    else:
        args["noise"] = philox_noise(n, h, w, seed=21, offset=9, device=DEVICE)  # fp32, as the kernel draws it
        grads = ("x", "weight")

        def op(x, weight, noise, block_size):
            return noise_inject_philox(x, weight, seed=21, offset=9, block_size=block_size)

    check_parity(
        op,
        reference.noise_inject,
        args,
        grads,
        dtype=dtype,
        op_kwargs={"block_size": block_size},
        dy=upstream(case["dy"]),
    )


WS_CASES = all_pairs({"layout": ["contiguous", "channels_last"], "chunked": [False, True], "dtype": list(DTYPES)})


@pytest.mark.parametrize("case", params(WS_CASES))
def test_weight_standardize_matrix(case):
    dtype = DTYPES[case["dtype"]]
    gen = torch.Generator().manual_seed(3)
    w = (torch.randn(12, 6, 3, 3, generator=gen) * 0.02 + 0.01).to(dtype)
    if case["layout"] == "channels_last":
        w = channels_last(w)
    check_parity(
        weight_standardize,
        reference.weight_standardize,
        {"w": w, "eps": 1e-5},
        ("w",),
        dtype=dtype,
        op_kwargs={"block_size": 16 if case["chunked"] else None},
    )


def test_all_pairs_covers_every_pair_and_the_cpu_subset_every_level():
    factors = {"a": [1, 2, 3], "b": [True, False], "c": ["x", "y", "z"], "d": [0, 1]}
    cases = all_pairs(factors)
    for (f1, l1), (f2, l2) in itertools.combinations(factors.items(), 2):
        for v1, v2 in itertools.product(l1, l2):
            assert any(case[f1] == v1 and case[f2] == v2 for case in cases), (f1, v1, f2, v2)
    assert len(cases) < len(list(itertools.product(*factors.values())))
    subset = [cases[i] for i in cpu_subset(cases)]
    for name, levels in factors.items():
        assert {case[name] for case in subset} == set(levels)
