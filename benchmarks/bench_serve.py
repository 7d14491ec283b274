"""`colorizer serve` under load: real HTTP over loopback, closed-loop clients, beside the in-process engine.

    python -m benchmarks.bench_serve --out benchmarks/results/serve-<machine>-<date>      # the committed result
    python -m benchmarks.bench_serve --quick --out /tmp/serve                             # a one-minute check

For each model (the bundled ``demo``; ``reference``: the reference widths, random weights, the same cost)
and engine (``torch``: the checkpoint through ``load_runner`` with ``--kernels native``; ``openvino``: the
same model exported to OpenVINO IR fp32), the run

1. calls the engine in-process (``Runner.colorize``) at batch sizes 1, 2, 4, 8 on the served request's own
   sketch and palette: the latency of one picture and the best images/s (the ceiling);
2. starts ``colorizer serve`` on a free loopback port once per ``--max-batch`` setting (the policy's
   default, 1, and a batching one) and runs closed-loop clients at each concurrency (1, 4, 16, 64): every
   client sends a request (a 256x256 sketch PNG and a 9-color palette), waits for the PNG, sends the next;
3. records images/s, p50/p95/p99 latency, the mean batch size (the server's ``colorizer_batch_size``
   histogram) and where a request's time goes (``colorizer_stage_duration_seconds``: read, decode,
   palette, queue, model, encode), as deltas of ``/metrics`` over the run.

Targets of the issue, checked in the table: at concurrency 16 at least 0.85x the in-process ceiling's
images/s; at concurrency 1 a p50 at most 15 ms above the in-process latency of one picture.

The clients run in this process (threads, one httpx client each) on the same machine as the server: on a
2-core CPU they take a share of it, which the figures include (say so when comparing).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# The clients share the cores with the server: this process's OpenMP threads must sleep when idle, as the
# server's do (colorizer.serve.policy.PROCESS_ENV), or they spin on the cores the server needs (measured:
# the served model call took 183 ms instead of 95 ms). Set before torch loads; a value given wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STAGES = ("read", "decode", "palette", "queue", "model", "encode")
PALETTE = "#e0a0a0,#304070,#f0d080,#80a060,#503020,#c0c0e0,#a04040,#ffffff,#202020"


def sketch_png(size: int) -> bytes:
    from PIL import Image

    with Image.open(REPO / "colorizer" / "assets" / "demo_sketch.png") as img:
        img = img.convert("L").resize((size, size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
    return buf.getvalue()


def make_models(names: list[str], folder: Path) -> dict[str, str]:
    """name -> a model reference load_runner takes (bundled name or checkpoint path)."""
    from colorizer.checkpoint import save_generator
    from colorizer.models import Sketch2Color

    models = {}
    for name in names:
        if name == "reference":
            torch.manual_seed(0)
            path = folder / "reference_widths.safetensors"
            save_generator(str(path), Sketch2Color())  # REFERENCE_CHANNELS: the published model's widths
            models[name] = str(path)
        else:
            models[name] = name
    return models


def engine_model(model: str, engine: str, folder: Path) -> str:
    """The model file the server loads for ``engine``: the checkpoint itself, or its OpenVINO IR."""
    if engine == "torch":
        return model
    if engine == "openvino":
        from colorizer.export.openvino import export_openvino
        from colorizer.runtime.load import load_colorizer

        generator, _ = load_colorizer(model)
        out = folder / f"ov_{Path(model).stem}"
        return export_openvino(generator, str(out), precision="fp32", verify=False, functional=False).xml
    raise SystemExit(f"unknown engine {engine!r} (torch, openvino)")


def served_runner(model_file: str, engine: str):
    """The runner ``colorizer serve`` loads by default for this engine on the CPU."""
    from colorizer.runtime.load import load_runner

    return load_runner(model_file, device="cpu")


def in_process(runner, png: bytes, batches: list[int], rounds: int) -> dict:
    """``runner`` (the one the service loads) alone on the served request's own inputs (the sketch decoded
    and padded as the service does, the same palette): seconds per call and images/s at each batch size
    (median of ``rounds``)."""
    from colorizer.data.images import decode_image
    from colorizer.inference import fit_to_model, sketch_to_tensor
    from colorizer.palette import parse_palette

    sketch = fit_to_model(sketch_to_tensor(decode_image(png, "sketch")).unsqueeze(0), None)
    palette = parse_palette(PALETTE)
    rows = {}
    for n in batches:
        sketches, palettes = sketch.expand(n, -1, -1, -1), palette.expand(n, -1, -1)
        runner.colorize(sketches, palettes, list(range(n)))  # warm-up
        times = []
        for r in range(rounds):
            start = time.perf_counter()
            runner.colorize(sketches, palettes, [r * n + i for i in range(n)])
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        rows[n] = {"seconds_per_call": median, "images_per_s": n / median}
    best = max(rows, key=lambda n: rows[n]["images_per_s"])
    return {
        "runner": repr(runner),
        "by_batch": rows,
        "best_batch": best,
        "ceiling_images_per_s": rows[best]["images_per_s"],
        "latency_one_s": rows[1]["seconds_per_call"] if 1 in rows else None,
    }


def openvino_async(xml: str, png: bytes, count: int, rounds: int) -> dict:
    """OpenVINO's own way to run several requests at once, beside one batch: ``count`` pictures through
    the runner ``colorize serve --openvino-requests auto`` loads (``OpenVinoRunner(requests="auto")``:
    single-picture requests in an AsyncInferQueue on a THROUGHPUT-hint compilation), against the latency
    runner (the default) given the same pictures one by one and as one batch. images/s, median of ``rounds``."""
    from colorizer.data.images import decode_image
    from colorizer.inference import fit_to_model, sketch_to_tensor
    from colorizer.palette import parse_palette
    from colorizer.runtime.load import load_runner

    sketch = fit_to_model(sketch_to_tensor(decode_image(png, "sketch")).unsqueeze(0), None)
    palette = parse_palette(PALETTE)
    latency = load_runner(xml, device="cpu")
    queued = load_runner(xml, device="cpu", requests="auto")
    sketches, palettes = sketch.expand(count, -1, -1, -1), palette.expand(count, -1, -1)
    seeds = list(range(count))
    ways = {
        f"latency hint, {count} x batch 1": lambda: [latency.colorize(sketch, palette, [s]) for s in seeds],
        f"latency hint, 1 x batch {count}": lambda: latency.colorize(sketches, palettes, seeds),
        f"throughput hint, AsyncInferQueue ({queued.engine.requests} requests), {count} x batch 1 "
        "(--openvino-requests auto)": lambda: queued.colorize(sketches, palettes, seeds),
    }
    result = {}
    for name, run in ways.items():
        run()  # warm-up
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        result[name] = count / float(np.median(times))
    return result


class ServerProcess:
    def __init__(self, model_file: str, kernels: str, max_batch: int, max_wait_ms: float, size: int):
        cmd = [sys.executable, "-m", "colorizer.cli", "serve", model_file, "--port", "0", "--kernels", kernels,
               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--warmup-size", str(size),
               "--max-queue", "1024"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.url = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.lines.append(line)
                found = re.search(r"listening on (http://\S+)/", line)
                if found:
                    self.url = found.group(1)
                if line.startswith("ready: "):
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(600) or self.url is None or self.proc.poll() is not None:
            raise RuntimeError("the server did not start: " + "".join(self.lines[-5:]))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


def scrape(client, url: str) -> dict[str, float]:
    """The service's batch and stage series from /metrics, as {name{labels}: value}."""
    text = client.get(url + "/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith(("colorizer_batch_size_", "colorizer_stage_duration_seconds_")) and (
            "_sum" in line or "_count" in line
        ):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def closed_loop(url: str, concurrency: int, requests: int, body: dict, timeout: float) -> dict:
    """``concurrency`` clients, each sending its next request when the last one is answered, ``requests`` in all."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [requests]

    def client():
        with httpx.Client(timeout=timeout) as http:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                response = http.post(url + "/v1/colorize", files=body["files"], data=body["data"])
                elapsed = time.perf_counter() - start
                with lock:
                    (latencies.append(elapsed) if response.status_code == 200 else errors.append(response.text[:200]))

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": wall,
        "images_per_s": len(latencies) / wall,
        "p50_s": float(np.percentile(lat, 50)),
        "p95_s": float(np.percentile(lat, 95)),
        "p99_s": float(np.percentile(lat, 99)),
    }


def serve_rows(model_file, kernels, max_batch, max_wait_ms, size, concurrencies, per_level, body) -> list[dict]:
    import httpx

    server = ServerProcess(model_file, kernels, max_batch, max_wait_ms, size)
    rows = []
    try:
        with httpx.Client(timeout=60) as http:
            closed_loop(server.url, 1, 2, body, 600)  # first-request effects (allocations, caches) out of the rows
            for c in concurrencies:
                before = scrape(http, server.url)
                row = closed_loop(server.url, c, max(per_level, c), body, 600)  # every client sends at least one
                after = scrape(http, server.url)
                delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                batches = delta.get("colorizer_batch_size_count", 0.0)
                row["mean_batch"] = delta.get("colorizer_batch_size_sum", 0.0) / batches if batches else None
                row["stages_ms"] = {}
                for stage in STAGES:
                    count = delta.get(f'colorizer_stage_duration_seconds_count{{stage="{stage}"}}', 0.0)
                    total = delta.get(f'colorizer_stage_duration_seconds_sum{{stage="{stage}"}}', 0.0)
                    row["stages_ms"][stage] = 1000 * total / count if count else None
                row["max_batch"] = max_batch
                rows.append(row)
                shown = f"{row['images_per_s']:.2f} img/s, p50 {row['p50_s'] * 1000:.0f} ms"
                print(f"  max-batch {max_batch} c={c}: {shown}, mean batch {row['mean_batch']}", flush=True)
    finally:
        server.stop()
    return rows


def markdown(report: dict) -> str:
    from benchmarks.environment import format_environment

    lines = ["# colorizer serve under load", "", *format_environment(report["environment"]), "",
             f"Command: `{report['command']}`", "",
             "Closed-loop clients over loopback HTTP, 256x256 sketches with a 9-color palette. `ceiling`: the engine "
             "in-process at its best batch size. `x ceiling`: served images/s over the ceiling (target at c=16: "
             ">= 0.85). `p50 - one`: served p50 at c=1 minus the in-process latency of one picture (target <= 15 ms). "
             "Stages: mean ms per request (read = upload, queue = waiting for a batch).", ""]  # fmt: skip
    for case in report["cases"]:
        if "skipped" in case:
            lines += [f"## {case['model']} / {case['engine']}: skipped ({case['skipped']})", ""]
            continue
        ip = case["in_process"]
        by_batch = ", ".join(f"batch {n}: {r['images_per_s']:.2f} img/s" for n, r in ip["by_batch"].items())
        lines += [f"## {case['model']} / {case['engine']}", "",
                  f"In-process ({ip['runner']}): {by_batch}; ceiling {ip['ceiling_images_per_s']:.2f} img/s at batch "
                  f"{ip['best_batch']}, one picture {ip['latency_one_s'] * 1000:.0f} ms.", ""]  # fmt: skip
        if case.get("openvino_async"):
            ways = "; ".join(f"{k}: {v:.2f} img/s" for k, v in case["openvino_async"].items())
            lines += [f"OpenVINO's asynchronous infer requests against one batch (in-process): {ways}.", ""]
        lines += ["| max batch | c | images/s | x ceiling | p50 ms | p95 ms | p99 ms | p50 - one ms | mean batch | "
                  "errors | " + " | ".join(STAGES) + " |", "|" + "---|" * (10 + len(STAGES))]  # fmt: skip
        for row in case["serve"]:
            stages = " | ".join("-" if row["stages_ms"][s] is None else f"{row['stages_ms'][s]:.1f}" for s in STAGES)
            extra = f"{(row['p50_s'] - ip['latency_one_s']) * 1000:+.0f}" if row["concurrency"] == 1 else ""
            mean_batch = "-" if row["mean_batch"] is None else f"{row['mean_batch']:.2f}"
            lines.append(
                f"| {row['max_batch']} | {row['concurrency']} | {row['images_per_s']:.2f} | "
                f"{row['images_per_s'] / ip['ceiling_images_per_s']:.2f} | {row['p50_s'] * 1000:.0f} | "
                f"{row['p95_s'] * 1000:.0f} | {row['p99_s'] * 1000:.0f} | {extra} | {mean_batch} | {row['errors']} | "
                f"{stages} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="result folder (JSON + Markdown)")
    parser.add_argument("--models", default="demo,reference", help="demo (bundled) and/or reference (widths)")
    parser.add_argument("--engines", default="torch,openvino", help="torch (native kernels) and/or openvino")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--max-batches", default="default,1,4", help="server --max-batch settings; default = policy")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level (at least c)")
    parser.add_argument("--reference-requests", type=int, default=8, help="the same for the reference widths (slow)")
    parser.add_argument("--rounds", type=int, default=5, help="in-process rounds per batch size")
    parser.add_argument("--quick", action="store_true", help="demo, torch, c=1,4, 8 requests: a check of the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.engines, args.concurrency, args.requests, args.rounds = "demo", "torch", "1,4", 8, 2
        args.max_batches = "default,4"

    from benchmarks.environment import collect_environment
    from benchmarks.output import write_result
    from colorizer.serve.policy import default_max_batch

    env = collect_environment("cpu")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    body = {"files": {"sketch": ("sketch.png", sketch_png(args.size), "image/png")},
            "data": {"palette": PALETTE, "seed": "0"}}  # fmt: skip
    report = {"environment": env, "command": "python -m benchmarks.bench_serve " + " ".join(argv or sys.argv[1:]),
              "size": args.size, "cases": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        models = make_models(args.models.split(","), Path(tmp))
        for model_name, model in models.items():
            per_level = args.reference_requests if model_name == "reference" else args.requests
            for engine in args.engines.split(","):
                case = {"model": model_name, "engine": engine}
                report["cases"].append(case)
                print(f"{model_name} / {engine}", flush=True)
                try:
                    model_file = engine_model(model, engine, Path(tmp))
                except Exception as exc:  # noqa: BLE001 - an engine that cannot be built here is a skipped row
                    case["skipped"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    continue
                kernels = "native" if engine == "torch" else "auto"
                runner = served_runner(model_file, engine)
                ip = in_process(runner, body["files"]["sketch"][1], [1, 2, 4, 8], args.rounds)
                case["in_process"] = ip
                print(f"  in-process: {ip['ceiling_images_per_s']:.2f} img/s at batch {ip['best_batch']}", flush=True)
                fmt = "torch" if engine == "torch" else engine
                settings = []
                default = default_max_batch("cpu", fmt, runner)
                del runner  # the server loads its own
                for b in args.max_batches.split(","):
                    value = default if b == "default" else int(b)
                    if value not in settings:
                        settings.append(value)
                case["default_max_batch"] = default
                if engine == "openvino":
                    case["openvino_async"] = openvino_async(model_file, body["files"]["sketch"][1], 4, args.rounds)
                    print(f"  OpenVINO async vs batch: {case['openvino_async']}", flush=True)
                case["serve"] = []
                for max_batch in settings:
                    case["serve"] += serve_rows(model_file, kernels, max_batch, args.max_wait_ms, args.size,
                                                concurrencies, per_level, body)  # fmt: skip
    env["cpu"]["load_average_end"] = list(os.getloadavg())
    json_path, md_path = write_result(args.out, "bench_serve", report, markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
