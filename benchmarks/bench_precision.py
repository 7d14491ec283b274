"""CPU engines at reduced precision, side by side with the PyTorch and onnxruntime fp32 paths.

    python -m benchmarks.bench_precision --out DIR [--quick] [--threads 2] [--cases 1x256,1x512,4x256]
        [--width 64,128,256,512] [--providers ...]

Rows, for each case (batch x size), all in one process on the same inputs (``bench_generator``'s:
the same weights, input and eight noise maps), the same intra-op thread count:

- ``eager``, ``eager-folded``, ``compile``, ``native``, ``onnxruntime``: ``benchmarks.bench_generator``
  (fp32). ``eager`` is how the public reference runs inference: ``vs_reference`` is its time over the
  row's.
- ``onnxruntime-tuned``: our ONNX graph with the session options that measured fastest here (see
  ``ORT_TUNED``).
- ``openvino-fp32``, ``openvino-bf16``, ``openvino-int8``: ``colorizer.export.openvino`` IRs (noise as
  inputs, like the onnxruntime rows), bf16 and int8 with the default fp32 node groups; int8 calibrated
  on 8 synthetic drawings (speed does not depend on the calibration).
  ``openvino-bf16-plain``: bf16 with no node kept in fp32 (what the plain precision hint gives).

Each row has the median and p20/p80, images/s, the ratio to the reference's eager fp32, the floor in
its precision (FLOPs over the matmul rate of that precision, measured in this run by
``benchmarks.ceilings``: fp32, bf16 and int8; bytes over the copy bandwidth, with 2-byte activations
for bf16 and 1-byte for int8) and the relative L2 of its output against eager fp32 on the same input.
The weights are the reference initialisation (random), on which bf16 is numerically unusable (the
issue's 0.7 relative L2); accuracy is judged by the export gates on trained weights, not here.

Results: ``DIR/precision_speed.json`` (environment with versions, git revision and load average,
ceilings, rows) and ``DIR/precision_speed.md``, written atomically (``benchmarks.output``). No
pytest-benchmark cases: the fp32 providers are ``bench_generator``'s and each engine needs its IR built
first, which this script does once per run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass

import torch

from benchmarks import bench_generator as gen
from benchmarks.ceilings import Work, floor_seconds, generator_inference_work, measure_ceilings
from benchmarks.environment import collect_environment, package_versions
from benchmarks.output import write_result
from benchmarks.timing import measure

FULL_CASES = ((1, 256), (1, 512), (4, 256))
QUICK_CASES = ((1, 128),)
QUICK_WIDTH = (64,)
TORCH_PROVIDERS = ("eager", "eager-folded", "compile", "native", "onnxruntime")
OWN_PROVIDERS = ("onnxruntime-tuned", "openvino-fp32", "openvino-bf16", "openvino-bf16-plain", "openvino-int8")
PROVIDERS = TORCH_PROVIDERS + OWN_PROVIDERS
PRECISION = {"openvino-bf16": "bfloat16", "openvino-bf16-plain": "bfloat16", "openvino-int8": "int8"}
# onnxruntime session options tried against the default (ORT_ENABLE_ALL, one inter-op thread); kept
# are those that helped in the committed run: spinning intra-op threads and denormals as zero.
ORT_TUNED = {"session.intra_op.allow_spinning": "1", "session.set_denormal_as_zero": "1"}


@dataclass
class Row:
    provider: str
    precision: str
    batch: int
    size: int
    status: str = "ok"
    reason: str | None = None
    median_ms: float | None = None
    p20_ms: float | None = None
    p80_ms: float | None = None
    rounds: int | None = None
    images_per_s: float | None = None
    vs_reference: float | None = None
    vs_onnxruntime: float | None = None
    floor_ms: float | None = None
    floor_bound: str | None = None
    pct_of_floor: float | None = None
    rel_l2_vs_eager_fp32: float | None = None
    note: str = ""


class _OpenVinoCache:
    """One IR per (precision, keep) for a width, exported once and compiled with the run's threads."""

    def __init__(self, channels, threads: int):
        self.channels, self.threads = channels, threads
        self.folder = tempfile.mkdtemp(prefix="bench-openvino-")
        self.runners: dict[str, object] = {}
        self._onnx = None

    def onnx(self) -> str:
        if self._onnx is None:
            from colorizer.export.onnx_export import export_onnx

            case = gen.InferenceCase(self.channels, 1, 128, "float32", "cpu")
            self._onnx = os.path.join(self.folder, "g.onnx")
            export_onnx(gen.make_model(case), self._onnx, noise="input", verify=False)
        return self._onnx

    def runner(self, provider: str):
        if provider not in self.runners:
            from colorizer.export import openvino as xo

            precision = {"openvino-fp32": "fp32", "openvino-int8": "int8"}.get(provider, "bf16")
            keep = () if provider == "openvino-bf16-plain" else xo.DEFAULT_KEEP_FP32
            xml = build_ir(self.onnx(), os.path.join(self.folder, provider), precision, keep)
            self.runners[provider] = xo.OpenVinoRunner(xml, threads=self.threads)
        return self.runners[provider]

    def close(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def build_ir(onnx_path: str, folder: str, precision: str, keep, calibration_count: int = 8) -> str:
    """An ungated IR (speed only) the way export_openvino builds it: convert, quantize, save, mark."""
    import openvino as ov

    from colorizer.export import openvino as xo

    os.makedirs(folder, exist_ok=True)
    model = xo.convert_onnx(onnx_path)
    groups = xo.node_groups(model)
    names = set().union(*(groups[g] for g in keep)) if keep else set()
    if precision == "int8":
        model = xo.quantize_int8(model, xo.calibration_samples("input", count=calibration_count), names)
    meta = {
        "format": xo.FORMAT_NAME,
        "noise_mode": "input",
        "precision": precision,
        "inference_precision": xo.INFERENCE_PRECISION[precision],
    }
    for key, value in meta.items():
        model.set_rt_info(value, ["colorizer", key])
    xml = os.path.join(folder, xo.XML_NAME)
    ov.save_model(model, xml, compress_to_fp16=False)
    if precision != "fp32":
        xo.mark_fp32(xml, names)
    return xml


def _ort_tuned(case, threads: int, cache: _OpenVinoCache):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for key, value in ORT_TUNED.items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(cache.onnx(), options, providers=["CPUExecutionProvider"])
    feed = gen.onnx_feed(session, case)
    return (lambda: session.run(None, feed)[0]), ", ".join(f"{k}={v}" for k, v in ORT_TUNED.items())


def _openvino(case, provider: str, cache: _OpenVinoCache):
    runner = cache.runner(provider)
    parts = gen.input_parts(case)
    inputs = (parts["sketch"], parts["colors"], *parts["noise"])
    counts = runner.runtime_precisions()
    convs = {k.split(":")[1]: v for k, v in counts.items() if k.startswith("Convolution:")}
    note = "convolutions " + ", ".join(f"{n} {p}" for p, n in sorted(convs.items()))
    if PRECISION.get(provider) == "bfloat16" and "bf16" not in convs:
        note += " (no bf16 hardware here: OpenVINO runs the bf16 IR in f32, so it is not faster)"
    return (lambda: runner.run(*inputs)), note


def _work(channels, batch: int, size: int, precision: str, cache: dict) -> Work:
    key = (batch, size)
    if key not in cache:
        cache[key] = generator_inference_work(channels, batch, size, "float32")
    work = cache[key]
    scale = {"float32": 1.0, "bfloat16": 0.5, "int8": 0.25}[precision]
    return Work(flops=work.flops, bytes=work.bytes * scale, eager_bytes=work.eager_bytes, items=work.items)


def run_rows(quick=False, device="cpu", threads=2, width=None, cases=None, providers=None, log=print) -> dict:
    """{"ceilings": ..., "rows": [...]} (used by ``benchmarks.report`` as a suite and by ``main``)."""
    if str(device) != "cpu":
        raise gen.Skip("the reduced-precision engines are CPU engines (OpenVINO's CPU plugin)")
    channels = tuple(width or (QUICK_WIDTH if quick else gen.REFERENCE_WIDTH))
    cases = tuple(cases or (QUICK_CASES if quick else FULL_CASES))
    providers = tuple(providers or PROVIDERS)
    torch.set_num_threads(threads)
    timing = dict(warmup=1, min_rounds=1, max_rounds=2, target_s=0.0) if quick else dict(target_s=4.0, max_rounds=10)
    ceilings = measure_ceilings("cpu", quick=quick)
    cache = _OpenVinoCache(channels, threads)
    works: dict = {}
    rows: list[Row] = []
    try:
        for batch, size in cases:
            case = gen.InferenceCase(channels, batch, size, "float32", "cpu")
            baseline = {}
            for provider in providers:
                precision = PRECISION.get(provider, "float32")
                row = Row(provider, precision, batch, size)
                rows.append(row)
                if provider == "compile" and quick:
                    row.status, row.reason = "skipped", "not run with --quick (Inductor compiles for minutes)"
                    continue
                try:
                    if provider in TORCH_PROVIDERS:
                        prepared = gen.prepare(provider, case)
                        run, output, row.note = prepared.run, prepared.output, prepared.note
                    else:
                        if provider == "onnxruntime-tuned":
                            fn, row.note = _ort_tuned(case, threads, cache)
                        else:
                            fn, row.note = _openvino(case, provider, cache)
                        run, output = fn, (lambda fn=fn: torch.as_tensor(fn()).float())
                    out = output()
                    t = measure(run, device="cpu", **timing)
                except gen.Skip as skip:
                    row.status, row.reason = "skipped", str(skip)
                    continue
                except ImportError as exc:
                    row.status, row.reason = "skipped", f"{exc.name or exc} is not installed"
                    continue
                except Exception as exc:  # recorded as the row's reason; the run goes on
                    row.status, row.reason = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                    continue
                row.median_ms, row.p20_ms, row.p80_ms, row.rounds = (
                    t.median_s * 1e3,
                    t.p20_s * 1e3,
                    t.p80_s * 1e3,
                    t.rounds,
                )
                row.images_per_s = batch / t.median_s
                floor, _, _, bound = floor_seconds(_work(channels, batch, size, precision, works), ceilings, precision)
                row.floor_ms, row.floor_bound, row.pct_of_floor = floor * 1e3, bound, 100.0 * floor / t.median_s
                if provider in ("eager", "onnxruntime"):
                    baseline[provider] = (row.median_ms, out)
                if "eager" in baseline:
                    from colorizer.testing import relative_l2

                    row.vs_reference = baseline["eager"][0] / row.median_ms
                    row.rel_l2_vs_eager_fp32 = relative_l2(out, baseline["eager"][1])
                if "onnxruntime" in baseline:
                    row.vs_onnxruntime = baseline["onnxruntime"][0] / row.median_ms
                log(_line(row))
    finally:
        cache.close()
    return {"ceilings": ceilings.to_dict(), "config": {"channels": list(channels), "threads": threads}, "rows": rows}


def report_rows(quick=False, device="cpu", threads=2, width=None) -> list[dict]:
    """The rows as dicts, for ``benchmarks.report``'s suites section."""
    return [asdict(r) for r in run_rows(quick, device, threads, width)["rows"]]


def _fmt(value, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def _line(row: Row) -> str:
    if row.status != "ok":
        return f"{row.provider:20s} {row.batch}x{row.size:<4d} {row.status}: {row.reason}"
    return (
        f"{row.provider:20s} {row.precision:8s} {row.batch}x{row.size:<4d} {row.median_ms:9.1f} ms "
        f"vs reference {_fmt(row.vs_reference, '5.2f')}x  floor {_fmt(row.pct_of_floor, '4.0f')}%  "
        f"relL2 {_fmt(row.rel_l2_vs_eager_fp32, '.2e')}  {row.note}"
    )


def markdown(report: dict) -> str:
    env, ceil = report["environment"], report["ceilings"]
    rates = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in ceil["matmul_flops_per_s"].items())
    lines = [
        "# CPU engines at reduced precision",
        "",
        f"- device: {env['device_name']}; threads: {report['config']['threads']}; "
        f"load average at start: {env['cpu'].get('load_average_1_5_15')}; at end: {report.get('load_end')}",
        f"- git: {env['git'].get('revision', env['git'])}; date: {env.get('date_utc', '')}",
        f"- versions: {env['versions'] | report.get('engine_versions', {})}",
        f"- generator widths: {report['config']['channels']} (reference initialisation)",
        f"- ceilings (this run): matmul {rates}; copy {ceil['copy_bytes_per_s'] / 1e9:.1f} GB/s",
        "",
        "| provider | precision | batch x size | median ms | p20-p80 ms | images/s | vs reference eager | "
        "vs onnxruntime fp32 | floor ms | % of floor | rel L2 vs eager fp32 | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        if r["status"] != "ok":
            lines.append(
                f"| {r['provider']} | {r['precision']} | {r['batch']}x{r['size']} | {r['status']}: "
                f"{r['reason']} | | | | | | | | |"
            )
            continue
        lines.append(
            f"| {r['provider']} | {r['precision']} | {r['batch']}x{r['size']} | {r['median_ms']:.1f} | "
            f"{r['p20_ms']:.1f}-{r['p80_ms']:.1f} | {r['images_per_s']:.2f} | {_fmt(r['vs_reference'], '.2f')} | "
            f"{_fmt(r['vs_onnxruntime'], '.2f')} | {_fmt(r['floor_ms'], '.1f')} | {_fmt(r['pct_of_floor'], '.0f')} | "
            f"{_fmt(r['rel_l2_vs_eager_fp32'], '.2e')} | {r['note']} |"
        )
    return "\n".join(lines) + "\n"


def _parse_cases(text: str):
    return tuple((int(b), int(s)) for b, s in (item.lower().split("x") for item in text.split(",")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model at 128 px: proves the script runs")
    p.add_argument("--out", required=True, help="output folder (precision_speed.json and .md)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--width", help="generator widths of levels 1..4 (default the reference's 64,128,256,512)")
    p.add_argument("--cases", help="comma-separated BATCHxSIZE (default 1x256,1x512,4x256)")
    p.add_argument("--providers", help=f"subset of {','.join(PROVIDERS)}")
    args = p.parse_args(argv)
    width = tuple(int(w) for w in args.width.split(",")) if args.width else None
    providers = tuple(args.providers.split(",")) if args.providers else None
    unknown = [x for x in providers or () if x not in PROVIDERS]
    if unknown:
        print(f"error: unknown provider(s) {', '.join(unknown)}; choose from {', '.join(PROVIDERS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    env = collect_environment("cpu")
    result = run_rows(
        args.quick, "cpu", args.threads, width, _parse_cases(args.cases) if args.cases else None, providers
    )
    report = {
        "environment": env,
        "config": result["config"] | {"quick": args.quick},
        "ceilings": result["ceilings"],
        "rows": [asdict(r) for r in result["rows"]],
        "load_end": list(os.getloadavg()),
        "engine_versions": package_versions(("openvino", "nncf")),
    }
    json_path, md_path = write_result(args.out, "precision_speed", report, markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
