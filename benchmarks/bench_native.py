"""Native (colorizer._C) against eager PyTorch: the fused ops and the whole generator.

Script (JSON + Markdown report)::

    python -m benchmarks.bench_native [--quick] --out DIR [--device cpu|cuda] [--threads N]

1. ``group_norm_act`` at every GroupNorm call of the generator (batch 1; 256x256 and 512x512): the
   eager composition (F.group_norm, + residual, ReLU, + noise: ``colorizer.ops.reference``) against
   the fused native op on the same inputs. One row per distinct (shape, act, residual, noise), with
   how many times the generator calls it; the per-resolution total weights each row by that count.
2. The whole Sketch2Color generator forward (batch 1, fixed noise seed, inference mode), eager and
   native, as trained (weight standardization on every forward), folded for inference
   (``fold_weight_standardization``), and folded in channels_last (model and input). An onnxruntime
   row is left to the export benchmarks (``benchmarks.bench_export``).

Times: ``benchmarks.timing.measure`` (warm-up excluded; median with p20/p80 of the rounds;
perf_counter on the CPU, CUDA events on a GPU); ratio = eager / native (> 1: native is faster).
Writes DIR/native_speed.json and DIR/native_speed.md (``benchmarks.environment``: device, versions,
git revision, threads, load). ``--device cuda`` (on a GPU, with colorizer._C built with CUDA) runs the
same rows on the GPU and adds the Triton backend (colorizer.kernels) as a third column; it writes
DIR/native_speed_cuda.{json,md}. ``--quick`` runs 256x256 only with few repetitions, to check that the
script works; the committed numbers come from a full run on a quiet machine.

pytest-benchmark cases (native against eager, side by side, at the generator's shapes)::

    pytest benchmarks/bench_native.py --benchmark-only [--bench-device cpu] [--bench-dtype bfloat16]

Shapes are the generator's (batch 1, 256x256 input): the first encoder level, a mid level with a
residual and noise, and a deep level. Device, dtype, rounds and warm-up come from the suite's
options (benchmarks/conftest.py); inputs that the native kernels do not cover (float16 on the CPU)
run the reference in both columns.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from benchmarks.environment import collect_environment, format_environment
from benchmarks.output import write_result
from benchmarks.timing import measure
from colorizer import native
from colorizer.models import Sketch2Color, fold_weight_standardization
from colorizer.ops import get_ops, reference


def environment(device: str) -> dict:
    env = collect_environment(device)
    env["native_cpu_capability"] = native.NATIVE_CPU_CAPABILITY
    return env


def timed(fn: Callable[[], object], rounds: int, warmup: int, device: str) -> dict:
    """median_s, p20_s, p80_s and rounds of ``fn()`` (``benchmarks.timing.measure``, fixed rounds)."""
    t = measure(fn, device=device, warmup=warmup, min_rounds=rounds, max_rounds=rounds, target_s=0.0)
    return {"median_s": t.median_s, "p20_s": t.p20_s, "p80_s": t.p80_s, "rounds": t.rounds}


def generator_group_norm_calls(size: int) -> Counter:
    """(shape, act, has_residual, has_noise) -> number of group_norm_act calls in one generator forward.

    Runs the generator on the meta device (shapes only, no arithmetic) through a recording OpSet.
    """
    calls: Counter = Counter()
    eager = get_ops("eager")

    def record(x, weight, bias, groups=32, eps=1e-5, act=None, residual=None, noise_weight=None, noise=None):
        calls[(tuple(x.shape), act or "none", residual is not None, noise is not None)] += 1
        return eager.group_norm_act(x, weight, bias, groups, eps, act, residual, noise_weight, noise)

    def gate(g_proj, x_proj, x, gw, gb, xw, xb, psi_w, psi_b, groups=32, eps=1e-5):
        # The native gate runs relu(GN(x_proj) + GN(g_proj)) as two group_norm_act calls.
        g1 = record(g_proj, gw, gb, groups, eps)
        p = record(x_proj, xw, xb, groups, eps, "relu", g1)
        q = torch.nn.functional.conv2d(p, psi_w.reshape(1, -1, 1, 1), psi_b)
        return x * torch.sigmoid(torch.nn.functional.instance_norm(q, eps=eps))

    ops = dataclasses.replace(eager, name="record", group_norm_act=record, attention_gate=gate)
    with torch.device("meta"):
        model = Sketch2Color(kernels=ops)
        x = torch.empty(1, 30, size, size)
    with torch.no_grad():
        model(x, noise=[torch.empty(s, device="meta") for s in _noise_shapes(size)])
    return calls


def _noise_shapes(size: int):
    from colorizer.models import noise_shapes

    return noise_shapes(1, size, size)


def providers(device: str) -> dict[str, Callable]:
    """Provider name -> group_norm_act: eager and native always; Triton too on CUDA when it imports."""
    found = {"eager": reference.group_norm_act, "native": native.group_norm_act}
    if device == "cuda":
        try:
            found["triton"] = get_ops("triton").group_norm_act
        except Exception as exc:  # a missing or broken optional backend only drops its column
            print(f"  triton: not measured ({exc})", flush=True)
    return found


def bench_group_norm_act(size: int, reps: int, device: str) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    fns = providers(device)
    for (shape, act, has_res, has_noise), count in sorted(generator_group_norm_calls(size).items()):
        c = shape[1]

        def make(*s):
            return torch.randn(*s, generator=gen).to(device)

        x = make(shape)
        w, b = 1 + 0.1 * make(c), 0.1 * make(c)
        res = make(shape) if has_res else None
        nw = make(c) if has_noise else None
        noise = make((shape[0], 1, *shape[2:])) if has_noise else None
        args = (x, w, b, 32, 1e-5, None if act == "none" else act, res, nw, noise)
        times = {}
        with torch.inference_mode():
            for name, fn in fns.items():
                times[name] = timed(lambda fn=fn, args=args: fn(*args), reps, 2, device)
        row = {"size": size, "shape": list(shape), "act": act, "residual": has_res, "noise": has_noise}
        row.update({"calls": count, **times})
        row["ratio"] = times["eager"]["median_s"] / times["native"]["median_s"]
        if "triton" in times:
            row["triton_ratio"] = times["eager"]["median_s"] / times["triton"]["median_s"]
        row["native_GBps"] = _bytes(shape, has_res, has_noise) / times["native"]["median_s"] / 1e9
        rows.append(row)
        line = "  ".join(f"{name} {t['median_s'] * 1e3:8.3f} ms" for name, t in times.items())
        print(
            f"  {size}px {str(shape):22s} act={act:10s} res={has_res!s:5s} noise={has_noise!s:5s} "
            f"x{count}: {line}  {row['ratio']:.2f}x",
            flush=True,
        )
    return rows


def _bytes(shape, has_res: bool, has_noise: bool) -> float:
    """Compulsory memory traffic of the fused op in float32: read x (+ residual, noise), write y."""
    numel = 1
    for s in shape:
        numel *= s
    spatial = numel // shape[1]
    return 4.0 * (numel * (2 + has_res) + (spatial if has_noise else 0))


def bench_generator(size: int, reps: int, device: str) -> list[dict]:
    torch.manual_seed(0)
    model = Sketch2Color().eval().to(device)
    x = torch.randn(1, 30, size, size, device=device)
    backends = ["eager", "native"] + (["triton"] if "triton" in providers(device) else [])
    folded = fold_weight_standardization(model)
    cl = torch.channels_last
    variants = (
        ("trained (WS every forward)", model, x),
        ("folded WS (inference)", folded, x),
        # Same folded model and input in channels_last (mkldnn convolutions skip their reorders).
        ("folded WS, channels_last", copy.deepcopy(folded).to(memory_format=cl), x.contiguous(memory_format=cl)),
    )
    rows = []
    eager_nchw = None
    for variant, net, inp in variants:
        times = {}
        for kernels in backends:
            net.set_kernels(kernels)
            with torch.inference_mode():
                times[kernels] = timed(lambda net=net, inp=inp: net(inp, noise=0), reps, 1, device)
        row = {"size": size, "variant": variant, **times}
        row["ratio"] = times["eager"]["median_s"] / times["native"]["median_s"]
        if variant.startswith("folded WS (inference)"):
            eager_nchw = times["eager"]["median_s"]
        elif eager_nchw is not None:
            # What switching both the layout and the backend gains over the plain folded eager model.
            row["ratio_vs_eager_nchw"] = eager_nchw / times["native"]["median_s"]
        if "triton" in times:
            row["triton_ratio"] = times["eager"]["median_s"] / times["triton"]["median_s"]
        rows.append(row)
        line = "  ".join(f"{name} {t['median_s']:.3f} s" for name, t in times.items())
        print(f"  generator {size}px {variant}: {line}  {row['ratio']:.2f}x", flush=True)
    return rows


def _ms(m: dict) -> str:
    return f"{m['median_s'] * 1e3:.3f} ({m['p20_s'] * 1e3:.3f}-{m['p80_s'] * 1e3:.3f})"


def _s(m: dict) -> str:
    return f"{m['median_s']:.3f} ({m['p20_s']:.3f}-{m['p80_s']:.3f})"


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        "# Native (colorizer._C) vs eager"
        + (" and Triton" if result["device"] == "cuda" else "")
        + f" ({result['device']})",
        "",
        *format_environment(env),
        f"- native vectors: {env['native_cpu_capability']}; mode: {result['mode']}",
        "",
        "Median time per call (p20-p80); ratio = eager / native (> 1: native faster).",
        "",
        "## group_norm_act at the generator's GroupNorm calls (batch 1)",
        "",
    ]
    triton = any("triton" in r for r in result["group_norm_act"])
    extra_head = " triton ms | eager / triton |" if triton else ""
    lines += [
        "| size | shape | act | residual | noise | calls | eager ms | native ms | eager / native | native GB/s |"
        + extra_head,
        "| --- " * (10 + 2 * triton) + "|",
    ]
    for r in result["group_norm_act"]:
        extra = f" {_ms(r['triton'])} | {r['triton_ratio']:.2f} |" if "triton" in r else (" - | - |" if triton else "")
        lines.append(
            f"| {r['size']} | {tuple(r['shape'])} | {r['act']} | {r['residual']} | {r['noise']} | {r['calls']} | "
            f"{_ms(r['eager'])} | {_ms(r['native'])} | {r['ratio']:.2f} | {r['native_GBps']:.1f} |" + extra
        )
    lines += ["", "Per resolution, every call of one forward (time x calls):", ""]
    lines += ["| size | eager ms | native ms | ratio |", "| --- | --- | --- | --- |"]
    for t in result["group_norm_act_totals"]:
        lines.append(f"| {t['size']} | {t['eager_ms']:.2f} | {t['native_ms']:.2f} | {t['ratio']:.2f} |")
    lines += [
        "",
        "## Whole Sketch2Color generator forward (batch 1, inference mode)",
        "",
        "| size | variant | eager s | native s | eager / native |" + (" triton s | eager / triton |" if triton else ""),
        "| --- " * (5 + 2 * triton) + "|",
    ]
    for r in result["generator"]:
        extra = f" {_s(r['triton'])} | {r['triton_ratio']:.2f} |" if "triton" in r else (" - | - |" if triton else "")
        lines.append(
            f"| {r['size']} | {r['variant']} | {_s(r['eager'])} | {_s(r['native'])} | {r['ratio']:.2f} |" + extra
        )
    for r in result["generator"]:
        if "ratio_vs_eager_nchw" in r:
            lines.append(
                f"\n{r['size']}px: native channels_last vs the folded eager NCHW model: {r['ratio_vs_eager_nchw']:.2f}x"
            )
    lines += ["", "onnxruntime: not measured here (see the export benchmarks).", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# pytest-benchmark cases (collected by benchmarks/conftest.py; run with --benchmark-only).

pytestmark = pytest.mark.skipif(not native.NATIVE_AVAILABLE, reason=f"{native.NATIVE_UNAVAILABLE_REASON}")

OPS = {"eager": reference, "native": native}

# name -> (shape, act, residual, noise)
GN_CASES = {
    "enc1_conv1_relu": ((1, 64, 256, 256), "relu", False, False),
    "enc1_conv2_res_relu": ((1, 64, 256, 256), "relu", True, False),
    "dec3_res_relu_noise": ((1, 256, 64, 64), "relu", True, True),
    "enc5_res_relu": ((1, 512, 16, 16), "relu", True, False),
}


def _run(benchmark, bench_options, fn, *args):
    with torch.inference_mode():
        return benchmark.pedantic(
            fn, args=args, rounds=bench_options.rounds, warmup_rounds=bench_options.warmup, iterations=1
        )


def _tensor(bench_options, *shape, gen):
    return torch.randn(*shape, generator=gen).to(bench_options.device, getattr(torch, bench_options.dtype))


@pytest.mark.parametrize("provider", list(OPS))
@pytest.mark.parametrize("case", list(GN_CASES))
def test_group_norm_act(benchmark, bench_options, case, provider):
    shape, act, has_res, has_noise = GN_CASES[case]
    gen = torch.Generator().manual_seed(0)
    c = shape[1]
    x = _tensor(bench_options, shape, gen=gen)
    w, b = _tensor(bench_options, c, gen=gen), _tensor(bench_options, c, gen=gen)
    res = _tensor(bench_options, shape, gen=gen) if has_res else None
    nw = _tensor(bench_options, c, gen=gen) if has_noise else None
    noise = _tensor(bench_options, shape[0], 1, *shape[2:], gen=gen) if has_noise else None
    benchmark.group = f"group_norm_act {case}"
    out = _run(benchmark, bench_options, OPS[provider].group_norm_act, x, w, b, 32, 1e-5, act, res, nw, noise)
    assert out.shape == x.shape


@pytest.mark.parametrize("provider", list(OPS))
@pytest.mark.parametrize("shape", [(512, 512, 3, 3), (256, 128, 3, 3)], ids=str)
def test_weight_standardize(benchmark, bench_options, shape, provider):
    w = _tensor(bench_options, shape, gen=torch.Generator().manual_seed(0)) * 0.02
    benchmark.group = f"weight_standardize {shape}"
    out = _run(benchmark, bench_options, OPS[provider].weight_standardize, w, 1e-5)
    assert out.shape == w.shape


@pytest.mark.parametrize("provider", list(OPS))
def test_noise_inject(benchmark, bench_options, provider):
    gen = torch.Generator().manual_seed(0)
    x, w = _tensor(bench_options, 1, 32, 256, 256, gen=gen), _tensor(bench_options, 32, gen=gen)
    n = _tensor(bench_options, 1, 1, 256, 256, gen=gen)
    benchmark.group = "noise_inject (1, 32, 256, 256)"
    out = _run(benchmark, bench_options, OPS[provider].noise_inject, x, w, n)
    assert out.shape == x.shape


# --------------------------------------------------------------------------------------------------
# Script


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="256x256 only, few repetitions (a smoke run)")
    parser.add_argument("--out", type=Path, required=True, help="folder for native_speed.json and native_speed.md")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda adds the Triton backend")
    args = parser.parse_args(argv)
    if not native.NATIVE_AVAILABLE:
        print(f"error: {native.NATIVE_UNAVAILABLE_REASON}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not (torch.cuda.is_available() and native.NATIVE_WITH_CUDA):
        print("error: --device cuda needs a CUDA device and colorizer._C built with CUDA", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = (256,) if args.quick else (256, 512)
    op_reps, gen_reps = (5, 2) if args.quick else (30, 7)
    result = {"mode": "quick" if args.quick else "full", "device": args.device, "environment": environment(args.device)}
    print(f"bench_native: {result['environment']['device_name']}, {torch.get_num_threads()} threads", flush=True)
    result["group_norm_act"] = []
    result["group_norm_act_totals"] = []
    for size in sizes:
        rows = bench_group_norm_act(size, op_reps, args.device)
        result["group_norm_act"] += rows
        eager = sum(r["eager"]["median_s"] * r["calls"] for r in rows)
        fused = sum(r["native"]["median_s"] * r["calls"] for r in rows)
        result["group_norm_act_totals"].append(
            {"size": size, "eager_ms": eager * 1e3, "native_ms": fused * 1e3, "ratio": eager / fused}
        )
    result["generator"] = []
    for size in sizes:
        result["generator"] += bench_generator(size, gen_reps, args.device)
    stem = "native_speed" if args.device == "cpu" else "native_speed_cuda"
    json_path, md_path = write_result(args.out, stem, result, markdown(result))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
