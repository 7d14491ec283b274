"""`colorizer serve` under load: real HTTP over loopback, closed-loop clients, beside the in-process engine.

    python -m benchmarks.bench_serve --out benchmarks/results/serve-<machine>-<date>      # the committed result
    python -m benchmarks.bench_serve --quick --out /tmp/serve                             # a one-minute check

For each model (the bundled ``demo``; ``reference``: the reference widths, random weights, the same cost)
and engine (``torch``: the checkpoint through ``load_runner`` with ``--kernels native``; ``openvino``: the
same model exported to OpenVINO IR fp32), the run

1. starts the in-process side, a ``Probe``: the runner ``colorizer serve`` loads, in a process of its own
   set up as the ``colorizer`` command sets up its own; it sweeps batch sizes 1, 2, 4, 8 on the served
   request's own sketch and palette (the ceiling: the best images/s);
2. starts ``colorizer serve`` on a free loopback port once per ``--max-batch`` setting and runs closed-loop
   clients (a 256x256 sketch PNG, a 9-color palette, a fresh seed per request) at each concurrency
   (1, 4, 16, 64), interleaved with the probe so that both sides meet the same moment of the machine: at
   c=1 one probe call then one served request, ``--pairs`` times; at c>1 the probe at the ceiling's batch
   size, then the served loop, ``--blocks`` times;
3. records images/s, p50/p95/p99 latency, the gap (served minus in-process latency of one picture, median
   of the pairs), ``x ceiling`` (served over in-process images/s, median of the blocks), the mean batch
   size (``colorizer_batch_size``) and where a request's time goes (``colorizer_stage_duration_seconds``:
   read, decode, palette, queue, model, encode), as deltas of ``/metrics`` over the run.

Targets of the issue, checked in the table: at concurrency 16 at least 0.85x the in-process ceiling's
images/s; at concurrency 1 a p50 at most 15 ms above the in-process latency of one picture.

The clients run in this process (threads, one kept-alive ``http.client`` connection each, the multipart
body built by hand; no tensor work) on the same machine as the server: on a 2-core CPU they take a share
of it (about 1 ms of CPU a request), which the figures include.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

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


def request_inputs(png: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """The served request's sketch (decoded and padded as the service does) and palette, for in-process calls."""
    from colorizer.data.images import decode_image
    from colorizer.inference import fit_to_model, sketch_to_tensor
    from colorizer.palette import parse_palette

    return fit_to_model(sketch_to_tensor(decode_image(png, "sketch")).unsqueeze(0), None), parse_palette(PALETTE)


PROBE_HELLO = "probe ready"


