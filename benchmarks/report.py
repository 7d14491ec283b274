"""``python -m benchmarks.report [--quick] [--out DIR]``: every path side by side, in one process.

Writes ``report.md`` (tables), ``report.json`` (everything, machine-readable) and PNG plots to
``benchmarks/results/<device-slug>-<YYYY-MM-DD>/`` (``...-quick`` with --quick), or to --out:

1. the environment (device, driver, versions, git revision, threads, date);
2. the ceilings measured now: matmul FLOP/s per dtype and copy bandwidth (``benchmarks.ceilings``);
3. generator inference per provider, dtype, batch and size (``benchmarks.bench_generator``);
4. the GAN train step, reference pipeline against the trainer's own step (``colorizer.train.step.GanStep``,
   timed by ``benchmarks.bench_train_step``);
5. palettes/s, the reference cv2 loop against ``colorizer.palette.extract_palette``;
6. for every row: median, p20/p80, throughput, ratio to eager and to the reference, the floor
   (FLOPs over the matmul rate, bytes over the copy bandwidth) and the percentage of it reached;
7. the issue's targets, each met, missed or unmeasured (and why).

A provider that cannot run here gives a row with the reason instead of numbers. --quick uses a tiny
model at 128x128 and one or two rounds, so CI can run it in well under a minute; it asserts nothing
about speed, and its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from benchmarks import bench_export, bench_native, bench_palette, bench_precision, gpu_kernels
from benchmarks import bench_generator as gen
from benchmarks import bench_train_step as train
from benchmarks.ceilings import (
    Ceilings,
    Work,
    device_dtypes,
    floor_seconds,
    generator_inference_work,
    measure_ceilings,
)
from benchmarks.environment import collect_environment, device_slug, format_environment
from benchmarks.output import write_json, write_text
from benchmarks.palette_cv2 import reference_palettes
from benchmarks.timing import Timing, measure
from colorizer import native
from colorizer.errors import ConfigError, MissingDependencyError, run_cli
from colorizer.palette import extract_palette
from colorizer.testing import relative_l2

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1
SECTIONS = ("inference", "train_step", "palettes", "suites")
QUICK_WIDTH = (64,)
QUICK_DISC_WIDTH = (32, 32, 32, 32)
ONNX_CPU_PROVIDERS = ("onnxruntime", "onnxruntime-plain")
QUICK_COMPILE_SKIP = "not run with --quick: Inductor compilation takes minutes on a small CPU"


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class Plan:
    """What one report run measures."""

    device: str
    quick: bool
    channels: tuple[int, ...]
    disc_channels: tuple[int, ...]
    sizes: tuple[int, ...]
    batches: tuple[int, ...]
    train_batches: tuple[int, ...]
    train_size: int
    palette_count: int
    palette_size: int
    dtypes: tuple[str, ...]
    inference_providers: tuple[str, ...]
    train_providers: tuple[str, ...]
    sections: tuple[str, ...]
    timing: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def default_plan(device: str, quick: bool) -> Plan:
    """The configuration per device kind (see results/README.md for why)."""
    on_cuda = device.startswith("cuda")
    notes = []
    if quick:
        plan = Plan(
            device=device,
            quick=True,
            channels=QUICK_WIDTH,
            disc_channels=QUICK_DISC_WIDTH,
            sizes=(128,),
            batches=(1,),
            train_batches=(1,),  # the train step dominates quick mode's time
            train_size=128,
            palette_count=4,
            palette_size=128,
            dtypes=tuple(device_dtypes(device)),
            inference_providers=gen.PROVIDERS,
            train_providers=train.PROVIDERS,
            # The per-subject suites have their own quick modes and tests; here they would double the
            # CI time. --sections ...,suites adds them.
            sections=tuple(s for s in SECTIONS if s != "suites"),
            timing=dict(warmup=1, min_rounds=1, max_rounds=2, target_s=0.0),
        )
        notes.append("quick mode: tiny model (widths 64), 128x128, 1-2 rounds; the numbers mean nothing.")
    elif on_cuda:
        plan = Plan(
            device=device,
            quick=False,
            channels=gen.REFERENCE_WIDTH,
            disc_channels=(64, 128, 256, 512),
            sizes=(256, 512),
            batches=(1, 32),
            train_batches=(2, 32),
            train_size=256,
            palette_count=1024,
            palette_size=256,
            dtypes=tuple(device_dtypes(device)),
            inference_providers=gen.PROVIDERS,
            train_providers=train.PROVIDERS,
            sections=SECTIONS,
            timing=dict(warmup=3, min_rounds=10, max_rounds=100, target_s=2.0),
        )
    else:
        plan = Plan(
            device=device,
            quick=False,
            channels=gen.REFERENCE_WIDTH,
            disc_channels=(64, 128, 256, 512),
            sizes=(256, 512),
            # Batch 32 at 256 px takes ~20 s per forward on 2 cores: the CPU runs batch 1 and 4.
            batches=(1, 4),
            train_batches=(2,),
            train_size=256,
            palette_count=64,
            palette_size=256,
            dtypes=tuple(device_dtypes(device)),
            inference_providers=gen.PROVIDERS,
            train_providers=train.PROVIDERS,
            sections=SECTIONS,
            timing=dict(warmup=1, min_rounds=3, max_rounds=10, target_s=6.0),
        )
        notes.append(
            "CPU defaults (options may override them): inference at batch 1 and 4 (batch 32 takes ~20 s per "
            "forward on 2 cores), train step at batch 2, 3 to 10 rounds per row."
        )
    plan.notes.extend(notes)
    return plan


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {text!r}") from None


def _name_list(text: str, allowed, what: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ConfigError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Benchmark every generator/training/palette path side by side and write a report.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny model, 1-2 rounds: proves the suite runs (CI)")
    parser.add_argument("--out", help="output folder (default benchmarks/results/<device>-<date>)")
    parser.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    parser.add_argument("--width", help="generator widths of levels 1..4, e.g. 64,128,256,512 (the reference)")
    parser.add_argument("--sizes", help="inference image sizes, multiples of 128, e.g. 256,512")
    parser.add_argument("--batches", help="inference batch sizes, e.g. 1,32")
    parser.add_argument("--train-batches", help="train-step batch sizes, e.g. 2,32")
    parser.add_argument("--train-size", type=int, help="train-step crop size (default 256; 128 with --quick)")
    parser.add_argument("--dtypes", help="float32,bfloat16,float16 (default: what the device supports)")
    parser.add_argument("--providers", help=f"inference providers (default all: {','.join(gen.PROVIDERS)})")
    parser.add_argument("--train-providers", help=f"train providers (default all: {','.join(train.PROVIDERS)})")
    parser.add_argument("--sections", help=f"subset of {','.join(SECTIONS)}")
    parser.add_argument("--max-rounds", type=int, help="cap on timed rounds per row")
    return parser.parse_args(argv)


def plan_from_args(args: argparse.Namespace) -> Plan:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ConfigError(f"--device must be cpu or cuda[:N], got {device!r}") from None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but this torch sees no CUDA device")
    plan = default_plan(device, args.quick)
    if args.width:
        plan.channels = gen.parse_channels(args.width)
        if any(c <= 0 or c % 64 for c in plan.channels):
            raise ConfigError(f"--width entries must be positive multiples of 64, got {args.width}")
    if args.sizes:
        plan.sizes = _int_list(args.sizes)
        if any(s <= 0 or s % 128 for s in plan.sizes):
            raise ConfigError(f"--sizes must be positive multiples of 128, got {args.sizes}")
    if args.batches:
        plan.batches = _int_list(args.batches)
    if args.train_batches:
        plan.train_batches = _int_list(args.train_batches)
    if args.train_size is not None:
        if args.train_size <= 0 or args.train_size % 128:
            raise ConfigError(f"--train-size must be a positive multiple of 128, got {args.train_size}")
        plan.train_size = args.train_size
    if any(b <= 0 for b in plan.batches + plan.train_batches):
        raise ConfigError("batch sizes must be positive")
    if args.dtypes:
        plan.dtypes = _name_list(args.dtypes, ("float32", "bfloat16", "float16"), "dtype")
    if args.providers:
        plan.inference_providers = _name_list(args.providers, gen.PROVIDERS, "provider")
    if args.train_providers:
        plan.train_providers = _name_list(args.train_providers, train.PROVIDERS, "train provider")
    if args.sections:
        plan.sections = _name_list(args.sections, SECTIONS, "section")
    if args.max_rounds:
        if args.max_rounds < 1:
            raise ConfigError("--max-rounds must be at least 1")
        plan.timing["max_rounds"] = args.max_rounds
        plan.timing["min_rounds"] = min(plan.timing["min_rounds"], args.max_rounds)
    return plan


# --------------------------------------------------------------------------------------------------
# Rows


@dataclass
class Row:
    """One measured (or skipped) configuration. Times in seconds; throughput in ``unit``."""

    section: str
    provider: str
    description: str
    dtype: str
    batch: int
    size: int
    channels: list[int]
    runs_on: str
    unit: str = "images/s"
    status: str = "ok"  # ok | skipped | error
    reason: str | None = None
    cuda_graph: bool = False
    median_s: float | None = None
    p20_s: float | None = None
    p80_s: float | None = None
    rounds: int | None = None
    timing_method: str | None = None
    throughput: float | None = None
    vs_eager: float | None = None
    vs_reference: float | None = None
    flops: float | None = None
    bytes: float | None = None
    floor_s: float | None = None
    floor_compute_s: float | None = None
    floor_memory_s: float | None = None
    floor_bound: str | None = None
    pct_of_floor: float | None = None
    rel_l2_vs_eager_fp32: float | None = None
    quality: float | None = None
    note: str = ""

    @property
    def key(self) -> tuple:
        return (self.section, self.batch, self.size)

    def set_timing(self, timing: Timing, items: int) -> None:
        self.median_s, self.p20_s, self.p80_s = timing.median_s, timing.p20_s, timing.p80_s
        self.rounds, self.timing_method = timing.rounds, timing.method
        self.throughput = items / timing.median_s

    def set_floor(self, work: Work | None, ceilings: Ceilings, floor_dtype: str) -> None:
        if work is None:
            return
        self.flops, self.bytes = work.flops, work.bytes
        if self.runs_on.split(":")[0] != ceilings.device.split(":")[0]:
            self.note = _join(self.note, "floor n/a: runs on another device than the ceilings")
            return
        floor, compute, memory, bound = floor_seconds(work, ceilings, floor_dtype)
        self.floor_s, self.floor_compute_s, self.floor_memory_s, self.floor_bound = floor, compute, memory, bound
        if self.median_s and not math.isnan(floor):
            self.pct_of_floor = 100.0 * floor / self.median_s


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _error_row(row: Row, exc: BaseException) -> Row:
    row.status, row.reason = "error", _first_line(exc)
    print(f"[report] {row.section} {row.provider} {row.dtype} {row.batch}x{row.size}: {row.reason}", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)
    return row


def _log(row: Row) -> None:
    if row.status == "ok":
        what = f"{row.median_s * 1e3:9.2f} ms  {row.throughput:10.2f} {row.unit}"
    else:
        what = f"{row.status}: {row.reason}"
    flag = " graph" if row.cuda_graph else ""
    print(f"[report] {row.section:10s} {row.provider + flag:24s} {row.dtype:9s} {row.batch:4d}x{row.size:<4d} {what}")


class WorkCache:
    """FLOPs/bytes per configuration, counted once on the meta device."""

    def __init__(self):
        self._cache: dict[tuple, Work | None] = {}

    def get(self, key: tuple, count: Callable[[], Work]) -> Work | None:
        if key not in self._cache:
            try:
                self._cache[key] = count()
            except Exception as exc:  # a counting failure costs the floor column, not the row
                print(f"[report] work counting failed for {key}: {_first_line(exc)}", file=sys.stderr)
                self._cache[key] = None
        return self._cache[key]


def inference_rows(plan: Plan, ceilings: Ceilings, works: WorkCache) -> list[Row]:
    rows = []
    on_cuda = plan.device.startswith("cuda")
    for size in plan.sizes:
        for batch in plan.batches:
            eager_out = None
            for dtype in plan.dtypes:
                case = gen.InferenceCase(plan.channels, batch, size, dtype, plan.device)
                work = works.get(
                    ("inference", plan.channels, batch, size, dtype),
                    lambda case=case: generator_inference_work(case.channels, case.batch, case.size, case.dtype),
                )
                variants = [(p, False) for p in plan.inference_providers]
                if on_cuda and batch == 1:
                    variants += [(p, True) for p in ("eager-folded", "compile") if p in plan.inference_providers]
                for provider, graph in variants:
                    row, output = _inference_row(plan, case, provider, graph, ceilings, work)
                    if output is not None and provider == "eager" and dtype == "float32":
                        eager_out = output
                    if output is not None and eager_out is not None:
                        row.rel_l2_vs_eager_fp32 = relative_l2(output, eager_out)
                    rows.append(row)
                    _log(row)
    return rows


def _inference_row(
    plan: Plan, case, provider: str, graph: bool, ceilings: Ceilings, work
) -> tuple[Row, torch.Tensor | None]:
    """One provider on one case: (row, its output for the parity check, or None)."""
    row = Row(
        section="inference",
        provider=provider,
        description=gen.DESCRIPTIONS[provider] + (" + CUDA graph" if graph else ""),
        dtype=case.dtype,
        batch=case.batch,
        size=case.size,
        channels=list(case.channels),
        runs_on=case.device,
        cuda_graph=graph,
    )
    if provider == "compile" and plan.quick:
        row.status, row.reason = "skipped", QUICK_COMPILE_SKIP
        return row, None
    if _on_cuda(plan) and provider in ONNX_CPU_PROVIDERS and (case.batch, case.size) != (1, 256):
        # onnxruntime's CPU provider in a GPU run is for the record only; at batch 32 and 512 px one
        # round would take minutes.
        row.status, row.reason = "skipped", "CPU execution provider in a GPU run: recorded at batch 1, 256x256 only"
        return row, None
    try:
        prepared = gen.prepare(provider, case, cuda_graph=graph)
        row.runs_on, row.note = prepared.runs_on, prepared.note
        # The first call is the parity sample and part of the warm-up.
        output = prepared.output()
        capture = graph and prepared.cuda_graph_capturable
        timing = measure(prepared.run, device=prepared.runs_on, cuda_graph=capture, **plan.timing)
    except gen.Skip as skip:
        row.status, row.reason = "skipped", str(skip)
        return row, None
    except Exception as exc:
        return _error_row(row, exc), None
    row.set_timing(timing, case.batch)
    row.set_floor(work, ceilings, case.dtype)
    return row, output


def train_rows(plan: Plan, ceilings: Ceilings, works: WorkCache) -> list[Row]:
    rows = []
    for batch in plan.train_batches:
        case = train.TrainCase(plan.channels, batch, plan.train_size, plan.device, plan.disc_channels)
        for provider in plan.train_providers:
            row = Row(
                section="train_step",
                provider=provider,
                description=train.DESCRIPTIONS[provider],
                dtype="bfloat16" if provider == "lean-bf16" else "float32",
                batch=batch,
                size=plan.train_size,
                channels=list(plan.channels),
                runs_on=plan.device,
            )
            rows.append(row)
            if provider == "lean-compile" and plan.quick:
                row.status, row.reason = "skipped", QUICK_COMPILE_SKIP
                _log(row)
                continue
            try:
                prepared = train.prepare(provider, case)
                row.note, row.dtype = prepared.note, prepared.dtype
                timing = measure(prepared.run, device=plan.device, **plan.timing)
            except train.Skip as skip:
                row.status, row.reason = "skipped", str(skip)
                _log(row)
                continue
            except Exception as exc:
                _error_row(row, exc)
                continue
            row.set_timing(timing, batch)
            # The floor is the trainer's step's work, whichever pipeline is measured: the reference's
            # second forward and CPU palettes are waste the floor does not grant.
            work = works.get(
                ("train", plan.channels, plan.disc_channels, batch, plan.train_size, row.dtype),
                lambda case=case, dtype=row.dtype: train.train_step_work(case, dtype),
            )
            row.set_floor(work, ceilings, row.dtype)
            _log(row)
    return rows


def palette_rows(plan: Plan, ceilings: Ceilings) -> list[Row]:
    """Palettes/s: the reference loop (one cv2.kmeans per image on the CPU) against extract_palette."""
    count, size = plan.palette_count, plan.palette_size
    images = train.sample_images(count, size, seed=1)
    # The cv2 loop costs the same per image at any count: time at most 64 of them.
    cv2_images = images[: min(count, 64)]
    work = _palette_work(count, size)
    rows = []

    def base_row(provider: str, description: str, n: int, runs_on: str) -> Row:
        return Row(
            section="palettes",
            provider=provider,
            description=description,
            dtype="uint8",
            batch=n,
            size=size,
            channels=[],
            runs_on=runs_on,
            unit="palettes/s",
        )

    row = base_row(
        "cv2-loop", "reference: cv2.kmeans per image (0.25x INTER_AREA, K=9, 10 attempts)", len(cv2_images), "cpu"
    )
    try:
        reference = reference_palettes(cv2_images)
        timing = measure(lambda: reference_palettes(cv2_images), device="cpu", **plan.timing)
        row.set_timing(timing, len(cv2_images))
        row.set_floor(_palette_work(len(cv2_images), size), ceilings, "float32")
        row.note = "timed on the CPU"
    except MissingDependencyError as exc:  # OpenCV is not installed
        row.status, row.reason = "skipped", _first_line(exc)
        reference = None
    rows.append(row)
    _log(row)

    # On the CPU "auto" is "native" when the extension has the k-means step: quick mode times it once.
    impls = ["auto", "eager"] + ([] if plan.quick else ["native"]) + (["triton"] if _on_cuda(plan) else [])
    device_images = torch.from_numpy(images).to(plan.device)
    for impl in impls:
        row = base_row(
            f"extract_palette[{impl}]", f"colorizer.palette.extract_palette(kernels={impl!r})", count, plan.device
        )
        rows.append(row)
        try:
            ours = extract_palette(device_images, k=train.PALETTE_K, kernels=impl)
            timing = measure(
                lambda impl=impl: extract_palette(device_images, k=train.PALETTE_K, kernels=impl),
                device=plan.device,
                **plan.timing,
            )
        except MissingDependencyError as exc:  # the backend cannot run here (KernelsUnavailable included)
            row.status, row.reason = "skipped", _first_line(exc)
            _log(row)
            continue
        except Exception as exc:
            _error_row(row, exc)
            continue
        row.set_timing(timing, count)
        row.set_floor(work, ceilings, "float32")
        if reference is not None:
            # Median over images of compactness(ours) / compactness(cv2) on the downscaled pixels.
            ratio = bench_palette.palette_quality(cv2_images, ours[: len(cv2_images)].cpu().numpy(), reference)
            row.quality = ratio["median"]
            row.note = "quality = median compactness ratio to cv2 (lower is better)"
        _log(row)
    return rows


def _palette_work(count: int, size: int) -> Work:
    """Lower bound of a K-means palette (see results/README.md): per restart, k-means++ seeding and
    one assignment pass over the downscaled pixels, 6 FLOP per pixel-center pair; each 8-bit image read
    once."""
    pixels = (size // 4) ** 2
    flops = count * train.CV2_ATTEMPTS * 2 * pixels * train.PALETTE_K * 6
    return Work(flops=float(flops), bytes=float(count * size * size * 3), eager_bytes=math.nan, items=count)


def add_ratios(rows: list[Row]) -> None:
    """vs_eager / vs_reference: the row's throughput over its baseline's, same batch and size.

    inference: eager = the ``eager`` row in the same dtype; reference = ``eager`` fp32 (how the
    reference runs inference). train_step: eager = ``lean-eager``; reference = ``reference``.
    palettes: both = the cv2 loop (the reference; there is no eager variant).
    """
    ok = [r for r in rows if r.status == "ok" and r.throughput]

    def find(section, provider, dtype=None, batch=None, size=None):
        for r in ok:
            if (r.section, r.provider) == (section, provider) and not r.cuda_graph:
                if (
                    (dtype is None or r.dtype == dtype)
                    and (batch is None or r.batch == batch)
                    and (size is None or r.size == size)
                ):
                    return r
        return None

    for r in ok:
        if r.section == "inference":
            eager = find("inference", "eager", r.dtype, r.batch, r.size)
            reference = find("inference", "eager", "float32", r.batch, r.size)
        elif r.section == "train_step":
            eager = find("train_step", "lean-eager", None, r.batch, r.size)
            reference = find("train_step", "reference", None, r.batch, r.size)
        elif r.section == "palettes":
            eager = reference = find("palettes", "cv2-loop", size=r.size)
        else:
            continue
        r.vs_eager = r.throughput / eager.throughput if eager else None
        r.vs_reference = r.throughput / reference.throughput if reference else None


# --------------------------------------------------------------------------------------------------
# Other suites: the per-subject benchmark files, run in the same process.


def _suite_palettes(plan: Plan) -> list[dict]:
    providers = ["cv2", "sklearn", "eager", "native"] + (["eager-cuda", "triton"] if _on_cuda(plan) else [])
    rows = bench_palette.run(
        sizes=(plan.palette_size,),
        counts=(plan.palette_count,),
        providers=providers,
        cpu_cap=4 if plan.quick else 64,
        quality_cap=4 if plan.quick else 64,
        rounds=1 if plan.quick else 3,
        target_s=0.0 if plan.quick else 2.0,
        log=lambda line: print(f"[report] bench_palette {line.strip()}"),
    )
    return [asdict(r) for r in rows]


def _suite_native(plan: Plan) -> list[dict]:
    if not native.NATIVE_AVAILABLE:
        raise gen.Skip(native.NATIVE_UNAVAILABLE_REASON)
    size = 128 if plan.quick else plan.train_size
    return bench_native.bench_group_norm_act(size, 2 if plan.quick else 20, plan.device)


def _suite_gpu_kernels(plan: Plan) -> list[dict]:
    if not _on_cuda(plan):
        raise gen.Skip("the fused Triton op benchmark needs a CUDA GPU")
    copy_bw = gpu_kernels.measure_copy_bw(plan.quick)
    rows = []
    for batch in (2,) if plan.quick else (2, 32):
        for site in gpu_kernels.select_sites(gpu_kernels.generator_sites(batch), plan.quick):
            for dtype_name in ("fp32", "bf16"):
                rows.extend(gpu_kernels.bench_site(site, dtype_name, "nchw", plan.quick, copy_bw))
    return rows


def _suite_export(plan: Plan) -> list[dict]:
    return bench_export.run_rows(
        quick=plan.quick, device=plan.device, threads=torch.get_num_threads(), width=plan.channels
    )


def _suite_precision(plan: Plan) -> list[dict]:
    return bench_precision.report_rows(
        quick=plan.quick, device=plan.device, threads=torch.get_num_threads(), width=plan.channels
    )


def _on_cuda(plan: Plan) -> bool:
    return plan.device.startswith("cuda")


# (name in report.json, title, runner); each runner raises gen.Skip with the reason it cannot run here.
SUITES = (
    ("palette_speed", "Palettes, every provider (benchmarks/bench_palette.py)", _suite_palettes),
    ("native_speed", "Fused GroupNorm ops, native vs eager (benchmarks/bench_native.py)", _suite_native),
    ("gpu_kernels", "Fused Triton ops on the GPU (benchmarks/gpu_kernels.py)", _suite_gpu_kernels),
    ("export_speed", "Export runtimes (benchmarks/bench_export.py)", _suite_export),
    ("precision_speed", "CPU engines at reduced precision (benchmarks/bench_precision.py)", _suite_precision),
)


def suite_results(plan: Plan) -> dict[str, dict]:
    """Run every per-subject suite; each gives rows, or a skip/error reason."""
    results = {}
    for name, title, run in SUITES:
        entry = {"title": title, "status": "ok", "reason": None, "rows": []}
        results[name] = entry
        started = time.perf_counter()
        try:
            entry["rows"] = run(plan)
        except gen.Skip as skip:
            entry["status"], entry["reason"] = "skipped", str(skip)
        except Exception as exc:  # one suite's failure is its row; the report goes on
            entry["status"], entry["reason"] = "error", _first_line(exc)
            traceback.print_exc(file=sys.stderr)
        entry["seconds"] = time.perf_counter() - started
        print(f"[report] suite {name}: {entry['status']} {entry['reason'] or ''} ({len(entry['rows'])} rows)")
    return results


def _flatten(row: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = "x".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat


def suite_markdown(results: dict[str, dict]) -> list[str]:
    """Each suite's rows as a plain table (its own columns, flattened)."""
    lines = []
    for entry in results.values():
        lines += [f"### {entry['title']}", ""]
        if entry["status"] != "ok":
            lines += [f"{entry['status']}: {entry['reason']}", ""]
            continue
        flat = [_flatten(r) for r in entry["rows"]]
        columns = [c for c in dict.fromkeys(k for r in flat for k in r) if not c.endswith("samples_s")]
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in flat:
            cells = [
                _fmt(v, ".4g") if isinstance(v, float) else ("-" if v is None else str(v))
                for v in (r.get(c) for c in columns)
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


# --------------------------------------------------------------------------------------------------
# Targets (issue 7)


@dataclass
class Target:
    name: str
    text: str
    device: str  # "cuda" or "cpu"
    section: str
    batch: int
    size: int
    dtypes: tuple[str, ...] | None
    providers: tuple[str, ...] | None
    metric: str  # "throughput" (>=), "latency" (<=, seconds), "vs_reference" (>=)
    threshold: float


LEAN_TRAIN = tuple(p for p in train.PROVIDERS if p.startswith("lean"))
TARGETS = (
    Target(
        name="train-gpu",
        text="GAN train step (the trainer's GanStep) >= 1,000 images/s (batch 32, bf16, 256x256)",
        device="cuda",
        section="train_step",
        batch=32,
        size=256,
        dtypes=("bfloat16",),
        providers=LEAN_TRAIN,
        metric="throughput",
        threshold=1000.0,
    ),
    Target(
        name="inference-gpu-throughput",
        text="inference >= 5,000 images/s at batch 32 (256x256; 2x torch.compile)",
        device="cuda",
        section="inference",
        batch=32,
        size=256,
        dtypes=None,
        providers=None,
        metric="throughput",
        threshold=5000.0,
    ),
    Target(
        name="inference-gpu-latency",
        text="batch-1 inference latency < 1 ms (256x256)",
        device="cuda",
        section="inference",
        batch=1,
        size=256,
        dtypes=None,
        providers=None,
        metric="latency",
        threshold=1e-3,
    ),
    Target(
        name="inference-cpu-3x",
        text="best CPU path >= 3x eager fp32 for batch-1 inference (256x256)",
        device="cpu",
        section="inference",
        batch=1,
        size=256,
        dtypes=None,
        providers=None,
        metric="vs_reference",
        threshold=3.0,
    ),
)


def evaluate_targets(rows: list[Row], plan: Plan) -> list[dict]:
    results = []
    device_kind = plan.device.split(":")[0]
    for target in TARGETS:
        entry = {"name": target.name, "target": target.text, "status": "unmeasured", "value": None, "best": None}
        results.append(entry)
        if device_kind != target.device:
            entry["reason"] = (
                f"needs a {'CUDA GPU' if target.device == 'cuda' else 'CPU'} run; this run is on {plan.device}"
            )
            continue
        if tuple(plan.channels) != gen.REFERENCE_WIDTH:
            entry["reason"] = f"needs the reference widths; this run used {list(plan.channels)}"
            continue
        candidates = [
            r
            for r in rows
            if r.status == "ok"
            and r.section == target.section
            and r.batch == target.batch
            and r.size == target.size
            and r.runs_on.split(":")[0] == target.device
            and (target.dtypes is None or r.dtype in target.dtypes)
            and (target.providers is None or r.provider in target.providers)
        ]
        if target.metric == "vs_reference":
            candidates = [r for r in candidates if r.vs_reference is not None]
        if not candidates:
            entry["reason"] = f"no measured {target.section} row at batch {target.batch}, {target.size}x{target.size}"
            continue
        if target.metric == "latency":
            best = min(candidates, key=lambda r: r.median_s)
            value, met = best.median_s, best.median_s < target.threshold
        else:
            best = max(candidates, key=lambda r: getattr(r, target.metric))
            value = getattr(best, target.metric)
            met = value >= target.threshold
        entry.update(status="met" if met else "missed", value=value, best=_row_label(best))
    return results


def _row_label(row: Row) -> str:
    return f"{row.provider}{' + graph' if row.cuda_graph else ''} {row.dtype}"


# --------------------------------------------------------------------------------------------------
# Output


def _fmt(value, spec: str = ".3g", empty: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return empty
    return format(value, spec)


def _ms(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.3g}" if seconds < 1 else f"{seconds * 1e3:,.0f}"


def _rate(value: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def markdown_table(rows: list[Row]) -> list[str]:
    header = (
        "| provider | dtype | batch | size | median ms | p20-p80 ms | throughput | vs eager | vs reference "
        "| floor ms (bound) | % of floor | rel. L2 vs eager fp32 | notes |"
    )
    lines = [header, "|" + "---|" * 13]
    for r in rows:
        name = r.provider + (" + CUDA graph" if r.cuda_graph else "")
        if r.status != "ok":
            lines.append(f"| {name} | {r.dtype} | {r.batch} | {r.size} | {r.status} | | | | | | | | {r.reason} |")
            continue
        floor = f"{_ms(r.floor_s)} ({r.floor_bound})" if r.floor_s is not None else "-"
        quality = f"quality {r.quality:.4f}" if r.quality is not None else ""
        lines.append(
            f"| {name} | {r.dtype} | {r.batch} | {r.size} | {_ms(r.median_s)} | {_ms(r.p20_s)}-{_ms(r.p80_s)} "
            f"| {r.throughput:,.3g} {r.unit} | {_fmt(r.vs_eager, '.2f')}x | {_fmt(r.vs_reference, '.2f')}x "
            f"| {floor} | {_fmt(r.pct_of_floor, '.1f')} | {_fmt(r.rel_l2_vs_eager_fp32, '.2e')} "
            f"| {_join(r.note, quality)} |"
        )
    return lines


def write_markdown(path: Path, report: dict, rows: list[Row]) -> None:
    plan, ceilings = report["plan"], report["ceilings"]
    lines = [
        f"# Benchmark report: {report['environment']['device_name']}",
        "",
        f"Written by `python -m benchmarks.report{' --quick' if plan['quick'] else ''}` in "
        f"{report['duration_s']:.0f} s. How to read it: `benchmarks/results/README.md`.",
        "",
    ]
    if plan["quick"]:
        lines += ["**Quick mode: a tiny model and 1-2 rounds. These numbers say the suite runs, nothing more.**", ""]
    lines += ["## Environment", ""] + format_environment(report["environment"]) + [""]
    lines += ["## Ceilings (measured in this run)", "", "| what | rate | size | p20-p80 ms |", "|---|---|---|---|"]
    for name, rate in ceilings["matmul_flops_per_s"].items():
        t = ceilings["matmul_timing"][name]
        n = ceilings["matmul_n"][name]
        lines.append(f"| matmul {name} | {_rate(rate, 'FLOP/s')} | {n}x{n}x{n} | {_ms(t['p20_s'])}-{_ms(t['p80_s'])} |")
    ct = ceilings["copy_timing"]
    lines.append(
        f"| copy (read + write) | {_rate(ceilings['copy_bytes_per_s'], 'B/s')} "
        f"| {ceilings['copy_buffer_bytes'] / 2**20:.0f} MiB | {_ms(ct['p20_s'])}-{_ms(ct['p80_s'])} |"
    )
    lines += [""] + [f"- {n}" for n in ceilings["notes"]] + [""]
    titles = {
        "inference": "Generator inference",
        "train_step": "GAN train step (reference pipeline vs the trainer's step)",
        "palettes": "Palettes",
    }
    for section, title in titles.items():
        section_rows = [r for r in rows if r.section == section]
        if not section_rows:
            continue
        widths = sorted({tuple(r.channels) for r in section_rows if r.channels})
        lines += [f"## {title}", ""]
        if widths:
            lines += [f"Generator widths: {', '.join(str(list(w)) for w in widths)}.", ""]
        lines += markdown_table(section_rows) + [""]
    if report["suites"]:
        lines += ["## Per-subject suites", ""] + suite_markdown(report["suites"])
    lines += [
        "## Targets (issue 7)",
        "",
        "| target | status | value | best row | why unmeasured |",
        "|---|---|---|---|---|",
    ]
    for t in report["targets"]:
        value = t["value"]
        if value is not None:
            value = f"{value * 1e3:.3g} ms" if t["name"].endswith("latency") else f"{value:,.3g}"
        lines.append(f"| {t['target']} | {t['status']} | {value or '-'} | {t['best'] or '-'} | {t.get('reason', '')} |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    lines += ["Plots: " + ", ".join(f"[{p}]({p})" for p in report["plots"]), ""]
    write_text(path, "\n".join(lines))


def write_plots(out: Path, rows: list[Row]) -> list[str]:
    """PNG bar charts (matplotlib Agg): throughput per section with p20/p80 bars, and % of floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    ok = [r for r in rows if r.status == "ok"]
    for section, unit in (("inference", "images/s"), ("train_step", "images/s"), ("palettes", "palettes/s")):
        section_rows = [r for r in ok if r.section == section]
        if not section_rows:
            continue
        groups = sorted({(r.batch, r.size) for r in section_rows})
        bars_per_group = max(sum(1 for r in section_rows if (r.batch, r.size) == g) for g in groups)
        height = 0.8 + len(groups) * (0.6 + 0.28 * bars_per_group)
        fig, axes = plt.subplots(len(groups), 1, figsize=(9, height), squeeze=False)
        for ax, (batch, size) in zip(axes[:, 0], groups):
            group = [r for r in section_rows if (r.batch, r.size) == (batch, size)]
            labels = [_row_label(r) for r in group]
            values = [r.throughput for r in group]
            # Throughput from p80 time is the low end, from p20 time the high end.
            low = [r.throughput - r.batch / r.p80_s for r in group]
            high = [r.batch / r.p20_s - r.throughput for r in group]
            ax.barh(range(len(group)), values, xerr=[low, high], color="#4477aa", capsize=3)
            ax.set_yticks(range(len(group)), labels, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(unit)
            ax.set_title(f"{section}: batch {batch}, {size}x{size}", fontsize=9)
        fig.tight_layout()
        name = f"{section}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    floor_rows = [r for r in ok if r.pct_of_floor is not None]
    if floor_rows:
        fig, ax = plt.subplots(figsize=(9, 1.0 + 0.25 * len(floor_rows)))
        labels = [f"{r.section} {_row_label(r)} {r.batch}x{r.size}" for r in floor_rows]
        ax.barh(range(len(floor_rows)), [r.pct_of_floor for r in floor_rows], color="#228833")
        ax.set_yticks(range(len(floor_rows)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("% of the floor reached (floor time / measured time)")
        fig.tight_layout()
        fig.savefig(out / "floor.png", dpi=110)
        plt.close(fig)
        written.append("floor.png")
    return written


NOTES = [
    "Times are per call (one batch, one train step, or one batch of palettes): warm-up excluded, median and "
    "p20/p80 of the timed rounds; CUDA rows use CUDA events. Throughput = items / median.",
    "Every inference provider gets the same input (sketch + 9 palette planes, 30 channels) and the same 8 noise "
    "maps, and the same weights; rel. L2 compares each output with eager fp32 on those inputs.",
    "vs eager: inference = the eager row in the same dtype; train step = lean-eager; palettes = the cv2 loop. "
    "vs reference: inference = eager fp32 (the reference's inference); train step = the reference pipeline row; "
    "palettes = the cv2 loop.",
    "Floor = max(FLOPs / matmul rate of the row's dtype, bytes / copy bandwidth). FLOPs by "
    "torch.utils.flop_counter (multiply-add = 2); bytes = each convolution's input, weight and output once "
    "(ideal fusion; see benchmarks/ceilings.py). The train-step floor is the trainer's step's work plus Adam's "
    "traffic, for every train row.",
    "Train rows: every row runs the trainer's own step (colorizer.train.step.GanStep, what Trainer.train_step "
    "calls: D frozen in G's backward, non-finite checks, GradScaler with fp16); lean-* = that step as the trainer "
    "runs it (device palettes, one G forward), reference = the same updates behind the reference's data path "
    "(cv2 palettes per sample) and its two G forwards.",
    "A % of floor above 100 means the measured ceiling was low (quick mode's small matmul, a busy machine): "
    "the ceilings and the rows are timed minutes apart; compare the load averages at start and end.",
    "bf16/fp16 rows run the model with weights and activations in that dtype. At random initialisation the deep "
    "GroupNorm stack amplifies rounding (fp32 lands ~2e-4 from float64, bf16 ~0.7 relative L2), so their rel. L2 "
    "says little about a trained model; the export and kernel suites judge accuracy.",
    "Train step: the VGG feature loss runs a randomly initialised stand-in of VGG16's first four layers (no "
    "ImageNet weights here); decoding and cropping are excluded; the reference's cv2 palettes run in the step's "
    "process (a DataLoader with workers would overlap them with device work).",
]


def run_report(plan: Plan, out: Path | None = None) -> dict:
    """Run everything in ``plan`` and write the report files; returns the JSON-ready report dict."""
    started = time.perf_counter()
    env = collect_environment(plan.device)
    if out is None:
        date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
        out = RESULTS_DIR / f"{device_slug(env)}-{date}{'-quick' if plan.quick else ''}"
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out}: {exc}") from exc
    print(f"[report] device {env['device_name']} ({plan.device}); writing to {out}")
    ceilings = measure_ceilings(plan.device, quick=plan.quick)
    print(
        "[report] ceilings: "
        + ", ".join(f"matmul {k} {_rate(v, 'FLOP/s')}" for k, v in ceilings.matmul_flops_per_s.items())
        + f", copy {_rate(ceilings.copy_bytes_per_s, 'B/s')}"
    )
    works = WorkCache()
    rows: list[Row] = []
    if "inference" in plan.sections:
        rows += inference_rows(plan, ceilings, works)
    if "train_step" in plan.sections:
        rows += train_rows(plan, ceilings, works)
    if "palettes" in plan.sections:
        rows += palette_rows(plan, ceilings)
    add_ratios(rows)
    suites = suite_results(plan) if "suites" in plan.sections else {}
    report = {
        "schema": SCHEMA_VERSION,
        "environment": env,
        "plan": plan.to_dict(),
        "ceilings": ceilings.to_dict(),
        "rows": [asdict(r) for r in rows],
        "targets": evaluate_targets(rows, plan),
        "suites": suites,
        "notes": plan.notes + NOTES,
        "plots": [],
        "duration_s": 0.0,
    }
    if hasattr(os, "getloadavg"):
        # Load at the end too: on a shared machine the two say whether the run was quiet throughout.
        env["cpu"]["load_average_end"] = list(os.getloadavg())
    report["plots"] = write_plots(out, rows)
    report["duration_s"] = time.perf_counter() - started
    write_json(out / "report.json", report, indent=1)
    write_markdown(out / "report.md", report, rows)
    print(
        f"[report] wrote {out / 'report.md'}, report.json and {len(report['plots'])} plots "
        f"in {report['duration_s']:.0f} s"
    )
    return report


def main(argv=None) -> int:
    def _main(argv):
        args = parse_args(argv)
        plan = plan_from_args(args)
        run_report(plan, Path(args.out) if args.out else None)
        return 0

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
