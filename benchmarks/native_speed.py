"""Native (colorizer._C) against eager PyTorch on the CPU: the fused op and the whole generator.

    python -m benchmarks.native_speed [--quick] --out DIR

1. ``group_norm_act`` at every GroupNorm call of the generator (batch 1; 256x256 and 512x512): the
   eager composition (F.group_norm, + residual, ReLU, + noise: ``colorizer.ops.reference``) against
   the fused native op on the same inputs. One row per distinct (shape, act, residual, noise), with
   how many times the generator calls it; the per-resolution total weights each row by that count.
2. The whole Sketch2Color generator forward (batch 1, fixed noise seed, inference mode), eager and
   native, as trained (weight standardization on every forward), folded for inference
   (``fold_weight_standardization``), and folded in channels_last (model and input). An onnxruntime
   row is left to the export benchmarks.

Times are wall-clock medians with p20/p80 over repeated runs after warm-up; ratio = eager / native
(> 1: native is faster). Writes DIR/native_speed.json and DIR/native_speed.md with the CPU, thread
count, versions and git revision. ``--device cuda`` (on a GPU, with colorizer._C built with CUDA)
runs the same rows on the GPU and adds the Triton backend (colorizer.kernels) as a third column;
it writes DIR/native_speed_cuda.{json,md}. ``--quick`` runs 256x256 only with few repetitions, to check
that the script works; the committed numbers come from a full run on a quiet machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from colorizer import native
from colorizer.models import Sketch2Color, fold_weight_standardization
from colorizer.ops import OpSet, get_ops, reference


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def environment(device: str) -> dict:
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "cuda": torch.version.cuda,
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "native_cpu_capability": native.NATIVE_CPU_CAPABILITY,
        "git": git_revision(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def measure(fn: Callable[[], object], reps: int, warmup: int = 2, device: str = "cpu") -> dict:
    """Wall-clock seconds of fn(): median, p20, p80 over reps runs after warmup runs (on CUDA each
    run is synchronized, so it is the device time plus the launch overhead)."""

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    q = statistics.quantiles(times, n=5) if len(times) >= 2 else [times[0]] * 4
    return {"median_s": statistics.median(times), "p20_s": q[0], "p80_s": q[3], "reps": reps}


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

    ops = OpSet("record", eager.weight_standardize, record, eager.noise_inject, gate)
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
                times[name] = measure(lambda fn=fn, args=args: fn(*args), reps, device=device)
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
                times[kernels] = measure(lambda net=net, inp=inp: net(inp, noise=0), reps, warmup=1, device=device)
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
        f"Device: {env['device']}; CPU: {env['cpu']}, {env['threads']} threads; "
        f"torch {env['torch']} (CUDA {env['cuda']}); Python {env['python']}; "
        f"native vectors: {env['native_cpu_capability']}; git {env['git']}; {env['date_utc']} UTC; "
        f"mode: {result['mode']}.",
        "",
        "Median wall time (p20-p80); ratio = eager / native (> 1: native faster).",
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
    print(f"native_speed: {result['environment']}", flush=True)
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
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "native_speed" if args.device == "cpu" else "native_speed_cuda"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
