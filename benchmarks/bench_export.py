"""Exported generator vs PyTorch, side by side on the same inputs and the same thread count.

Script (the full table with accuracy beside each row, JSON + Markdown)::

    python -m benchmarks.bench_export [--quick] --out DIR [--threads 2] [--width 64,128,256,512]
        [--cases 1x256,4x256,1x512] [--variants ...] [--device cpu|cuda]

pytest-benchmark cases (eager folded, our ONNX export on onnxruntime with seeded and zero noise, the
seeded noise alone, the time to export; options ``--bench-size`` etc. in benchmarks/conftest.py)::

    pytest benchmarks/bench_export.py --benchmark-only

CPU rows (``--device cpu``), for each case (batch x size):
- ``eager``: ``Sketch2Color`` as the reference runs it (weight standardization on every forward).
- ``eager-folded``: the standardization folded into constant weights.
- ``ort``: our export (``export_onnx``: two-level GroupNorm statistics, seeded in-graph noise),
  onnxruntime ORT_ENABLE_ALL. This is what ``colorizer-export`` writes.
- ``ort-zero-noise``: the same with ``--noise zero`` (no noise subgraph).
- ``ort-instance-norm``: GroupNorm as PyTorch's exporter writes it (Reshape + InstanceNormalization),
  zero noise: the "plain legacy export" baseline of the issue.
- ``ort-basic``: ``ort`` with ORT_ENABLE_BASIC (how much the layout/fusion passes give).
- ``ort-slim``: ``ort`` after onnxslim (when installed).
Each row also gives the relative L2 error of its output against the float64 model on the first
(smallest) case, so speed and accuracy are read together (the parity gate allows 2x eager's error).

GPU rows (``--device cuda``): eager, ``torch.compile`` (folded), onnxruntime on the CPU for the
record, onnxruntime's CUDA provider when installed, TensorRT fp16 when installed.

Timing: ``benchmarks.timing.measure`` (warm-up excluded, median and p20/p80 of rounds); torch and
onnxruntime get the same intra-op thread count (``--threads``, default 2) and one inter-op thread.
Results: ``DIR/export_speed.json`` (environment: device, versions, git revision, load average; config;
rows) and ``DIR/export_speed.md``, written atomically (``benchmarks.output``). Numbers from a machine
shared with other jobs are not comparable with a quiet machine's; the environment block records the
load average at the start.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import pytest
import torch

from benchmarks.environment import collect_environment
from benchmarks.output import write_result
from benchmarks.timing import measure

REFERENCE_WIDTH = (64, 128, 256, 512)
QUICK_WIDTH = (64, 64, 64, 64)
FULL_CASES = ((1, 256), (4, 256), (1, 512))
QUICK_CASES = ((1, 128), (2, 128))
CPU_VARIANTS = ("eager", "eager-folded", "ort", "ort-zero-noise", "ort-instance-norm", "ort-basic", "ort-slim")
GPU_VARIANTS = ("eager", "compile", "ort-cpu", "ort-cuda", "tensorrt-fp16")


@dataclass
class Row:
    variant: str
    device: str
    batch: int
    size: int
    median_ms: float | None
    p20_ms: float | None
    p80_ms: float | None
    rounds: int
    speedup_vs_eager: float | None = None
    rel_l2_vs_float64: float | None = None
    note: str = ""


def _case_inputs(batch: int, size: int, seed: int = 0):
    from colorizer.export.interface import example_inputs

    sketch, palette, seeds = example_inputs("seeded", batch, size, size, seed=seed)
    return sketch, palette, seeds


def _model(width) -> torch.nn.Module:
    from colorizer.models import NoiseInjection, Sketch2Color

    torch.manual_seed(0)
    model = Sketch2Color(channels=width).eval()
    for module in model.modules():  # trained models have non-zero noise weights; so does this one
        if isinstance(module, NoiseInjection):
            module.weight.data.normal_(0.0, 0.1)
    return model


def _ort_session(path: str, threads: int, level: str = "ORT_ENABLE_ALL", providers=("CPUExecutionProvider",)):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return ort.InferenceSession(path, options, providers=list(providers))


def _export(model, folder: str, name: str, noise: str, group_norm: str = "two-level") -> str:
    """Trace and finalize (checker, metadata) without the parity gate: only speed is measured here."""
    from colorizer.export.onnx_export import DEFAULT_OPSET, finalize_graph, trace_to_onnx

    path = os.path.join(folder, f"{name}.onnx")
    trace_to_onnx(model, path, noise, DEFAULT_OPSET, group_norm)
    finalize_graph(path, model, noise, DEFAULT_OPSET, None, group_norm)
    return path


def _slim(path: str) -> str | None:
    try:
        import onnxslim
    except ImportError:
        return None
    out = path.replace(".onnx", "_slim.onnx")
    onnxslim.slim(path, out)
    return out


def cpu_rows(width, cases, threads: int, variants, quick: bool) -> list[Row]:
    from colorizer.export.interface import generator_input
    from colorizer.export.seeded_noise import seeded_noise
    from colorizer.export.verify import reference_models
    from colorizer.models import fold_weight_standardization
    from colorizer.testing import relative_l2

    torch.set_num_threads(threads)
    model = _model(width)
    folded = fold_weight_standardization(model)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="export-speed-") as folder:
        runners = {}
        notes = {}
        if "eager" in variants:
            runners["eager"] = lambda s, p, sd: model(
                generator_input(s, p), noise=seeded_noise(sd, s.shape[2], s.shape[3])
            )
            notes["eager"] = "weight standardization every forward; seeded noise maps"
        if "eager-folded" in variants:
            runners["eager-folded"] = lambda s, p, sd: folded(
                generator_input(s, p), noise=seeded_noise(sd, s.shape[2], s.shape[3])
            )
            notes["eager-folded"] = "weights folded; seeded noise maps"
        sessions = {}
        if {"ort", "ort-basic", "ort-slim"} & set(variants):
            start = time.perf_counter()
            path = _export(model, folder, "seeded", "seeded")
            notes["export_s"] = time.perf_counter() - start
            if "ort" in variants:
                sessions["ort"] = (_ort_session(path, threads), "seeded", "two-level GroupNorm, in-graph noise, ALL")
            if "ort-basic" in variants:
                sessions["ort-basic"] = (_ort_session(path, threads, "ORT_ENABLE_BASIC"), "seeded", "BASIC level")
            if "ort-slim" in variants:
                slim = _slim(path)
                if slim:
                    sessions["ort-slim"] = (_ort_session(slim, threads), "seeded", "onnxslim, ALL")
        if "ort-zero-noise" in variants:
            path = _export(model, folder, "zero", "zero")
            sessions["ort-zero-noise"] = (_ort_session(path, threads), "zero", "two-level GroupNorm, no noise")
        if "ort-instance-norm" in variants:
            path = _export(model, folder, "inorm", "zero", "instance-norm")
            sessions["ort-instance-norm"] = (_ort_session(path, threads), "zero", "Reshape+InstanceNorm, no noise")

        def ort_runner(session, noise):
            def run(s, p, sd):
                feed = {"sketch": s.numpy(), "palette": p.numpy()}
                if noise == "seeded":
                    feed["seed"] = sd.numpy()
                return torch.from_numpy(session.run(["image"], feed)[0])

            return run

        for name, (session, noise, note) in sessions.items():
            runners[name] = ort_runner(session, noise)
            notes[name] = note
        oracle_model = None
        for case_index, (batch, size) in enumerate(cases):
            sketch, palette, seeds = _case_inputs(batch, size)
            oracle = None
            if case_index == 0:
                oracle_model = oracle_model or reference_models(model)[0]
                with torch.inference_mode():
                    x64 = generator_input(sketch, palette).double()
                    noise64 = [m.double() for m in seeded_noise(seeds, size, size)]
                    oracle = oracle_model(x64, noise=noise64)
                    zero_oracle = oracle_model(x64, noise="zero")
            eager_ms = None
            for name, run in runners.items():
                with torch.inference_mode():
                    timing = measure(
                        lambda run=run, a=(sketch, palette, seeds): run(*a),
                        warmup=1,
                        min_rounds=3,
                        max_rounds=10,
                        target_s=1.0 if quick else 5.0,
                    )
                    out = run(sketch, palette, seeds) if oracle is not None else None
                row = Row(
                    name,
                    "cpu",
                    batch,
                    size,
                    timing.median_s * 1e3,
                    timing.p20_s * 1e3,
                    timing.p80_s * 1e3,
                    timing.rounds,
                    note=notes[name],
                )
                if out is not None:
                    ref = zero_oracle if sessions.get(name, (None, "seeded"))[1] == "zero" else oracle
                    row.rel_l2_vs_float64 = relative_l2(out, ref)
                if name == "eager":
                    eager_ms = row.median_ms
                if eager_ms:
                    row.speedup_vs_eager = eager_ms / row.median_ms
                rows.append(row)
                print(_row_line(row), flush=True)
        if "export_s" in notes:
            print(f"export (trace + checks, no gate): {notes['export_s']:.1f} s", flush=True)
    return rows


def gpu_rows(width, cases, threads: int, quick: bool) -> list[Row]:
    """eager / torch.compile / onnxruntime (CPU, CUDA) / TensorRT fp16 on the GPU; absent ones are noted."""
    from colorizer.export.interface import generator_input
    from colorizer.export.runtime import OnnxRunner
    from colorizer.export.seeded_noise import seeded_noise
    from colorizer.export.tensorrt import build_engine, tensorrt_missing
    from colorizer.models import fold_weight_standardization

    device = torch.device("cuda")
    model = _model(width).to(device)
    folded = fold_weight_standardization(model)
    compiled = torch.compile(folded)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="export-speed-gpu-") as folder:
        path = _export(model.cpu(), folder, "seeded", "seeded")
        model.to(device)
        runners = {
            "eager": (lambda x, m: model(x, noise=m), "cuda"),
            "compile": (lambda x, m: compiled(x, noise=m), "cuda"),
        }
        ort_cpu = OnnxRunner(path, "cpu", threads=threads)
        runners["ort-cpu"] = (lambda x, m: ort_cpu(x.cpu(), seed=0), "cpu")
        try:
            ort_cuda = OnnxRunner(path, "cuda")
            runners["ort-cuda"] = (lambda x, m: ort_cuda(x, seed=0), "cuda")
        except Exception as exc:  # noqa: BLE001 - recorded as a skipped row
            rows.append(Row("ort-cuda", "cuda", 0, 0, None, None, None, 0, note=str(exc).splitlines()[0]))
        missing = tensorrt_missing()
        if missing:
            rows.append(Row("tensorrt-fp16", "cuda", 0, 0, None, None, None, 0, note=missing))
        for batch, size in cases:
            sketch, palette, seeds = _case_inputs(batch, size)
            x = generator_input(sketch, palette).to(device)
            maps = [m.to(device) for m in seeded_noise(seeds, size, size)]
            case_runners = dict(runners)
            if not missing:
                from colorizer.export.tensorrt import TensorRTRunner

                plan = os.path.join(folder, f"g_{batch}_{size}.plan")
                build_engine(path, plan, precision="fp16", batch=str(batch), size=str(size), timing_cache="")
                trt_runner = TensorRTRunner(plan)
                case_runners["tensorrt-fp16"] = (lambda x, m, r=trt_runner: r(x, seed=0), "cuda")
            eager_ms = None
            for name, (run, where) in case_runners.items():
                with torch.inference_mode():
                    timing = measure(
                        lambda run=run, a=(x, maps): run(*a),
                        device=where,
                        warmup=2 if name == "compile" else 1,
                        min_rounds=3,
                        max_rounds=20,
                        target_s=1.0 if quick else 3.0,
                    )
                row = Row(
                    name,
                    where,
                    batch,
                    size,
                    timing.median_s * 1e3,
                    timing.p20_s * 1e3,
                    timing.p80_s * 1e3,
                    timing.rounds,
                )
                if name == "eager":
                    eager_ms = row.median_ms
                if eager_ms:
                    row.speedup_vs_eager = eager_ms / row.median_ms
                rows.append(row)
                print(_row_line(row), flush=True)
    return rows


def _row_line(row: Row) -> str:
    if row.median_ms is None:
        return f"{row.variant:18s} {row.device:4s} skipped: {row.note}"
    speed = f"{row.speedup_vs_eager:5.2f}x" if row.speedup_vs_eager else "   -  "
    err = f"{row.rel_l2_vs_float64:.2e}" if row.rel_l2_vs_float64 is not None else "-"
    return (
        f"{row.variant:18s} {row.device:4s} {row.batch}x{row.size:<4d} median {row.median_ms:9.1f} ms "
        f"(p20 {row.p20_ms:.1f}, p80 {row.p80_ms:.1f})  vs eager {speed}  relL2 {err}  {row.note}"
    )


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# Export runtimes",
        "",
        f"- device: {env['device_name']}; threads: {report['config']['threads']}; "
        f"load average at start: {env['cpu'].get('load_average_1_5_15')}",
        f"- git: {env['git'].get('revision', env['git'])}; versions: {env['versions']}",
        f"- width: {report['config']['width']}; quick: {report['config']['quick']}",
        "",
        "| variant | device | batch x size | median ms | p20 ms | p80 ms | vs eager | rel L2 vs float64 | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:

        def fmt(v, spec):
            return format(v, spec) if v is not None else "-"

        lines.append(
            f"| {r['variant']} | {r['device']} | {r['batch']}x{r['size']} | {fmt(r['median_ms'], '.1f')} | "
            f"{fmt(r['p20_ms'], '.1f')} | {fmt(r['p80_ms'], '.1f')} | {fmt(r['speedup_vs_eager'], '.2f')} | "
            f"{fmt(r['rel_l2_vs_float64'], '.2e')} | {r['note']} |"
        )
    return "\n".join(lines) + "\n"


def _parse_cases(text: str):
    cases = []
    for item in text.split(","):
        b, s = item.lower().split("x")
        cases.append((int(b), int(s)))
    return tuple(cases)


def run_rows(quick: bool = False, device: str = "cpu", threads: int = 2, width=None, cases=None, variants=None):
    """The benchmark rows as dicts (used by ``benchmarks.report``)."""
    width = tuple(width or (QUICK_WIDTH if quick else REFERENCE_WIDTH))
    cases = tuple(cases or (QUICK_CASES if quick else FULL_CASES))
    if str(device).startswith("cuda"):
        rows = gpu_rows(width, cases, threads, quick)
    else:
        rows = cpu_rows(width, cases, threads, tuple(variants or CPU_VARIANTS), quick)
    return [asdict(r) for r in rows]


# --------------------------------------------------------------------------------------------------
# pytest-benchmark cases (collected by benchmarks/conftest.py; run with --benchmark-only).


@pytest.fixture(scope="module")
def setup(bench_options, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from colorizer.export.interface import example_inputs

    opts = bench_options
    threads = torch.get_num_threads()
    model = _model(opts.channels)
    folder = str(tmp_path_factory.mktemp("bench-export"))
    sessions = {noise: _ort_session(_export(model, folder, noise, noise), threads) for noise in ("seeded", "zero")}
    inputs = example_inputs("seeded", opts.batch, opts.size, opts.size)
    return opts, model, sessions, inputs, folder


def _pedantic(benchmark, opts, fn):
    return benchmark.pedantic(fn, rounds=opts.rounds, warmup_rounds=opts.warmup, iterations=1)


def test_eager_folded(benchmark, setup):
    from colorizer.export.interface import generator_input
    from colorizer.export.seeded_noise import seeded_noise
    from colorizer.models import fold_weight_standardization

    opts, model, _, (sketch, palette, seeds), _ = setup
    folded = fold_weight_standardization(model)
    x = generator_input(sketch, palette)
    maps = seeded_noise(seeds, opts.size, opts.size)
    with torch.inference_mode():
        _pedantic(benchmark, opts, lambda: folded(x, noise=maps))


@pytest.mark.parametrize("noise", ["seeded", "zero"])
def test_onnxruntime(benchmark, setup, noise):
    opts, _, sessions, (sketch, palette, seeds), _ = setup
    feed = {"sketch": sketch.numpy(), "palette": palette.numpy()}
    if noise == "seeded":
        feed["seed"] = seeds.numpy()
    session = sessions[noise]
    _pedantic(benchmark, opts, lambda: session.run(["image"], feed))


def test_seeded_noise(benchmark, setup):
    from colorizer.export.seeded_noise import seeded_noise

    opts, _, _, (_, _, seeds), _ = setup
    _pedantic(benchmark, opts, lambda: seeded_noise(seeds, opts.size, opts.size))


def test_export_time(benchmark, setup):
    opts, model, _, _, folder = setup
    path = os.path.join(folder, "timed")
    benchmark.pedantic(lambda: _export(model, folder, "timed", "seeded"), rounds=1, warmup_rounds=0, iterations=1)
    assert os.path.isfile(path + ".onnx")


# --------------------------------------------------------------------------------------------------
# Script


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small width, 128 px: proves the script runs")
    p.add_argument("--out", required=True, help="output folder (export_speed.json and .md)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--width", help="generator widths of levels 1..4, e.g. 64,128,256,512")
    p.add_argument("--cases", help="comma-separated BATCHxSIZE, e.g. 1x256,4x256,1x512")
    p.add_argument("--variants", help=f"CPU variants (default all: {','.join(CPU_VARIANTS)})")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    width = tuple(int(w) for w in args.width.split(",")) if args.width else None
    cases = _parse_cases(args.cases) if args.cases else None
    variants = tuple(args.variants.split(",")) if args.variants else None
    torch.set_num_threads(args.threads)
    env = collect_environment(args.device)
    rows = run_rows(args.quick, args.device, args.threads, width, cases, variants)
    report = {
        "environment": env,
        "config": {
            "quick": args.quick,
            "threads": args.threads,
            "width": list(width or (QUICK_WIDTH if args.quick else REFERENCE_WIDTH)),
            "cases": [list(c) for c in (cases or (QUICK_CASES if args.quick else FULL_CASES))],
        },
        "rows": rows,
    }
    json_path, md_path = write_result(args.out, "export_speed", report, markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
