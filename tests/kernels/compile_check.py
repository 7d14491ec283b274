"""Compile the Triton kernels for a GPU architecture on a machine without a GPU, exactly as the
launcher would specialise them, and check the generated code.

The interpreter (how the CPU tests run the kernels) does not compile them, so it misses what only the
compiler sees. This script runs the real launchers on CPU tensors with ``JITFunction.run`` replaced by
a compile-only step that goes through Triton's own launcher code: the kernel's binder (built by
``triton.runtime.jit.create_function_from_signature``, the function ``JITFunction.run`` calls)
specialises the actual arguments (ints equal to 1 become constants, ints and pointers divisible by 16
get the divisibility attribute, ``do_not_specialize`` is honoured), ``JITFunction._pack_args`` turns
that into the signature, constants and attributes, and ``triton.compile`` builds the cubin for the
target with Triton's bundled ptxas. No GPU, no driver; nothing is launched.

For every variant it reads, without a GPU:
- registers, stack and local (spill) bytes from the cubin (Triton's bundled ``cuobjdump -res-usage``);
- the widest global load/store and the number of scalar 16-bit global accesses from the PTX.

Checks (exit status 1 when one fails):
- a variant that does not compile;
- a variant with spills (local or stack bytes) -- every kernel here is meant to live in registers;
- a half-precision (bf16/fp16) variant of an activation kernel at an aligned real shape (channels and
  pixels multiples of 16, which the launcher marks divisible) that still has scalar 16-bit global
  loads or stores: its activation tiles must be read and written with vector accesses in both NCHW
  and channels_last (``EXPECT_VECTOR``). One scalar access is allowed in variants that read a noise
  tensor: the (N, 1, H, W) map is a vector along the pixels of a channels_last tile (whose fast axis
  is the channels), 1/C of the bytes.

    python -m tests.kernels.compile_check --quick    # representative bf16 variants (CI, ~50 variants)
    python -m tests.kernels.compile_check            # every variant of the case matrix (minutes)
    python -m tests.kernels.compile_check --model 2  # count the variants one generator forward and
                                                     # backward at batch 2, 256 px would compile

TRITON_INTERPRET must be unset (the script removes it before importing Triton).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

# Kernels whose half-precision activation tiles must be vectorised at aligned shapes.
EXPECT_VECTOR = {
    "_gn_fwd_kernel",
    "_gn_bwd_kernel",
    "_noise_inject_fwd_kernel",
    "_noise_inject_bwd_kernel",
    "_attention_gate_fwd_kernel",
    "_attention_gate_out_kernel",
    "_attention_gate_bwd_gate_kernel",
    "_attention_gate_bwd_kernel",
}

_GLOBAL_ACCESS = re.compile(r"\b(ld|st)\.global(?:\.[a-z0-9_:]+)*?(?:\.v(\d))?\.([bfsu])(\d+)\b")


@dataclass
class Variant:
    kernel: str
    constants: dict
    num_warps: int
    expect_vector: bool
    ok: bool = False
    error: str = ""
    regs: int = -1
    spill_bytes: int = -1
    max_access_bytes: int = 0
    scalar_half_accesses: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        shown = {k: v for k, v in self.constants.items() if k.isupper()}
        if not self.ok:
            return f"FAIL {self.kernel} {shown}: {self.error[-3000:]}"
        flag = "  <- " + "; ".join(self.problems) if self.problems else ""
        return (
            f"ok {self.kernel:32s} warps={self.num_warps:2d} regs={self.regs:3d} spill={self.spill_bytes:3d}B "
            f"widest={self.max_access_bytes:2d}B scalar16={self.scalar_half_accesses:3d} {self.seconds:4.1f}s "
            f"{shown}{flag}"
        )


def ptx_accesses(ptx: str) -> tuple[int, int]:
    """(widest global load/store in bytes, number of scalar 16-bit global loads/stores) of a PTX."""
    widest, scalar16 = 0, 0
    for _, vec, _, bits in _GLOBAL_ACCESS.findall(ptx):
        n = int(vec or 1)
        widest = max(widest, n * int(bits) // 8)
        if n == 1 and bits == "16":
            scalar16 += 1
    return widest, scalar16


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, stack + local bytes) of the kernel in a cubin, from Triton's bundled cuobjdump."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "REG:" in line:
            fields = dict(x.split(":", 1) for x in line.split() if ":" in x)
            return int(fields.get("REG", -1)), int(fields.get("STACK", 0)) + int(fields.get("LOCAL", 0))
    return -1, -1


class CompileOnly:
    """Replaces JITFunction.run: specialise like the launcher, compile each distinct variant once."""

    def __init__(self, target: GPUTarget, count_only: bool = False):
        self.target = target
        self.backend = make_backend(target)
        self.count_only = count_only
        self.binders: dict[int, object] = {}
        self.variants: dict[tuple, Variant] = {}
        self.launches: Counter = Counter()
        self.expect_vector = False

    @contextlib.contextmanager
    def expecting_vectors(self, enabled: bool):
        previous, self.expect_vector = self.expect_vector, enabled
        try:
            yield
        finally:
            self.expect_vector = previous

    def __call__(self, kernel: JITFunction, *args, grid, warmup, **kwargs):
        name = kernel.fn.__name__
        self.launches[name] += 1
        binder = self.binders.get(id(kernel))
        if binder is None:
            binder = self.binders[id(kernel)] = create_function_from_signature(
                kernel.signature, kernel.params, self.backend
            )
        bound_args, specialization, options = binder(*args, **kwargs)
        key = (name, repr(specialization), repr(sorted(options.items())))
        if key in self.variants:
            return
        options, signature, constexprs, attrs = kernel._pack_args(
            self.backend, kwargs, bound_args, specialization, options
        )
        constants = {kernel.params[path[0]].name: value for path, value in constexprs.items()}
        half = any(v in ("*bf16", "*fp16") for v in signature.values())
        variant = Variant(name, constants, options.num_warps, self.expect_vector and half and name in EXPECT_VECTOR)
        self.variants[key] = variant
        if self.count_only:
            variant.ok = True
            return
        start = time.perf_counter()
        try:
            compiled = triton.compile(
                ASTSource(kernel, signature, constexprs, attrs), target=self.target, options=options.__dict__
            )
        except Exception as exc:  # noqa: BLE001 (every failure is reported, then the run goes on)
            variant.error = f"{type(exc).__name__}: {exc}"
            print(variant.line(), flush=True)
            return
        variant.seconds = time.perf_counter() - start
        variant.ok = True
        variant.regs, variant.spill_bytes = resource_usage(compiled.asm["cubin"])
        variant.max_access_bytes, variant.scalar_half_accesses = ptx_accesses(compiled.asm["ptx"])
        if variant.spill_bytes > 0:
            variant.problems.append(f"spills {variant.spill_bytes} B")
        tensor_noise = (constants.get("HAS_NOISE") and not constants.get("NOISE_FROM_SEED")) or (
            name.startswith("_noise_inject") and not constants.get("FROM_SEED")
        )
        if variant.expect_vector and variant.scalar_half_accesses > (1 if tensor_noise else 0):
            variant.problems.append(f"{variant.scalar_half_accesses} scalar 16-bit accesses where vectors are expected")
        print(variant.line(), flush=True)


def _layout(t: torch.Tensor, name: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if name == "channels_last" else t


def launch_everything(compiler: CompileOnly, quick: bool) -> None:
    """Call every launcher over the configurations the model and the tests use (CPU tensors)."""
    from colorizer.kernels import attention_gate as gate
    from colorizer.kernels import group_norm_act as gn
    from colorizer.kernels import kmeans as km
    from colorizer.kernels import noise_inject as ni
    from colorizer.kernels import weight_standardize as ws

    def aligned(*dims) -> bool:
        return all(d % 16 == 0 for d in dims)

    # --quick: bf16 (the vector check is about 16-bit accesses; the arithmetic is fp32 in every dtype)
    # at the sites whose groups of 2 and 8 channels compiled to scalar loads before.
    dtypes = [torch.bfloat16] if quick else [torch.float32, torch.bfloat16, torch.float16]
    layouts = ["nchw", "channels_last"]
    # (N, C, H, W, groups): split (64 ch @ 256x256), fused (256 @ 32x32); the full run adds packed
    # groups of 16 ch (512 @ 16x16), the 2x2 bottleneck, 1x1 with groups of one channel (C/groups and
    # H*W become constants) and odd shapes.
    gn_shapes = [(2, 64, 256, 256, 32), (2, 256, 32, 32, 32)]
    if not quick:
        gn_shapes += [(2, 512, 16, 16, 32), (2, 512, 2, 2, 32), (2, 32, 128, 128, 32), (1, 32, 1, 1, 32)]
        gn_shapes += [(1, 64, 7, 7, 1)]
    acts = ["relu"] if quick else ["relu", "none", "leaky_relu"]
    noises = ["tensor", "seed"] if quick else ["tensor", "seed", None]
    for (n, c, h, w, g), dt, lay, act, res, noise in itertools.product(
        gn_shapes, dtypes, layouts, acts, [True] if quick else [True, False], noises
    ):
        x = _layout(torch.empty(n, c, h, w, dtype=dt), lay)
        weight = torch.empty(c)
        r = torch.empty_like(x) if res else None
        nz = torch.empty(n, 1, h, w, dtype=dt) if noise == "tensor" else None
        nw = torch.empty(c) if noise else None
        seed = 5 if noise == "seed" else -1
        with compiler.expecting_vectors(aligned(c, h * w)):
            y, mean, rstd = gn.group_norm_act_forward(x, weight, weight, r, nw, nz, g, 1e-5, act, 0, seed, 0)
            gn.group_norm_act_backward(
                torch.empty_like(x), x, weight, weight, r, nw, nz, mean, rstd, g, act, 0, seed, 0
            )
    ws_shapes = [(512, 1024, 3, 3)]
    if not quick:
        ws_shapes += [(64, 30, 3, 3), (512, 512, 3, 3), (1, 256, 1, 1), (32, 1, 1, 1)]
    for shape, dt in itertools.product(ws_shapes, dtypes):
        wt = torch.empty(shape, dtype=dt)
        y, mean, std = ws.weight_standardize_forward(wt, 1e-5, 0)
        ws.weight_standardize_backward(torch.empty_like(wt), wt, mean, std, 1e-5, 0)
    noise_shapes = [(2, 32, 256, 256)] if quick else [(2, 32, 256, 256), (2, 512, 2, 2), (1, 1, 1, 1)]
    for (n, c, h, w), dt, lay, source in itertools.product(noise_shapes, dtypes, layouts, ["tensor", "seed"]):
        x = _layout(torch.empty(n, c, h, w, dtype=dt), lay)
        nz = torch.empty(n, 1, h, w, dtype=dt) if source == "tensor" else None
        with compiler.expecting_vectors(aligned(c, h * w)):
            ni.noise_inject_forward(x, torch.empty(c), nz, 3, 0, 0)
            ni.noise_inject_backward(torch.empty_like(x), torch.empty(c), nz, 3, 0, source == "tensor", 0)
    gate_shapes = [(2, 256, 512, 16, 16)]
    if not quick:
        gate_shapes += [(2, 32, 64, 128, 128), (2, 256, 512, 4, 4), (1, 32, 32, 1, 2), (2, 128, 256, 32, 32)]
    for (n, f, fl, h, w), dt, lay in itertools.product(gate_shapes, dtypes, layouts):
        gp = _layout(torch.empty(n, f, h, w, dtype=dt), lay)
        x = _layout(torch.empty(n, fl, h, w, dtype=dt), lay)
        params = [torch.empty(f) for _ in range(5)] + [torch.empty(1)]
        with compiler.expecting_vectors(aligned(f, fl, h * w)):
            out, stats, q, qstats = gate.attention_gate_forward(gp, gp, x, *params, 32, 1e-5, 0)
            gate.attention_gate_backward(torch.empty_like(x), gp, gp, x, *params[:5], stats, q, qstats, 32, 0)
    # K-means: the Lloyd step and the seeding passes at 256 px downscaled by 4 (4096 points), K = 9.
    km._can_launch = lambda t: True  # CPU tensors, CUDA tilings
    points = torch.empty(8, 4096, 3, dtype=torch.uint8)
    km.kmeans_assign_accumulate(points, torch.empty(80, 9, 3))
    km.kmeans_assign_accumulate(points, torch.empty(80, 9, 3), with_labels=False, weights=torch.empty(8, 4096))
    dist = torch.empty(80, 4096)
    km.kmeanspp_potentials(points, dist, torch.empty(80, 4, 3), torch.empty(8, 4096))
    km.kmeanspp_update(points, dist, torch.empty(80, 3))


def launch_model(batch: int, size: int = 256) -> None:
    """One generator forward and backward on the Triton launchers (reference widths, CPU tensors; the
    kernels are only specialised, the surrounding convolutions really run)."""
    import importlib

    from colorizer.kernels import group_norm_act as gn
    from colorizer.kernels import noise_inject as ni
    from colorizer.models import Sketch2Color

    for module in ("attention_gate", "group_norm_act", "noise_inject", "weight_standardize"):
        importlib.import_module(f"colorizer.kernels.{module}").use_triton = lambda x: True
    gn.interpreting = ni.interpreting = lambda: True  # CPU tensors may take the Philox path
    torch.manual_seed(0)
    model = Sketch2Color(kernels="triton")
    x = torch.randn(batch, 30, size, size)
    model(x, noise=3).float().square().mean().backward()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="representative variants only")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 80, 90 (default)")
    parser.add_argument("--model", type=int, metavar="BATCH", help="count the variants of one model step")
    args = parser.parse_args(argv)
    compiler = CompileOnly(GPUTarget("cuda", args.arch, 32), count_only=args.model is not None)
    JITFunction.run = lambda self, *a, grid, warmup, **kw: compiler(self, *a, grid=grid, warmup=warmup, **kw)
    if args.model is not None:
        launch_model(args.model)
        per_kernel = Counter(v.kernel for v in compiler.variants.values())
        for name, count in sorted(per_kernel.items()):
            print(f"{name:34s} {count:4d} variants {compiler.launches[name]:5d} launches")
        total = sum(compiler.launches.values())
        print(f"batch {args.model}: {len(compiler.variants)} distinct variants, {total} launches (forward+backward)")
        return 0
    launch_everything(compiler, args.quick)
    variants = list(compiler.variants.values())
    failed = [v for v in variants if not v.ok]
    flagged = [v for v in variants if v.problems]
    expected = [v for v in variants if v.expect_vector]
    print(
        f"sm_{args.arch}: compiled {len(variants)} kernel variants, {len(failed)} failed, "
        f"{sum(v.spill_bytes > 0 for v in variants)} spill, {len(expected)} expected vectorised, "
        f"{sum(bool(v.scalar_half_accesses) for v in expected)} of those have scalar 16-bit accesses"
    )
    for v in flagged:
        print("FLAGGED", v.line())
    return 1 if failed or flagged else 0


if __name__ == "__main__":
    sys.exit(main())
