"""Compile the Triton kernels for a GPU architecture on a machine without a GPU.

The interpreter (how the CPU tests run the kernels) does not compile them, so it misses errors that
only the compiler sees (for example an int argument equal to 1, which Triton turns into a
compile-time constant). This script runs the real launchers on CPU tensors with
``JITFunction.run`` replaced by a compile-only step: the signature is built from the actual
arguments (ints equal to 1 become constants, as Triton specialises them) and ``triton.compile``
produces the cubin for the target (Triton's bundled ptxas; no GPU, no driver). Nothing is launched.

    python -m tests.kernels.compile_check            # every variant (~700, several minutes)
    python -m tests.kernels.compile_check --quick    # about 20 representative variants
    python -m tests.kernels.compile_check --arch 80 --usage   # + registers/spills per variant

Exit status 1 when a variant fails to compile. TRITON_INTERPRET must be unset (the script removes it
before importing Triton).
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class CompileOnly:
    """Replaces JITFunction.run: compile each distinct (kernel, signature, constants, warps) once."""

    def __init__(self, target: GPUTarget, usage: bool):
        self.target, self.usage = target, usage
        self.results: dict[tuple, str] = {}

    def signature(self, kernel: JITFunction, args, kwargs):
        bound = dict(zip([p.name for p in kernel.params], args))
        bound.update(kwargs)
        sig, consts = {}, {}
        for p in kernel.params:
            value = bound[p.name]
            if (
                p.is_constexpr
                or value is None
                or (isinstance(value, int) and not isinstance(value, bool) and value == 1)
            ):
                sig[p.name], consts[p.name] = "constexpr", value
            elif isinstance(value, torch.Tensor):
                sig[p.name] = "*" + TYPES[value.dtype]
            elif isinstance(value, bool):
                sig[p.name] = "i1"
            elif isinstance(value, int):
                sig[p.name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            elif isinstance(value, float):
                sig[p.name] = "fp32"
            else:
                raise TypeError(f"{kernel.fn.__name__}: argument {p.name} of type {type(value).__name__}")
        return sig, consts

    def __call__(self, kernel: JITFunction, *args, grid, warmup, **kwargs):
        num_warps = kwargs.pop("num_warps", 4)
        sig, consts = self.signature(kernel, args, kwargs)
        key = (kernel.fn.__name__, tuple(sig.items()), tuple((k, str(v)) for k, v in consts.items()), num_warps)
        if key in self.results:
            return
        start = time.perf_counter()
        shown = {k: v for k, v in consts.items() if k.isupper()}
        try:
            compiled = triton.compile(
                ASTSource(fn=kernel, signature=sig, constexprs=consts),
                target=self.target,
                options={"num_warps": num_warps},
            )
        except Exception as exc:  # noqa: BLE001 (every failure is reported, then the run goes on)
            self.results[key] = f"FAIL {kernel.fn.__name__} {shown}: {exc}"
            print(self.results[key][-3000:], flush=True)
            return
        usage = resource_usage(compiled.asm["cubin"]) if self.usage else ""
        self.results[key] = "ok"
        took = time.perf_counter() - start
        print(f"ok {kernel.fn.__name__:32s} warps={num_warps:2d} {took:4.1f}s {usage} {shown}", flush=True)


def resource_usage(cubin: bytes) -> str:
    """Registers, stack and local (spill) bytes of a cubin, from Triton's bundled cuobjdump."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    fields = [line.split() for line in out.splitlines() if "REG:" in line]
    return " ".join(x for x in fields[0] if x.split(":")[0] in ("REG", "STACK", "LOCAL")) if fields else "?"


