"""Hardware ceilings measured in the same run, the work each benchmark must do, and the floor they give.

Ceilings (measured, never taken from a datasheet):
- matmul rate: FLOP/s of an n x n x n ``torch.matmul`` (2 n^3 FLOP) per dtype: fp32 (and bf16 where the
  CPU has native bf16) on the CPU; fp32, bf16 and fp16 on a GPU. On the CPU also int8: ``torch._int_mm``
  (int8 x int8 -> int32, oneDNN), the floor of the int8 engines (``benchmarks.bench_precision``); it
  is recorded under "int8" in ``matmul_flops_per_s`` but is not a dtype the float benchmarks run.
  GPU fp32 uses the same TF32 setting as cuDNN convolutions (torch's default allows TF32 there), so
  fp32 rows are held to what their convolutions can reach.
- copy bandwidth: bytes/s of a large ``dst.copy_(src)``, counting bytes read plus bytes written.
  The buffer is much larger than the last-level cache (512 MiB on the CPU, whose L3 can be hundreds
  of MiB; 1 GiB on a GPU). Quick mode uses 32 MiB: it runs from cache and says so.

Work (counted once per configuration, on the meta device, so no real memory or time is spent):
- FLOPs from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls, a multiply-add
  counted as 2). The reference generator gives 55.2 GFLOP per 256x256 image, as SPEC.md says.
- bytes: the traffic of an ideally fused implementation, in which every normalisation, activation,
  residual, noise, pooling and upsampling is folded into a neighbouring convolution: each convolution
  reads its input activation and its weight once and writes its output once (forward and backward
  convolutions both). Everything else is assumed free. It is a lower bound on real traffic; the
  unfused eager traffic (every aten op's tensor inputs and outputs) is recorded beside it.

Floor: max(FLOPs / matmul rate, bytes / copy bandwidth) seconds. A row's percentage of the floor is
floor / measured; the larger term says whether arithmetic or memory bounds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.timing import Timing, measure

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
DTYPES_BY_NAME = {v: k for k, v in DTYPE_NAMES.items()}

MiB = 2**20


@dataclass
class Ceilings:
    """Measured peak rates of one device. matmul_flops_per_s: dtype name -> FLOP/s;
    copy_bytes_per_s: bytes read + written per second."""

    device: str
    matmul_flops_per_s: dict[str, float] = field(default_factory=dict)
    matmul_n: dict[str, int] = field(default_factory=dict)
    matmul_timing: dict[str, dict] = field(default_factory=dict)
    copy_bytes_per_s: float = math.nan
    copy_buffer_bytes: int = 0
    copy_timing: dict | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def matmul_rate(self, dtype: str) -> float:
        """FLOP/s for ``dtype``; falls back to float32 when that dtype was not measured."""
        return self.matmul_flops_per_s.get(dtype, self.matmul_flops_per_s.get("float32", math.nan))


def cpu_supports_bf16() -> bool:
    """Native bf16 matmul on this CPU (AVX512-BF16 or AMX), as oneDNN sees it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def device_dtypes(device: str | torch.device) -> list[str]:
    """Dtype names worth benchmarking on ``device``: fp32 always; bf16/fp16 where supported natively."""
    device = torch.device(device)
    if device.type == "cuda":
        names = ["float32", "bfloat16"] if torch.cuda.is_bf16_supported() else ["float32"]
        return names + ["float16"]
    return ["float32", "bfloat16"] if cpu_supports_bf16() else ["float32"]


def measure_matmul_rate(device, dtype: torch.dtype, n: int, **timing) -> tuple[float, Timing]:
    """FLOP/s of an (n, n) @ (n, n) product in ``dtype`` on ``device``; random inputs (never zeros)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    t = measure(lambda: torch.matmul(a, b, out=out), device=device, **timing)
    return 2.0 * n**3 / t.median_s, t


def cpu_int8_matmul_available() -> bool:
    """torch has an int8 x int8 -> int32 CPU matmul (``torch._int_mm``) here."""
    if not hasattr(torch, "_int_mm"):
        return False
    try:
        a = torch.ones(32, 32, dtype=torch.int8)
        torch._int_mm(a, a)
    except (RuntimeError, NotImplementedError):
        return False
    return True


def measure_int8_matmul_rate(n: int, **timing) -> tuple[float, Timing]:
    """Op/s (2 n^3 per product, a multiply-add counted as 2) of an (n, n) int8 product on the CPU."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8)
    b = torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8)
    t = measure(lambda: torch._int_mm(a, b), device="cpu", **timing)
    return 2.0 * n**3 / t.median_s, t


def measure_copy_bandwidth(device, nbytes: int, **timing) -> tuple[float, Timing]:
    """Bytes/s (read + written) of copying an ``nbytes`` float32 buffer into another."""
    numel = nbytes // 4
    src = torch.rand(numel, device=device)
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), device=device, **timing)
    return 2.0 * numel * 4 / t.median_s, t


