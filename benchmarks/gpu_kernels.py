"""GPU benchmark of the fused Triton ops (issue 3): eager vs torch.compile vs Triton, side by side.

    python -m benchmarks.gpu_kernels --out benchmarks/results/gpu_kernels [--quick]
    python -m benchmarks.gpu_kernels --list-sites          # the generator's sites; runs anywhere

What it measures, in one run on one GPU:
- Every GroupNorm site of the reference generator (Sketch2Color) at 256x256, listed programmatically by
  running the model on the ``meta`` device with a recording op set (each distinct configuration once,
  with how many times the model calls it), plus the attention gates, the standalone noise
  injections and the weight standardization of all WSConv2d layers at once. Batch 2 and 32, fp32 and
  bf16, NCHW and channels_last, forward and forward+backward.
- Providers: ``eager`` (the pure-torch reference, colorizer.ops.reference), ``compile``
  (torch.compile of that same eager function) and ``triton`` (colorizer.kernels).
- Timing: CUDA-graph replay of K back-to-back calls on K different input copies (K chosen so the
  inputs exceed 3x the L2 cache: every call reads from HBM), median per call, p20/p80 spread
  (benchmarks.timing.measure). A provider that cannot be captured is an error (never timed another
  way); every error is recorded with its whole message and traceback, listed in the Markdown, and
  makes the exit status 1. ``benchmarks.gpu_check`` is the one-call device script built on these
  cases.
- Bandwidth: the bytes each op must move at least (inputs read once, outputs written once) divided
  by the time, against (a) a plain copy of the same activation in the same layout, timed the same way
  (T_copy; the issue's targets are multiples of it) and (b) the copy bandwidth of a 1 GiB buffer
  measured in the same run.
- Whole model: generator forward, and one GAN train step: the trainer's own
  (``colorizer.train.step.GanStep`` through ``benchmarks.bench_train_step.lean_step``: device palettes,
  D update, G update with D frozen, all loss terms, non-finite checks, Adam), batch 32 (2 with
  --quick), ``--amp bf16``, channels_last; eager, compile, triton and triton+compile; images/s.

Writes ``gpu_kernels.json`` (everything, with device, versions, git revision and date) and
``gpu_kernels.md`` (the side-by-side tables) into --out. Exits with a one-line error when there is
no CUDA device or no Triton. torch.compile time is excluded (warm-up), but a full run compiles a graph
per shape and takes long: --quick times a subset (batch 2, both dtypes, NCHW; the smallest, median
and largest GroupNorm sites, the largest one with noise, the largest gate, and weight standardization).
Timing and environment come from the shared ``benchmarks.timing`` and ``benchmarks.environment``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmarks.output import write_result
from colorizer.errors import ConfigError, MissingDependencyError, run_cli
from colorizer.ops import OpSet, reference

IMAGE_SIZE = 256
GROUPS = 32
EPS = 1e-5
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = ("nchw", "channels_last")


# --------------------------------------------------------------------------------------------------
# Sites of the model (works on any machine: the model runs on the meta device)
# --------------------------------------------------------------------------------------------------


@dataclass
class Site:
    """One distinct call of a fused op in the generator: op name, shapes and options, and how many
    times one forward calls it."""

    op: str
    shape: tuple[int, ...]  # x for group_norm_act / noise_inject; g_proj for the gate; weight for WS
    extra: dict = field(default_factory=dict)  # act, residual, noise / x channels / all WS shapes
    count: int = 1

    def key(self) -> tuple:
        return (self.op, self.shape, tuple(sorted(self.extra.items())))

    def label(self) -> str:
        shape = "x".join(map(str, self.shape))
        if self.op == "group_norm_act":
            parts = [self.extra["act"] or "none"] + [k for k in ("residual", "noise") if self.extra[k]]
            return f"GN {shape} {'+'.join(parts)}"
        if self.op == "attention_gate":
            return f"gate {shape} x{self.extra['x_channels']}"
        if self.op == "noise_inject":
            return f"noise {shape}"
        return f"WS {self.extra['layers']} layers"


def generator_sites(batch: int, size: int = IMAGE_SIZE, channels=None) -> list[Site]:
    """The fused-op calls of one Sketch2Color forward at (batch, 30, size, size), deduplicated, in
    call order. Runs on the meta device: no memory, no GPU, no time."""
    from colorizer.models import Sketch2Color, noise_shapes
    from colorizer.models.generator import REFERENCE_CHANNELS

    sites: dict[tuple, Site] = {}
    ws_shapes: list[tuple[int, ...]] = []

    def add(site: Site) -> None:
        if site.key() in sites:
            sites[site.key()].count += 1
        else:
            sites[site.key()] = site

    def ws(w, eps=EPS):
        ws_shapes.append(tuple(w.shape))
        return reference.weight_standardize(w, eps)

    def gn(x, weight, bias, groups=GROUPS, eps=EPS, act=None, residual=None, noise_weight=None, noise=None):
        extra = {"act": act, "residual": residual is not None, "noise": noise is not None}
        add(Site("group_norm_act", tuple(x.shape), extra))
        return reference.group_norm_act(x, weight, bias, groups, eps, act, residual, noise_weight, noise)

    def noise_inject(x, weight, noise):
        add(Site("noise_inject", tuple(x.shape)))
        return reference.noise_inject(x, weight, noise)

    def gate(g_proj, x_proj, x, *params, **kwargs):
        add(Site("attention_gate", tuple(g_proj.shape), {"x_channels": x.shape[1]}))
        return reference.attention_gate(g_proj, x_proj, x, *params, **kwargs)

    recorder = OpSet("record", ws, gn, noise_inject, gate)
    with torch.device("meta"):
        model = Sketch2Color(channels=channels or REFERENCE_CHANNELS)
        x = torch.empty(batch, 30, size, size)
        noise = [torch.empty(s) for s in noise_shapes(batch, size, size)]
    model.set_kernels(recorder)
    with torch.no_grad():
        model(x, noise=noise)
    out = list(sites.values())
    out.append(Site("weight_standardize", (len(ws_shapes),), {"layers": len(ws_shapes), "shapes": tuple(ws_shapes)}))
    return out


# --------------------------------------------------------------------------------------------------
# Op cases: inputs, the three providers, bytes moved
# --------------------------------------------------------------------------------------------------


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" and t.dim() == 4 else t


@dataclass
class Case:
    """Input copies (one dict per rotation), the differentiable argument names, the eager function
    of those arguments, the Triton one, and the minimum bytes of forward and backward."""

    copies: list[dict]
    grad_names: tuple[str, ...]
    eager: Callable
    triton: Callable
    fwd_bytes: int
    bwd_bytes: int
    copy_tensors: list[torch.Tensor]  # the main activation of each copy: T_copy copies them


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def build_case(site: Site, dtype: torch.dtype, layout: str, rotations: int, device: str = "cuda") -> Case:
    from colorizer.kernels.attention_gate import attention_gate
    from colorizer.kernels.group_norm_act import group_norm_act
    from colorizer.kernels.noise_inject import noise_inject
    from colorizer.kernels.weight_standardize import weight_standardize

    dev = device

    def act_tensor(*shape):
        return _layout(torch.randn(*shape, device=dev, dtype=dtype), layout)

    def param(c, scale=0.1, offset=0.0):
        return (torch.randn(c, device=dev) * scale + offset).requires_grad_()

    if site.op == "group_norm_act":
        n, c, h, w = site.shape
        e = site.extra
        weight, bias = param(c, offset=1.0), param(c)
        nw = param(c) if e["noise"] else None
        copies = []
        for _ in range(rotations):
            copies.append(
                {
                    "x": act_tensor(n, c, h, w).requires_grad_(),
                    "residual": act_tensor(n, c, h, w).requires_grad_() if e["residual"] else None,
                    "noise": torch.randn(n, 1, h, w, device=dev, dtype=dtype) if e["noise"] else None,
                    "weight": weight,
                    "bias": bias,
                    "noise_weight": nw,
                }
            )
        act = e["act"]

        def eager(x, weight, bias, residual, noise_weight, noise):
            return reference.group_norm_act(x, weight, bias, GROUPS, EPS, act, residual, noise_weight, noise)

        def fused(x, weight, bias, residual, noise_weight, noise):
            return group_norm_act(x, weight, bias, GROUPS, EPS, act, residual, noise_weight, noise)

        first = copies[0]
        grads = tuple(k for k in ("x", "residual", "weight", "bias", "noise_weight") if first[k] is not None)
        x, r, nz = first["x"], first["residual"], first["noise"]
        fwd = _nbytes(x, r, nz) + _nbytes(x)
        bwd = 2 * _nbytes(x) + _nbytes(r, nz) + _nbytes(x, r)  # read dy, x, r, noise; write dx, dr
        return Case(copies, grads, eager, fused, fwd, bwd, [c["x"] for c in copies])

    if site.op == "attention_gate":
        n, f, h, w = site.shape
        cl = site.extra["x_channels"]
        params = {
            "g_norm_weight": param(f, offset=1.0),
            "g_norm_bias": param(f),
            "x_norm_weight": param(f, offset=1.0),
            "x_norm_bias": param(f),
            "psi_weight": param(f, scale=f**-0.5),
            "psi_bias": param(1),
        }
        copies = [
            {
                "g_proj": act_tensor(n, f, h, w).requires_grad_(),
                "x_proj": act_tensor(n, f, h, w).requires_grad_(),
                "x": act_tensor(n, cl, h, w).requires_grad_(),
                **params,
            }
            for _ in range(rotations)
        ]

        def eager(**kw):
            return reference.attention_gate(**kw, groups=GROUPS, eps=EPS)

        def fused(**kw):
            return attention_gate(**kw, groups=GROUPS, eps=EPS)

        first = copies[0]
        acts = (first["g_proj"], first["x_proj"], first["x"])
        fwd = _nbytes(*acts) + _nbytes(first["x"])
        bwd = _nbytes(first["x"]) + _nbytes(*acts) + _nbytes(*acts)
        return Case(copies, tuple(first), eager, fused, fwd, bwd, [c["x"] for c in copies])

    if site.op == "noise_inject":
        n, c, h, w = site.shape
        weight = param(c)
        copies = [
            {
                "x": act_tensor(n, c, h, w).requires_grad_(),
                "weight": weight,
                "noise": torch.randn(n, 1, h, w, device=dev, dtype=dtype),
            }
            for _ in range(rotations)
        ]
        first = copies[0]
        fwd = 2 * _nbytes(first["x"]) + _nbytes(first["noise"])
        bwd = _nbytes(first["x"]) + _nbytes(first["noise"])  # read dy, noise (dx is dy)
        return Case(copies, ("x", "weight"), reference.noise_inject, noise_inject, fwd, bwd, [c["x"] for c in copies])

    # weight_standardize: every WSConv2d weight of the generator in one case.
    shapes = site.extra["shapes"]
    copies = [
        {f"w{i}": (torch.randn(s, device=dev) * 0.02).to(dtype).requires_grad_() for i, s in enumerate(shapes)}
        for _ in range(rotations)
    ]

    def eager_ws(**weights):
        return [reference.weight_standardize(w, EPS) for w in weights.values()]

    def fused_ws(**weights):
        return [weight_standardize(w, EPS) for w in weights.values()]

    total = sum(_nbytes(w) for w in copies[0].values())
    elements = total // torch.tensor([], dtype=dtype).element_size()
    flats = [torch.randn(elements, device=dev).to(dtype) for _ in copies]
    return Case(copies, tuple(copies[0]), eager_ws, fused_ws, 2 * total, 3 * total, flats)


def rotations_for(site: Site, dtype: torch.dtype, quick: bool) -> int:
    """Input copies so that one graph replay streams more than 3x the L2 cache from HBM."""
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 * 2**20)
    elem = torch.tensor([], dtype=dtype).element_size()
    if site.op == "weight_standardize":
        per_copy = sum(math.prod(s) for s in site.extra["shapes"]) * elem
    else:
        per_copy = math.prod(site.shape) * elem * (3 if site.op == "attention_gate" else 2)
    return max(2, min(64 if not quick else 16, math.ceil(3 * l2 / max(per_copy, 1))))


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def _outputs(result):
    return result if isinstance(result, list | tuple) else [result]


def make_runner(fn: Callable, case: Case, backward: bool) -> Callable[[], None]:
    """One call of fn per input copy (forward, or forward + gradients of every differentiable input
    with a fixed upstream gradient)."""
    dys = []
    if backward:
        with torch.no_grad():
            for copy in case.copies:
                outs = _outputs(fn(**copy))
                dys.append([torch.randn_like(o) for o in outs])

    def run() -> None:
        for i, copy in enumerate(case.copies):
            if backward:
                outs = _outputs(fn(**copy))
                inputs = [copy[k] for k in case.grad_names]
                torch.autograd.grad(outs, inputs, dys[i])
            else:
                with torch.no_grad():
                    fn(**copy)

    return run


def time_per_call(run: Callable[[], None], calls: int, quick: bool) -> dict:
    from benchmarks.timing import measure

    # Always a CUDA-graph replay: a provider that cannot be captured is an error of its row (the
    # caller records it), not a silent switch to another timing method.
    t = measure(run, device="cuda", warmup=3, min_rounds=5, max_rounds=10 if quick else 30, cuda_graph=True)
    return {
        "median_s": t.median_s / calls,
        "p20_s": t.p20_s / calls,
        "p80_s": t.p80_s / calls,
        "rounds": t.rounds,
        "method": t.method,
    }


def error_entry(exc: BaseException) -> dict:
    """The whole exception (type, message, traceback tail) for the results: never shortened to a line."""
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": text[-4000:]}


def compiled(fn: Callable) -> Callable:
    return torch.compile(fn, dynamic=False)


def bench_site(site: Site, dtype_name: str, layout: str, quick: bool, copy_bw: float) -> list[dict]:
    dtype = DTYPES[dtype_name]
    rotations = rotations_for(site, dtype, quick)
    case = build_case(site, dtype, layout, rotations)
    # T_copy: each copy's main activation copied once into a tensor of the same layout.
    srcs = [t.detach() for t in case.copy_tensors]
    dsts = [torch.empty_like(t) for t in srcs]
    t_copy = time_per_call(lambda: [d.copy_(s) for d, s in zip(dsts, srcs)], rotations, quick)["median_s"]
    providers = {"eager": case.eager, "compile": compiled(case.eager), "triton": case.triton}
    rows = []
    for mode, backward in (("forward", False), ("forward+backward", True)):
        nbytes = case.fwd_bytes + (case.bwd_bytes if backward else 0)
        row = {
            "site": site.label(),
            "op": site.op,
            "shape": list(site.shape),
            "calls_per_forward": site.count,
            "dtype": dtype_name,
            "layout": layout,
            "mode": mode,
            "min_bytes": nbytes,
            "t_copy_s": t_copy,
            "rotations": rotations,
        }
        for name, fn in providers.items():
            try:
                row[name] = time_per_call(make_runner(fn, case, backward), rotations, quick)
            except Exception as exc:  # noqa: BLE001 (recorded in full, counted, and the exit status is 1)
                torch.cuda.synchronize()
                row[name] = error_entry(exc)
        tri = row["triton"].get("median_s")
        if tri:
            row["triton_gbps"] = nbytes / tri / 1e9
            row["triton_fraction_of_copy_bw"] = nbytes / tri / copy_bw
            row["triton_x_t_copy"] = tri / t_copy
            for base in ("eager", "compile"):
                if row[base].get("median_s"):
                    row[f"speedup_vs_{base}"] = row[base]["median_s"] / tri
        rows.append(row)
        print(_row_line(row), flush=True)
    return rows


def measure_copy_bw(quick: bool) -> float:
    """Bytes/s (read + write) of a device-to-device copy of a 1 GiB buffer."""
    from benchmarks.timing import measure

    src = torch.empty(2**28, device="cuda", dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), device="cuda", warmup=3, min_rounds=5, max_rounds=10 if quick else 30)
    return 2 * 2**30 / t.median_s


# --------------------------------------------------------------------------------------------------
# Whole model
# --------------------------------------------------------------------------------------------------


def bench_whole_model(batch: int, quick: bool) -> list[dict]:
    """Generator forward and one GAN train step, bf16 autocast, channels_last, images/s, for each
    provider."""
    results = []
    for provider in ("eager", "compile", "triton", "triton+compile"):
        results.extend(_bench_model_provider(provider, batch, quick))
        torch.cuda.empty_cache()
    return results


def _bench_model_provider(provider: str, batch: int, quick: bool) -> list[dict]:
    from benchmarks.bench_train_step import TrainCase, build_step, lean_step
    from benchmarks.timing import measure
    from colorizer.models import Sketch2Color

    kernels = "triton" if provider.startswith("triton") else "eager"
    torch.manual_seed(0)
    gen = Sketch2Color(kernels=kernels).cuda().to(memory_format=torch.channels_last)
    g_fn = compiled(gen) if provider.endswith("compile") else gen
    cond = torch.randn(batch, 30, IMAGE_SIZE, IMAGE_SIZE, device="cuda").to(memory_format=torch.channels_last)
    real = torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device="cuda").mul(2).sub(1)
    real = real.to(memory_format=torch.channels_last)

    def forward():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            g_fn(cond)

    # The trainer's step on its own models (G compiled as the trainer's --compile does; D eager).
    gan, _ = build_step(TrainCase(batch=batch, size=IMAGE_SIZE, device="cuda"), kernels, "bf16", channels_last=True)
    if provider.endswith("compile"):
        gan.g_forward = compiled(gan.g_forward)
    sketch = cond[:, :3]

    def train_step():
        lean_step(gan, real, sketch)

    results = []
    for name, fn in (("generator forward", forward), ("GAN train step", train_step)):
        row = {"what": name, "provider": provider, "batch": batch, "dtype": "bf16 autocast"}
        try:
            t = measure(fn, device="cuda", warmup=3, min_rounds=3, max_rounds=5 if quick else 15)
            row.update(median_s=t.median_s, p20_s=t.p20_s, p80_s=t.p80_s, images_per_s=batch / t.median_s)
            shown = f"{t.median_s * 1e3:9.2f} ms  {batch / t.median_s:8.1f} img/s"
        except Exception as exc:  # noqa: BLE001 (recorded in full, counted, and the exit status is 1)
            row.update(error_entry(exc))
            shown = row["error"].splitlines()[0] if row["error"] else ""
        print(f"{name:18s} {provider:15s} batch {batch:3d}: {shown}", flush=True)
        results.append(row)
    return results


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _ms(entry: dict) -> str:
    return f"{entry['median_s'] * 1e3:.3f}" if entry.get("median_s") else "err"


def _row_line(row: dict) -> str:
    return (
        f"{row['site']:42s} {row['dtype']:4s} {row['layout']:13s} {row['mode']:16s} "
        f"eager {_ms(row['eager'])} compile {_ms(row['compile'])} triton {_ms(row['triton'])} ms"
        + (f"  {row['triton_x_t_copy']:.2f}x T_copy" if "triton_x_t_copy" in row else "")
    )


def markdown(results: dict) -> str:
    from benchmarks.environment import format_environment

    lines = ["# Fused Triton ops vs eager and torch.compile (issue 3)", ""]
    lines += format_environment(results["environment"])
    lines += [
        f"- copy bandwidth (1 GiB, read + write): {results['copy_bandwidth_gbps']:.0f} GB/s",
        f"- mode: {'quick' if results['quick'] else 'full'}; times are medians per call, CUDA-graph replay, "
        "inputs rotated past L2",
        "",
    ]
    for batch, rows in results["ops"].items():
        lines += [
            f"## Ops at batch {batch}",
            "",
            "| site | calls | dtype | layout | mode | eager ms | compile ms | triton ms | vs eager | vs compile "
            "| triton GB/s | % copy BW | x T_copy |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        nan = float("nan")
        for r in rows:
            bw_percent = 100 * r.get("triton_fraction_of_copy_bw", nan)
            lines.append(
                f"| {r['site']} | {r['calls_per_forward']} | {r['dtype']} | {r['layout']} | {r['mode']} | "
                f"{_ms(r['eager'])} | {_ms(r['compile'])} | {_ms(r['triton'])} | "
                f"{r.get('speedup_vs_eager', nan):.2f} | {r.get('speedup_vs_compile', nan):.2f} | "
                f"{r.get('triton_gbps', nan):.0f} | {bw_percent:.0f} | {r.get('triton_x_t_copy', nan):.2f} |"
            )
        lines.append("")
    lines += ["## Whole model", "", "| what | provider | batch | ms | images/s |", "|---|---|---|---|---|"]
    for r in results["whole_model"]:
        if "median_s" in r:
            ms, ips = r["median_s"] * 1e3, r["images_per_s"]
            lines.append(f"| {r['what']} | {r['provider']} | {r['batch']} | {ms:.2f} | {ips:.1f} |")
        else:
            lines.append(f"| {r['what']} | {r['provider']} | {r['batch']} | {r['error']} | |")
    errors = [
        (r["site"], p, r[p]["error"])
        for rows in results["ops"].values()
        for r in rows
        for p in ("eager", "compile", "triton")
        if "error" in r[p]
    ]
    errors += [(r["what"], r["provider"], r["error"]) for r in results["whole_model"] if "error" in r]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {s} / {p}: {e}" for s, p, e in errors]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def select_sites(sites: list[Site], quick: bool) -> list[Site]:
    if not quick:
        return sites
    gn = [s for s in sites if s.op == "group_norm_act"]
    by_size = sorted(gn, key=lambda s: math.prod(s.shape))
    chosen = {by_size[0].key(), by_size[-1].key(), by_size[len(by_size) // 2].key()}
    with_noise = [s for s in gn if s.extra["noise"]]
    chosen.add(max(with_noise, key=lambda s: math.prod(s.shape)).key())
    gates = [s for s in sites if s.op == "attention_gate"]
    chosen.add(max(gates, key=lambda s: math.prod(s.shape)).key())
    return [s for s in sites if s.key() in chosen or s.op == "weight_standardize"]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="folder for gpu_kernels.json and gpu_kernels.md")
    p.add_argument("--quick", action="store_true", help="a subset: batch 2, NCHW, four GroupNorm sites, one gate")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="batches of the op cases (default 2 32)")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=None)
    p.add_argument("--no-whole-model", action="store_true", help="skip the generator forward and train step")
    p.add_argument("--list-sites", action="store_true", help="print the generator's fused-op sites and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    batches = args.batches or ([2] if args.quick else [2, 32])
    if args.list_sites:
        for batch in batches:
            print(f"batch {batch}, {IMAGE_SIZE}x{IMAGE_SIZE}:")
            for s in generator_sites(batch):
                print(f"  {s.label():48s} x{s.count}")
        return 0
    if not args.out:
        raise ConfigError("--out DIR is required (or use --list-sites)")
    if not torch.cuda.is_available():
        raise MissingDependencyError("benchmarks.gpu_kernels needs a CUDA GPU (torch.cuda.is_available() is False)")
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"benchmarks.gpu_kernels needs triton ({exc})") from exc
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise ConfigError("unset TRITON_INTERPRET: the benchmark times compiled kernels")
    from benchmarks.environment import collect_environment

    layouts = args.layouts or (["nchw"] if args.quick else list(LAYOUTS))
    torch._dynamo.config.automatic_dynamic_shapes = False
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 512)
    results = {
        "environment": collect_environment("cuda"),
        "quick": args.quick,
        "copy_bandwidth_gbps": measure_copy_bw(args.quick) / 1e9,
        "ops": {},
        "whole_model": [],
    }
    copy_bw = results["copy_bandwidth_gbps"] * 1e9
    for batch in batches:
        rows = []
        for site in select_sites(generator_sites(batch), args.quick):
            for dtype_name in args.dtypes:
                for layout in layouts if site.op != "weight_standardize" else ["nchw"]:
                    rows.extend(bench_site(site, dtype_name, layout, args.quick, copy_bw))
        results["ops"][str(batch)] = rows
    if not args.no_whole_model:
        for batch in [2] if args.quick else [2, 32]:
            results["whole_model"].extend(bench_whole_model(batch, args.quick))
    json_path, md_path = write_result(args.out, "gpu_kernels", results, markdown(results))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    errors = count_errors(results)
    if errors:
        print(f"{errors} measurements failed (see the Errors section of gpu_kernels.md)", file=sys.stderr)
    return 1 if errors else 0


def count_errors(results: dict) -> int:
    """Failed measurements: op providers (including a failed CUDA-graph capture) and model rows."""
    ops = sum("error" in r[p] for rows in results["ops"].values() for r in rows for p in ("eager", "compile", "triton"))
    return ops + sum("error" in r for r in results["whole_model"])


if __name__ == "__main__":
    sys.exit(run_cli(main))