def probe_main(model_file: str, kernels: str, size: int) -> int:
    """The in-process side (``--probe``): this process, set up as the ``colorizer`` command sets up its own
    (``tune_malloc``), loads the runner ``colorizer serve`` loads, then answers lines ``BATCH CALLS SEED
    STREAMS`` from stdin with a JSON list of seconds (picture i of call j gets seed SEED + j * BATCH + i: fresh
    noise every call, as the served requests get):

    - STREAMS 1: ``CALLS`` ``Runner.colorize`` calls of BATCH pictures on all threads, one after another, the
      seconds of each;
    - STREAMS k > 1: k threads (this one and k - 1 kept for the purpose, as the service's batcher keeps its
      workers) each make ``CALLS`` calls on threads // k threads side by side; the wall seconds per round of k
      calls.
    """
    from colorizer.runtime.allocator import tune_malloc

    tune_malloc()
    from colorizer.runtime.load import load_runner

    runner = load_runner(model_file, device="cpu", kernels=kernels)
    sketch, palette = request_inputs(sketch_png(size))
    threads = torch.get_num_threads()
    helpers, helper_count = None, 0  # the other streams' threads, kept as the service keeps its workers
    print(json.dumps({"hello": PROBE_HELLO, "runner": repr(runner), "threads": threads}), flush=True)
    for line in sys.stdin:
        n, calls, seed, streams = (int(v) for v in line.split())
        args = (runner, sketch.expand(n, -1, -1, -1), palette.expand(n, -1, -1), calls, seed, streams)
        if streams == 1:
            print(json.dumps(_probe_calls(*args, 0, threads)), flush=True)
            continue
        if helper_count < streams - 1:
            helpers, helper_count = concurrent.futures.ThreadPoolExecutor(streams - 1), streams - 1
        narrow = max(1, threads // streams)
        start = time.perf_counter()
        pending = [helpers.submit(_probe_calls, *args, k, narrow) for k in range(1, streams)]
        _probe_calls(*args, 0, narrow)
        for p in pending:
            p.result()
        wall = time.perf_counter() - start
        torch.set_num_threads(threads)
        print(json.dumps([wall / calls] * calls), flush=True)
    return 0


def _probe_calls(runner, sketches, palettes, calls: int, seed: int, streams: int, k: int, threads: int) -> list:
    """Stream ``k``'s ``calls`` calls on ``threads`` threads, the seconds of each."""
    torch.set_num_threads(threads)
    n, times = sketches.shape[0], []
    for j in range(calls):
        start = time.perf_counter()
        runner.colorize(sketches, palettes, [seed + ((j * streams + k) * n) + i for i in range(n)])
        times.append(time.perf_counter() - start)
    return times


class Probe:
    """The engine in-process, in a process of its own (``probe_main``), called between served runs: both
    sides meet the same moment of a shared machine (on the development VM one call's time moves by 20-40%
    from minute to minute)."""

    def __init__(self, model_file: str, kernels: str, size: int):
        cmd = [sys.executable, "-m", "benchmarks.bench_serve", "--probe", model_file, "--kernels", kernels,
               "--size", str(size)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        hello = json.loads(self.proc.stdout.readline() or "{}")
        if hello.get("hello") != PROBE_HELLO:
            raise RuntimeError("the in-process probe did not start")
        self.runner, self.threads = hello["runner"], hello["threads"]
        self.seed = 1 << 20

    def calls(self, batch: int, count: int, streams: int = 1) -> list[float]:
        """Seconds of ``count`` calls at ``batch`` pictures, each with fresh seeds (``streams`` > 1: the wall
        seconds per round of that many calls side by side)."""
        self.proc.stdin.write(f"{batch} {count} {self.seed} {streams}\n")
        self.proc.stdin.flush()
        self.seed += batch * count * streams
        return json.loads(self.proc.stdout.readline())

    def sweep(self, batches: list[int], rounds: int, streams: int = 1) -> dict:
        """The latency of one picture and the best images/s over ``batches`` and, with ``streams`` > 1, over
        that many pictures side by side (the ceiling): ``rounds`` passes over the ways in turn (so that a slow
        minute of the machine hits them all), medians."""
        ways = [(n, 1) for n in batches] + ([(1, streams)] if streams > 1 else [])
        times: dict[tuple[int, int], list[float]] = {w: [] for w in ways}
        for n, k in ways:
            self.calls(n, 1, k)  # warm-up
        for _ in range(rounds):
            for n, k in ways:
                times[(n, k)] += self.calls(n, 1, k)
        rows = {}
        for n, k in ways:
            median = float(np.median(times[(n, k)]))
            rows[(n, k)] = {"seconds_per_call": median, "images_per_s": n * k / median}
        best = max(rows, key=lambda w: rows[w]["images_per_s"])
        return {
            "runner": self.runner,
            "threads": self.threads,
            "by_batch": {n: rows[(n, 1)] for n in batches},
            "streams": {"streams": streams, **rows[(1, streams)]} if streams > 1 else None,
            "best_batch": best[0],
            "best_streams": best[1],
            "ceiling_images_per_s": rows[best]["images_per_s"],
            "latency_one_s": rows[(1, 1)]["seconds_per_call"],
        }

    def best_now(self, ways: list[tuple[int, int]]) -> float:
        """The best images/s over ``ways`` (batch, streams), measured now."""
        return max(n * k / float(np.median(self.calls(n, max(2, 4 // (n * k)), k))) for n, k in ways)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def openvino_async(xml: str, png: bytes, count: int, rounds: int) -> dict:
    """OpenVINO's own way to run several requests at once, beside one batch: ``count`` pictures through
    the runner ``colorize serve --openvino-requests auto`` loads (``OpenVinoRunner(requests="auto")``:
    single-picture requests in an AsyncInferQueue on a THROUGHPUT-hint compilation), against the latency
    runner (the default) given the same pictures one by one and as one batch. images/s, median of ``rounds``."""
    from colorizer.runtime.load import load_runner

    sketch, palette = request_inputs(png)
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
    def __init__(self, model_file: str, kernels: str, max_batch: int, max_wait_ms: float | None, size: int,
                 batch_shape: str | None = None, streams: int | None = None):  # fmt: skip
        cmd = [sys.executable, "-m", "colorizer.cli", "serve", model_file, "--port", "0", "--kernels", kernels,
               "--max-batch", str(max_batch), "--warmup-size", str(size), "--max-queue", "1024"]  # fmt: skip
        if max_wait_ms is not None:  # else the policy's default
            cmd += ["--max-wait-ms", str(max_wait_ms)]
        if batch_shape is not None:  # else the policy's default
            cmd += ["--batch-shape", batch_shape]
        if streams is not None:  # else the policy's default
            cmd += ["--streams", str(streams)]
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


SEEDS = itertools.count(1)  # every served request gets a fresh seed, as every probe call does


def multipart(body: dict, seed: int) -> tuple[bytes, str]:
    """The request's multipart/form-data body (the sketch file, the palette, ``seed``) and its content type,
    built by hand: the clients stand in for users on other machines, so their share of these cores is kept
    small (httpx spent 14 ms of CPU a request here, this client about 1 ms)."""
    boundary = "colorizer-bench-boundary"
    name, data, kind = body["files"]["sketch"]
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="sketch"; filename="{name}"\r\n'
             f"Content-Type: {kind}\r\n\r\n".encode() + data + b"\r\n"]  # fmt: skip
    for key, value in {**body["data"], "seed": str(seed)}.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def closed_loop(url: str, concurrency: int, requests: int, body: dict, timeout: float) -> dict:
    """``concurrency`` clients (threads, one kept-alive ``http.client`` connection each), each sending its next
    request when the last one is answered, ``requests`` in all; each request with a fresh seed."""
    import http.client
    from urllib.parse import urlsplit

    host, port = urlsplit(url).hostname, urlsplit(url).port
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [requests]

    def client():
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                    seed = next(SEEDS)
                payload, content_type = multipart(body, seed)
                start = time.perf_counter()
                connection.request("POST", "/v1/colorize", payload, {"Content-Type": content_type})
                response = connection.getresponse()
                answer = response.read()
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status == 200 and answer[:8] == b"\x89PNG\r\n\x1a\n":
                        latencies.append(elapsed)
                    else:
                        errors.append(f"{response.status}: {answer[:200]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"wall_s": time.perf_counter() - start, "latencies": latencies, "errors": errors}


def stage_means(before: dict, after: dict) -> tuple[float | None, dict]:
    """The mean batch size and the mean ms of each stage between two scrapes."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    batches = delta.get("colorizer_batch_size_count", 0.0)
    mean_batch = delta.get("colorizer_batch_size_sum", 0.0) / batches if batches else None
    stages = {}
    for stage in STAGES:
        count = delta.get(f'colorizer_stage_duration_seconds_count{{stage="{stage}"}}', 0.0)
        total = delta.get(f'colorizer_stage_duration_seconds_sum{{stage="{stage}"}}', 0.0)
        stages[stage] = 1000 * total / count if count else None
    return mean_batch, stages


def serve_rows(probe: Probe, ceiling: dict, server_args: tuple, concurrencies, per_level, pairs, blocks, body):
    """One server (``server_args`` for ServerProcess), measured against the probe, interleaved:

    - c=1: ``pairs`` times one probe call then one served request; the gap is the median of the pairs'
      differences (served latency - in-process latency of one picture, both with fresh seeds);
    - c>1: ``blocks`` times the probe at batch 1 and at the ceiling's batch size (its best of the two), then
      the served closed loop; ``x ceiling`` is the median over blocks of served images/s over the probe's
      images/s of the same block.
    """
    import httpx

    server = ServerProcess(*server_args)
    ways = sorted({(1, 1), (ceiling["best_batch"], ceiling["best_streams"])})
    rows = []
    try:
        with httpx.Client(timeout=60) as http:
            limits = http.get(server.url + "/v1/model").json()["limits"]
            closed_loop(server.url, 1, 3, body, 600)  # first-request effects (allocations, caches) out of the rows
            for c in concurrencies:
                before = scrape(http, server.url)
                latencies, errors, ratios, probe_ips, served_ips, gaps, ones = [], [], [], [], [], [], []
                if c == 1:
                    for _ in range(pairs):
                        time.sleep(0.02)  # let the other side's OpenMP threads stop spinning (about 10 ms)
                        one = probe.calls(1, 1)[0]
                        time.sleep(0.02)
                        run = closed_loop(server.url, 1, 1, body, 600)
                        latencies += run["latencies"]
                        errors += run["errors"]
                        if run["latencies"]:
                            gaps.append(run["latencies"][0] - one)
                            ones.append(one)
                    wall = sum(latencies)
                else:
                    wall = 0.0
                    for _ in range(blocks):
                        block_probe = probe.best_now(ways)
                        run = closed_loop(server.url, c, max(per_level, c), body, 600)
                        latencies += run["latencies"]
                        errors += run["errors"]
                        wall += run["wall_s"]
                        block_served = len(run["latencies"]) / run["wall_s"]
                        probe_ips.append(block_probe)
                        served_ips.append(block_served)
                        ratios.append(block_served / block_probe)
                mean_batch, stages = stage_means(before, scrape(http, server.url))
                lat = np.array(latencies) if latencies else np.array([float("nan")])
                row = {
                    "max_batch": server_args[2],
                    "streams": limits.get("streams", 1),
                    "concurrency": c,
                    "requests": len(latencies) + len(errors),
                    "errors": len(errors),
                    "first_error": errors[0] if errors else None,
                    "images_per_s": len(latencies) / wall if wall else None,
                    "p50_s": float(np.percentile(lat, 50)),
                    "p95_s": float(np.percentile(lat, 95)),
                    "p99_s": float(np.percentile(lat, 99)),
                    "mean_batch": mean_batch,
                    "stages_ms": stages,
                }
                if c == 1:
                    row["probe_one_s"] = float(np.median(ones)) if ones else None
                    row["gap_s"] = float(np.median(gaps)) if gaps else None
                    row["gaps_s"] = gaps
                else:
                    row["x_ceiling"] = float(np.median(ratios))
                    row["blocks"] = [{"served_images_per_s": a, "probe_images_per_s": b, "ratio": r}
                                     for a, b, r in zip(served_ips, probe_ips, ratios)]  # fmt: skip
                rows.append(row)
                shown = f"x ceiling {row['x_ceiling']:.2f}" if c > 1 else f"gap {1000 * (row['gap_s'] or 0):+.0f} ms"
                print(f"  max-batch {row['max_batch']} c={c}: {row['images_per_s']:.2f} img/s, {shown}", flush=True)
    finally:
        server.stop()
    return rows


def markdown(report: dict) -> str:
    from benchmarks.environment import format_environment

    lines = ["# colorizer serve under load", "", *format_environment(report["environment"]), "",
             f"Command: `{report['command']}`", "",
             "Closed-loop clients over loopback HTTP (threads of the benchmark's process, on the same cores as the "
             "server), 256x256 sketches with a 9-color palette, a fresh seed for every request. The in-process "
             "side is the same runner in a process of its own (set up as the `colorizer` command sets up its "
             "own), called between the served runs so that both meet the same moment of the machine. `ceiling`: "
             "its best images/s over batch sizes and, where the server runs pictures side by side (`--streams`), over "
             "that many pictures side by side on threads/streams threads each. `x ceiling` (target at c=16: "
             ">= 0.85): the median over blocks of served images/s over the in-process images/s (the best of batch 1 "
             "and the ceiling's way) "
             "measured just before. "
             "`gap` (target at c=1: <= 15 ms): the median over pairs of one served request's latency minus one "
             "in-process call's, taken one after the other. Stages: mean ms per request (read = upload, queue "
             "= waiting for the model's thread, model = the batch's call).", ""]  # fmt: skip
    for case in report["cases"]:
        if "skipped" in case:
            lines += [f"## {case['model']} / {case['engine']}: skipped ({case['skipped']})", ""]
            continue
        ip = case["in_process"]
        ways = [f"batch {n}: {r['images_per_s']:.2f} img/s" for n, r in ip["by_batch"].items()]
        if ip.get("streams"):
            st = ip["streams"]
            ways.append(f"{st['streams']} pictures side by side on {max(1, ip['threads'] // st['streams'])} "
                        f"thread(s) each: {st['images_per_s']:.2f} img/s")  # fmt: skip
        best = f"{ip['best_streams']} streams" if ip.get("best_streams", 1) > 1 else f"batch {ip['best_batch']}"
        lines += [f"## {case['model']} / {case['engine']}", "",
                  f"In-process ({ip['runner']}, {ip.get('threads', '?')} threads): {'; '.join(ways)}; ceiling "
                  f"{ip['ceiling_images_per_s']:.2f} img/s ({best}), one picture {ip['latency_one_s'] * 1000:.0f} "
                  f"ms. Server defaults: --max-batch {case['default_max_batch']}, --streams "
                  f"{case.get('default_streams', 1)}.", ""]  # fmt: skip
        if case.get("openvino_async"):
            ways = "; ".join(f"{k}: {v:.2f} img/s" for k, v in case["openvino_async"].items())
            lines += [f"OpenVINO's asynchronous infer requests against one batch (in-process): {ways}.", ""]
        lines += ["| max batch | streams | c | images/s | x ceiling | in-process one ms | p50 ms | gap ms | p95 ms | "
                  "p99 ms | mean batch | errors | " + " | ".join(STAGES) + " |",
                  "|" + "---|" * (12 + len(STAGES))]  # fmt: skip
        for row in case["serve"]:
            stages = " | ".join("-" if row["stages_ms"][s] is None else f"{row['stages_ms'][s]:.1f}" for s in STAGES)
            one = f"{row['probe_one_s'] * 1000:.0f}" if row.get("probe_one_s") else ""
            gap = f"{row['gap_s'] * 1000:+.0f}" if row.get("gap_s") is not None else ""
            ratio = f"{row['x_ceiling']:.2f}" if "x_ceiling" in row else ""
            mean_batch = "-" if row["mean_batch"] is None else f"{row['mean_batch']:.2f}"
            lines.append(
                f"| {row['max_batch']} | {row.get('streams', 1)} | {row['concurrency']} | {row['images_per_s']:.2f} | "
                f"{ratio} | {one} | "
                f"{row['p50_s'] * 1000:.0f} | {gap} | {row['p95_s'] * 1000:.0f} | {row['p99_s'] * 1000:.0f} | "
                f"{mean_batch} | {row['errors']} | {stages} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="result folder (JSON + Markdown; required)")
    parser.add_argument("--models", default="demo,reference", help="demo (bundled) and/or reference (widths)")
    parser.add_argument("--engines", default="torch,openvino", help="torch (native kernels) and/or openvino")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--max-batches", default="default", help="server --max-batch settings; default = policy")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="server --max-wait-ms (default: policy)")
    parser.add_argument("--batch-shape", choices=("fixed", "any"), help="server --batch-shape (default: policy)")
    parser.add_argument("--streams", type=int, default=None, help="server --streams (default: policy)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--requests", type=int, default=32, help="requests per block at c>1 (at least c)")
    parser.add_argument("--reference-requests", type=int, default=16, help="the same for the reference widths (slow)")
    parser.add_argument("--pairs", type=int, default=16, help="probe/served pairs at c=1")
    parser.add_argument("--blocks", type=int, default=3, help="probe/served blocks at each c>1")
    parser.add_argument("--rounds", type=int, default=5, help="in-process calls per batch size for the ceiling")
    parser.add_argument("--quick", action="store_true", help="demo, torch, c=1,4, few requests: a check of the script")
    parser.add_argument("--probe", metavar="MODEL", help=argparse.SUPPRESS)  # the in-process side (Probe)
    parser.add_argument("--kernels", default="native", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        return probe_main(args.probe, args.kernels, args.size)
    if not args.out:
        parser.error("the following arguments are required: --out")
    if args.quick:
        args.models, args.engines, args.concurrency, args.requests, args.rounds = "demo", "torch", "1,4", 8, 2
        args.pairs, args.blocks = 4, 1

    from benchmarks.environment import collect_environment
    from benchmarks.output import write_result
    from colorizer.serve.policy import default_max_batch, default_streams

    env = collect_environment("cpu")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    body = {"files": {"sketch": ("sketch.png", sketch_png(args.size), "image/png")}, "data": {"palette": PALETTE}}
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
                if engine == "openvino":
                    case["openvino_async"] = openvino_async(model_file, body["files"]["sketch"][1], 4, args.rounds)
                    print(f"  OpenVINO async vs batch: {case['openvino_async']}", flush=True)
                default = default_max_batch("cpu", engine)
                case["default_max_batch"] = default
                settings = []
                for b in args.max_batches.split(","):
                    value = default if b == "default" else int(b)
                    if value not in settings:
                        settings.append(value)
                probe = Probe(model_file, kernels, args.size)
                try:
                    fmt = "torch" if engine == "torch" else engine
                    case["default_streams"] = default_streams("cpu", fmt, probe.threads)
                    streams = args.streams if args.streams is not None else case["default_streams"]
                    case["in_process"] = ip = probe.sweep([1, 2, 4, 8], args.rounds, streams)
                    print(f"  in-process: {ip['ceiling_images_per_s']:.2f} img/s at batch {ip['best_batch']} x "
                          f"{ip['best_streams']} stream(s)", flush=True)  # fmt: skip
                    case["serve"] = []
                    for max_batch in settings:
                        server_args = (model_file, kernels, max_batch, args.max_wait_ms, args.size, args.batch_shape,
                                       args.streams)  # fmt: skip
                        case["serve"] += serve_rows(probe, ip, server_args, concurrencies, per_level, args.pairs,
                                                    args.blocks, body)  # fmt: skip
                finally:
                    probe.close()
    env["cpu"]["load_average_end"] = list(os.getloadavg())
    json_path, md_path = write_result(args.out, "bench_serve", report, markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