def measure_ceilings(device: str | torch.device, quick: bool = False) -> Ceilings:
    """Matmul rate per dtype and copy bandwidth of ``device``, measured now."""
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    ceilings = Ceilings(device=str(device))
    timing = dict(warmup=1, min_rounds=3, max_rounds=5 if quick else 20, target_s=0.2 if quick else 1.0)
    for name in device_dtypes(device):
        dtype = DTYPES_BY_NAME[name]
        if on_cuda:
            n = 2048 if quick else 8192
        else:
            n = 512 if quick else 2048
        if on_cuda and dtype == torch.float32:
            # Hold fp32 to what cuDNN convolutions may use (TF32 by default in torch).
            previous = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
            try:
                rate, t = measure_matmul_rate(device, dtype, n, **timing)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = previous
            if torch.backends.cudnn.allow_tf32:
                ceilings.notes.append("GPU float32 matmul rate measured with TF32 on, as cuDNN convolutions use it.")
        else:
            rate, t = measure_matmul_rate(device, dtype, n, **timing)
        ceilings.matmul_flops_per_s[name] = rate
        ceilings.matmul_n[name] = n
        ceilings.matmul_timing[name] = t.to_dict()
    if not on_cuda and cpu_int8_matmul_available():
        n = 512 if quick else 2048
        rate, t = measure_int8_matmul_rate(n, **timing)
        ceilings.matmul_flops_per_s["int8"], ceilings.matmul_n["int8"] = rate, n
        ceilings.matmul_timing["int8"] = t.to_dict()
    nbytes = 32 * MiB if quick else (1024 * MiB if on_cuda else 512 * MiB)
    ceilings.copy_bytes_per_s, t = measure_copy_bandwidth(device, nbytes, **timing)
    ceilings.copy_buffer_bytes = nbytes
    ceilings.copy_timing = t.to_dict()
    if quick:
        ceilings.notes.append("quick mode: small matmul and a 32 MiB copy that may run from cache.")
    return ceilings


# --------------------------------------------------------------------------------------------------
# Work: FLOPs and bytes, counted on the meta device.

_CONV_OPS = {
    torch.ops.aten.convolution.default,
    torch.ops.aten.convolution_backward.default,
    torch.ops.aten._convolution.default,
}


def _tensor_bytes(tree) -> int:
    leaves, _ = tree_flatten(tree)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


class ByteCounter(TorchDispatchMode):
    """Counts tensor bytes in and out of every aten op (``eager_bytes``) and of convolutions only
    (``conv_bytes``, the fused-ideal traffic). Works on meta tensors."""

    def __init__(self):
        super().__init__()
        self.conv_bytes = 0
        self.eager_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        moved = _tensor_bytes((args, kwargs)) + _tensor_bytes(out)
        self.eager_bytes += moved
        if func in _CONV_OPS:
            self.conv_bytes += moved
        return out


@dataclass(frozen=True)
class Work:
    """What one call must compute and move. flops: FLOP; bytes: fused-ideal bytes (the floor's);
    eager_bytes: every op's inputs + outputs; items: images (or palettes) it produces."""

    flops: float
    bytes: float
    eager_bytes: float
    items: int

    def to_dict(self) -> dict:
        return asdict(self)


def count_work(run: Callable[[], object], items: int) -> Work:
    """Run ``run()`` (meant for meta tensors) under the FLOP and byte counters."""
    bytes_mode = ByteCounter()
    with FlopCounterMode(display=False) as flop_mode, bytes_mode:
        run()
    return Work(
        flops=float(flop_mode.get_total_flops()),
        bytes=float(bytes_mode.conv_bytes),
        eager_bytes=float(bytes_mode.eager_bytes),
        items=items,
    )


def generator_inference_work(channels, batch: int, size: int, dtype: str = "float32") -> Work:
    """Work of one Sketch2Color forward on (batch, 30, size, size), weights and activations in dtype.

    Counted on the folded model (weight standardization is a constant at inference), with noise.
    """
    from colorizer.models import Sketch2Color, noise_shapes

    torch_dtype = DTYPES_BY_NAME[dtype]
    with torch.device("meta"):
        model = Sketch2Color(channels=tuple(channels)).to(torch_dtype).eval()
        for module in model.modules():
            if hasattr(module, "standardize"):
                module.standardize = False
        x = torch.empty(batch, 30, size, size, dtype=torch_dtype)
        noise = [torch.empty(s, dtype=torch_dtype) for s in noise_shapes(batch, size, size)]

    def run():
        with torch.no_grad():
            model(x, noise=noise)

    return count_work(run, items=batch)


def floor_seconds(work: Work, ceilings: Ceilings, dtype: str) -> tuple[float, float, float, str]:
    """(floor, compute time, memory time, bound) in seconds for ``work`` done in ``dtype``."""
    compute = work.flops / ceilings.matmul_rate(dtype)
    memory = work.bytes / ceilings.copy_bytes_per_s
    if math.isnan(compute) and math.isnan(memory):
        return math.nan, compute, memory, "unknown"
    bound = "compute" if compute >= memory else "memory"
    return max(compute, memory), compute, memory, bound