def launch_everything(quick: bool) -> None:
    """Call every launcher over the configurations the model and the tests use (CPU tensors)."""
    from colorizer.kernels import attention_gate as gate
    from colorizer.kernels import group_norm_act as gn
    from colorizer.kernels import noise_inject as ni
    from colorizer.kernels import weight_standardize as ws

    def layout(t, name):
        return t.contiguous(memory_format=torch.channels_last) if name == "channels_last" else t

    dtypes = [torch.float32] if quick else [torch.float32, torch.bfloat16, torch.float16]
    layouts = ["nchw"] if quick else ["nchw", "channels_last"]
    # (N, C, H, W, groups): split, fused, packed small groups, 1x1 with groups of one channel
    # (C/groups and H*W become compile-time constants), one group of 64 channels.
    gn_shapes = [(2, 64, 256, 256, 32), (1, 32, 1, 1, 32)]
    if not quick:
        gn_shapes += [(2, 512, 16, 16, 32), (2, 512, 2, 2, 32), (2, 32, 128, 128, 32), (1, 64, 7, 7, 1)]
    acts = ["relu"] if quick else ["relu", "none", "leaky_relu"]
    noises = ["tensor", "seed"] if quick else ["tensor", "seed", None]
    for (n, c, h, w, g), dt, lay, act, res, noise in itertools.product(
        gn_shapes, dtypes, layouts, acts, [True] if quick else [True, False], noises
    ):
        x = layout(torch.empty(n, c, h, w, dtype=dt), lay)
        weight = torch.empty(c)
        r = torch.empty_like(x) if res else None
        nz = torch.empty(n, 1, h, w, dtype=dt) if noise == "tensor" else None
        nw = torch.empty(c) if noise else None
        seed = 5 if noise == "seed" else -1
        y, mean, rstd = gn.group_norm_act_forward(x, weight, weight, r, nw, nz, g, 1e-5, act, 0, seed, 0)
        gn.group_norm_act_backward(torch.empty_like(x), x, weight, weight, r, nw, nz, mean, rstd, g, act, 0, seed, 0)
    ws_shapes = [(64, 30, 3, 3), (32, 1, 1, 1), (512, 1024, 3, 3)]
    if not quick:
        ws_shapes += [(512, 512, 3, 3), (1, 256, 1, 1)]
    for shape, dt in itertools.product(ws_shapes, dtypes):
        wt = torch.empty(shape, dtype=dt)
        y, mean, std = ws.weight_standardize_forward(wt, 1e-5, 0)
        ws.weight_standardize_backward(torch.empty_like(wt), wt, mean, std, 1e-5, 0)
    for (n, c, h, w), dt, lay, source in itertools.product(
        [(2, 32, 256, 256)] if quick else [(2, 32, 256, 256), (2, 512, 2, 2), (1, 1, 1, 1)],
        dtypes,
        layouts,
        ["tensor", "seed"],
    ):
        x = layout(torch.empty(n, c, h, w, dtype=dt), lay)
        nz = torch.empty(n, 1, h, w, dtype=dt) if source == "tensor" else None
        ni.noise_inject_forward(x, torch.empty(c), nz, 3, 0, 0)
        ni.noise_inject_backward(torch.empty_like(x), torch.empty(c), nz, 3, 0, source == "tensor", 0)
    gate_shapes = [(2, 32, 64, 128, 128)]
    if not quick:
        gate_shapes += [(2, 256, 512, 4, 4), (1, 32, 32, 1, 2), (2, 128, 256, 32, 32)]
    for (n, f, fl, h, w), dt, lay in itertools.product(gate_shapes, dtypes, layouts):
        gp = layout(torch.empty(n, f, h, w, dtype=dt), lay)
        x = layout(torch.empty(n, fl, h, w, dtype=dt), lay)
        params = [torch.empty(f) for _ in range(5)] + [torch.empty(1)]
        out, stats, q, qstats = gate.attention_gate_forward(gp, gp, x, *params, 32, 1e-5, 0)
        gate.attention_gate_backward(torch.empty_like(x), gp, gp, x, *params[:5], stats, q, qstats, 32, 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 20 representative variants")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 80, 90 (default)")
    parser.add_argument("--usage", action="store_true", help="print registers and spills of each variant")
    args = parser.parse_args(argv)
    compiler = CompileOnly(GPUTarget("cuda", args.arch, 32), args.usage)
    JITFunction.run = lambda self, *a, grid, warmup, **kw: compiler(self, *a, grid=grid, warmup=warmup, **kw)
    launch_everything(args.quick)
    failures = [r for r in compiler.results.values() if r != "ok"]
    print(f"sm_{args.arch}: compiled {len(compiler.results)} kernel variants, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
