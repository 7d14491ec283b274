"""One device script for a lent GPU: parity, determinism, graphs, compiled code, speed, in one call.

    python -m benchmarks.gpu_check --out DIR            # on the GPU (stops itself after 7 minutes)
    python -m benchmarks.gpu_check --out DIR --dry-run  # the same plan on the CPU, tiny shapes (<1 min)

Steps, in this order (each has its own budget; a wall-clock budget for the whole run is checked
between steps and between the items of a step, and a watchdog ends the process when it runs out):

1. ``parity``: pytest over tests/kernels (the K-means Triton test included), the ``triton`` and ``gpu``
   cases (on a GPU the whole case matrix, compiled; tests/kernels/parity.py), one row per test.
2. ``determinism``: every op's forward and backward twice on the same inputs, bitwise equal.
3. ``graphs``: the ops captured in a CUDA graph and replayed (equal to eager), and
   ``torch.compile(mode="reduce-overhead")`` through them.
4. ``compiled``: registers and spills of every compiled variant, read from the launcher's cache
   (``JITFunction.device_caches``), and the first-call time (compile included) of each op.
5. ``host``: host microseconds per call at 32x512x2x2 (where eager mode is CPU-bound).
6. ``t_copy``: every op's time as a multiple of T_copy (a copy of its activation) at 32x64x256x256,
   32x256x32x32 and 32x512x2x2 (gates: their real shapes, against their ideal bytes), fp32/bf16,
   NCHW/channels_last, forward and forward+backward, CUDA-graph replay over rotated inputs
   (benchmarks.gpu_kernels' cases).
7. ``train``: the trainer's own step (``colorizer.train.step.GanStep``, palettes included), batch 32,
   ``--amp bf16``, 256 px: eager, triton, native, compile, triton+compile; images/s.
8. ``inference``: batch 32 throughput and batch 1 latency, CUDA graphs.
9. ``palettes``: palettes/s at batch 64 and 1024.

Every row carries the issue's target where there is one and whether it holds. An exception is a row
(status ``error`` with the exception text), never swallowed; a step or item cut by its budget is a
row (status ``budget``). ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` are rewritten atomically
after every row, so a killed run still leaves everything it measured; they start with the device,
versions (torch, triton, CUDA, driver), git revision and date.

``--dry-run`` runs the same plan on the CPU with tiny shapes: Triton in its interpreter
(TRITON_INTERPRET=1, set here before Triton is imported), everything else eager; steps that need a
GPU (CUDA graphs) are ``skipped`` rows saying so. tests/test_gpu_check.py runs it in CI.

Only packages of the device image are used (torch, triton, numpy, pytest) plus this project. Triton
API differences (3.6 on the device, 3.9 here) are handled where foreseeable: the launcher cache is
read defensively.
"""

# ruff: noqa: B023 (the timed closures are called inside the loop iteration that defines them)
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.output import write_json, write_text

REPO_ROOT = Path(__file__).resolve().parents[1]

# The targets (GPU, unchanged): (description, comparison, bound).
TARGETS = {
    "gn_fwd_x_t_copy": ("GroupNorm+act forward <= 1.3 x T_copy", "<=", 1.3),
    "gn_fwdbwd_x_t_copy": ("GroupNorm+act forward+backward <= 3.5 x T_copy", "<=", 3.5),
    "gate_x_ideal": ("attention gate <= 1.4 x its ideal bytes time", "<=", 1.4),
    "train_images_per_s": ("the trainer's step >= 1,000 images/s (batch 32, bf16, 256 px)", ">=", 1000.0),
    "inference_images_per_s": ("inference >= 5,000 images/s at batch 32", ">=", 5000.0),
    "latency_ms": ("inference < 1 ms at batch 1", "<", 1.0),
    "palettes_per_s": ("palettes >= 100,000/s", ">=", 100000.0),
    "no_spills": ("no register spills", "==", 0),
}


def target_holds(name: str, value) -> bool | None:
    if value is None or name not in TARGETS:
        return None
    _, op, bound = TARGETS[name]
    return {"<=": value <= bound, ">=": value >= bound, "<": value < bound, "==": value == bound}[op]


# --------------------------------------------------------------------------------------------------
# Report: rows written as they come
# --------------------------------------------------------------------------------------------------


class Report:
    """Rows of the run, rewritten atomically to JSON and Markdown after every row."""

    def __init__(self, out: Path, meta: dict):
        self.out = out
        self.meta = meta
        self.rows: list[dict] = []
        self.lock = threading.RLock()
        out.mkdir(parents=True, exist_ok=True)
        self.write()

    def add(self, step: str, name: str, status: str = "ok", **fields) -> dict:
        row = {"step": step, "name": name, "status": status, "t_s": round(time.perf_counter() - START, 2)}
        target = fields.pop("target", None)
        value = fields.get("value")
        if target is not None:
            row["target"] = TARGETS[target][0]
            measured = status in ("ok", "fail") and not self.meta.get("dry_run")
            row["target_holds"] = target_holds(target, value) if measured else None
        row.update(fields)
        with self.lock:
            self.rows.append(row)
            self.write()
        shown = row.get("error") or row.get("reason") or row.get("value")
        print(f"[{row['t_s']:7.1f}s] {step:12s} {status:8s} {name}: {str(shown)[:160]}", flush=True)
        return row

    def error(self, step: str, name: str, exc: BaseException) -> dict:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return self.add(step, name, "error", error=f"{type(exc).__name__}: {exc}", traceback=text[-6000:])

    def write(self) -> None:
        with self.lock:
            doc = {"meta": self.meta, "rows": self.rows}
            write_json(self.out / "gpu_check.json", doc, indent=1)
            write_text(self.out / "gpu_check.md", markdown(doc))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def markdown(doc: dict) -> str:
    meta = doc["meta"]
    lines = [f"# gpu_check {'(dry run, CPU)' if meta.get('dry_run') else ''}".rstrip(), ""]
    for key in ("date_utc", "device", "torch", "triton", "cuda", "driver", "python", "git_revision", "budget_s"):
        lines.append(f"- {key}: {meta.get(key)}")
    counts: dict[str, int] = {}
    for row in doc["rows"]:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines += ["- rows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), ""]
    targets = [r for r in doc["rows"] if "target" in r]
    if targets:
        lines += ["## Targets", "", "| step | row | value | target | holds |", "|---|---|---|---|---|"]
        for r in targets:
            holds = {True: "yes", False: "NO", None: "not measured" if not meta.get("dry_run") else "n/a (CPU)"}[
                r.get("target_holds")
            ]
            lines.append(
                f"| {r['step']} | {r['name']} | {_fmt(r.get('value'))} {r.get('unit', '')} | {r['target']} | {holds} |"
            )
        lines.append("")
    lines += ["## Rows", "", "| t (s) | step | row | status | value | unit | note |", "|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        note = r.get("error") or r.get("reason") or r.get("note") or ""
        note = str(note).replace("|", "/").replace("\n", " ")[:200]
        lines.append(
            f"| {r['t_s']} | {r['step']} | {r['name']} | {r['status']} | {_fmt(r.get('value'))} | "
            f"{r.get('unit', '')} | {note} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Budget
# --------------------------------------------------------------------------------------------------

START = time.perf_counter()


class OutOfBudget(Exception):
    """Raised inside a step when its budget (or the run's) is spent; the runner records a row."""


@dataclass
class Budget:
    """The run's wall-clock budget (from ``started``) and the current step's deadline."""

    total_s: float
    step_deadline: float = math.inf
    started: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.total_s - (time.perf_counter() - self.started)

    def remaining(self) -> float:
        return min(self.left(), self.step_deadline - time.perf_counter())

    def check(self, what: str, need_s: float = 0.0) -> None:
        """Raise OutOfBudget when less than need_s seconds are left (checked between items)."""
        if self.remaining() <= need_s:
            raise OutOfBudget(f"{what}: {max(self.remaining(), 0):.0f} s left, needs about {need_s:.0f} s")


def start_watchdog(report: Report, budget: Budget) -> None:
    """End the process when the run's wall-clock budget is spent, after writing a last row."""

    def watch():
        while True:
            left = budget.left()
            if left <= 0:
                report.add("run", "watchdog", "budget", reason=f"wall-clock budget of {budget.total_s:.0f} s spent")
                os._exit(3)
            time.sleep(min(left, 1.0))

    threading.Thread(target=watch, daemon=True).start()


# --------------------------------------------------------------------------------------------------
# Configuration: GPU sizes and the dry run's tiny ones
# --------------------------------------------------------------------------------------------------


@dataclass
class Config:
    dry_run: bool
    device: str
    budget_s: float
    step_budget_s: dict[str, float]
    parity_args: list[str]
    det_shape: tuple[int, int, int, int]
    host_shape: tuple[int, int, int, int]
    host_calls: int
    gn_shapes: list[tuple[int, int, int, int]]
    gate_shapes: list[tuple[int, int, int, int, int]]
    dtypes: list[str]
    layouts: list[str]
    train_batch: int
    size: int
    channels: tuple[int, ...] | None
    disc_channels: tuple[int, int, int, int]
    train_providers: list[str]
    infer_batches: list[int]
    palette_batches: list[int]
    palette_size: int
    rounds: int
    infer_providers: list[str] = field(default_factory=lambda: ["eager", "triton", "native"])
    palette_kwargs: dict = field(default_factory=dict)


def xdist_args(workers: int) -> list[str]:
    """``-n workers`` when pytest-xdist is installed (the device image has it), else nothing."""
    import importlib.util

    return ["-n", str(workers)] if importlib.util.find_spec("xdist") else []


def make_config(dry_run: bool, budget_s: float | None) -> Config:
    tests = ["tests/kernels"]
    if dry_run:
        return Config(
            dry_run=True,
            device="cpu",
            budget_s=budget_s or 60.0,
            step_budget_s={  # 55 s of the 60
                "parity": 14,
                "determinism": 5,
                "graphs": 6,
                "compiled": 3,
                "host": 3,
                "t_copy": 5,
                "train": 10,
                "inference": 5,
                "palettes": 4,
            },
            parity_args=[*tests, "-m", "triton and not gpu", "-k", "all_pairs or recorded_values or bad_arguments"],
            det_shape=(1, 32, 2, 3),
            host_shape=(2, 64, 2, 2),
            host_calls=3,
            gn_shapes=[(1, 64, 4, 4)],
            gate_shapes=[(1, 32, 32, 2, 2)],
            dtypes=["fp32"],
            layouts=["nchw", "channels_last"],
            train_batch=1,
            size=128,
            channels=(64, 64, 64, 64),
            disc_channels=(32, 32, 32, 32),
            # A whole model on the interpreter takes ~10 s per forward at 128 px: the dry run covers
            # the Triton ops in the op steps (and CI in tests/kernels/test_whole_model.py).
            train_providers=["eager", "native", "compile"],
            infer_providers=["eager", "native"],
            infer_batches=[1],
            palette_batches=[2],
            palette_size=32,
            palette_kwargs={"restarts": 1, "iters": 2},
            rounds=1,
        )
    return Config(
        dry_run=False,
        device="cuda",
        budget_s=budget_s or 420.0,
        step_budget_s={  # 410 s of the 420: every step gets its turn even if all run to their limit
            "parity": 120,
            "determinism": 15,
            "graphs": 35,
            "compiled": 20,
            "host": 10,
            "t_copy": 55,
            "train": 100,
            "inference": 35,
            "palettes": 20,
        },
        # The whole matrix, compiled, on 4 workers (the device has 16 cores; pytest-xdist is in its
        # image); compile_check is CI's (it compiles for sm_90 without a GPU and takes minutes).
        parity_args=[*tests, "-m", "triton or gpu", "-k", "not compile_for_a_gpu", *xdist_args(4)],
        det_shape=(32, 64, 256, 256),
        host_shape=(32, 512, 2, 2),
        host_calls=200,
        # the largest site (split), a fused 8192-element group (32 warps), the 2x2 bottleneck
        gn_shapes=[(32, 64, 256, 256), (32, 256, 32, 32), (32, 512, 2, 2)],
        gate_shapes=[(32, 32, 64, 128, 128), (32, 256, 512, 4, 4)],
        dtypes=["fp32", "bf16"],
        layouts=["nchw", "channels_last"],
        train_batch=32,
        size=256,
        channels=None,
        disc_channels=(64, 128, 256, 512),
        train_providers=["eager", "triton", "native", "compile", "triton+compile"],
        infer_batches=[32, 1],
        palette_batches=[64, 1024],
        palette_size=256,
        rounds=10,
    )


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def sync(cfg: Config) -> None:
    if cfg.device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_call(cfg: Config, fn: Callable[[], object], rounds: int | None = None, graph: bool = False) -> float:
    """Median seconds per call of fn (warm-up excluded), CUDA events / graph replay on the GPU."""
    from benchmarks.timing import measure

    n = rounds or cfg.rounds
    t = measure(fn, device=cfg.device, warmup=1, min_rounds=min(3, n), max_rounds=n, target_s=1.0, cuda_graph=graph)
    return t.median_s


def gn_inputs(cfg: Config, shape, dtype, layout, requires_grad=True, seed=0):
    import torch

    n, c, h, w = shape
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def t(*s):
        return torch.randn(*s, generator=gen).to(cfg.device, dtype)

    x, r = t(n, c, h, w), t(n, c, h, w)
    if layout == "channels_last":
        x, r = (v.contiguous(memory_format=torch.channels_last) for v in (x, r))
    p = {
        "x": x.requires_grad_(requires_grad),
        "weight": (torch.randn(c, generator=gen) * 0.1 + 1).to(cfg.device).requires_grad_(requires_grad),
        "bias": (torch.randn(c, generator=gen) * 0.1).to(cfg.device).requires_grad_(requires_grad),
        "residual": r.requires_grad_(requires_grad),
        "noise_weight": (torch.randn(c, generator=gen) * 0.1).to(cfg.device).requires_grad_(requires_grad),
    }
    return p


def op_runs(cfg: Config, shape, dtype_name: str, layout: str):
    """name -> (forward+backward callable returning every output and gradient) for the four ops and
    the K-means step, on fixed inputs (for determinism and graph checks)."""
    import torch

    from colorizer.kernels.attention_gate import attention_gate
    from colorizer.kernels.group_norm_act import group_norm_act
    from colorizer.kernels.kmeans import kmeans_assign_accumulate
    from colorizer.kernels.noise_inject import noise_inject, noise_inject_philox
    from colorizer.kernels.weight_standardize import weight_standardize

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    n, c, h, w = shape
    p = gn_inputs(cfg, shape, dtype, layout)
    gen = torch.Generator().manual_seed(5)
    dy = torch.randn(n, c, h, w, generator=gen).to(cfg.device, dtype)
    noise = torch.randn(n, 1, h, w, generator=gen).to(cfg.device, dtype)
    f = 32
    gp = torch.randn(n, f, h, w, generator=gen).to(cfg.device, dtype).requires_grad_()
    xp = torch.randn(n, f, h, w, generator=gen).to(cfg.device, dtype).requires_grad_()
    gate_params = [(torch.randn(f, generator=gen) * 0.1 + 1).to(cfg.device).requires_grad_() for _ in range(5)]
    psi_b = torch.zeros(1, device=cfg.device, requires_grad=True)
    wt_shape = (8, 4, 3, 3) if cfg.dry_run else (512, 512, 3, 3)
    wt = (torch.randn(*wt_shape, generator=gen) * 0.02).to(cfg.device, dtype).requires_grad_()
    points = torch.randint(0, 256, (4, 4096 if not cfg.dry_run else 64, 3), generator=gen, dtype=torch.uint8)
    points = points.to(cfg.device)
    centers = (torch.rand(40, 9, 3, generator=gen) * 255).to(cfg.device)

    def grads(out, inputs, upstream):
        return [out.detach(), *torch.autograd.grad(out, inputs, upstream)]

    def gn_tensor():
        out = group_norm_act(p["x"], p["weight"], p["bias"], 32, 1e-5, "relu", p["residual"], p["noise_weight"], noise)
        return grads(out, list(p.values()), dy)

    def gn_philox():
        out = group_norm_act(
            p["x"], p["weight"], p["bias"], 32, 1e-5, "leaky_relu", p["residual"], p["noise_weight"], noise_seed=7
        )
        return grads(out, list(p.values()), dy)

    def gate():
        out = attention_gate(gp, xp, p["x"], *gate_params, psi_b, 32, 1e-5)
        return grads(out, [gp, xp, p["x"], *gate_params, psi_b], dy)

    def noise_tensor():
        return grads(noise_inject(p["x"], p["noise_weight"], noise), [p["x"], p["noise_weight"]], dy)

    def noise_philox():
        return grads(noise_inject_philox(p["x"], p["noise_weight"], 3, 0), [p["x"], p["noise_weight"]], dy)

    def ws():
        return grads(weight_standardize(wt), [wt], torch.ones_like(wt))

    def kmeans():
        return list(kmeans_assign_accumulate(points, centers))

    return {
        "group_norm_act tensor noise": gn_tensor,
        "group_norm_act philox noise": gn_philox,
        "attention_gate": gate,
        "noise_inject": noise_tensor,
        "noise_inject_philox": noise_philox,
        "weight_standardize": ws,
        "kmeans_assign_accumulate": kmeans,
    }


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------


def pytest_runtest_logreport(report) -> None:
    """Hook used when pytest loads this module as a plugin (-p benchmarks.gpu_check): one JSON line
    per test outcome to GPU_CHECK_ROWS, flushed as it happens (a killed run keeps what ran)."""
    path = os.environ.get("GPU_CHECK_ROWS")
    if not path or os.environ.get("PYTEST_XDIST_WORKER"):  # under xdist the controller reports
        return
    if report.when != "call" and report.outcome == "passed":
        return
    status = {"passed": "ok", "failed": "fail", "skipped": "skipped"}[report.outcome]
    row = {"name": report.nodeid, "status": status, "seconds": round(report.duration, 3), "when": report.when}
    if report.outcome == "failed":
        row["error"] = str(report.longreprtext)[-3000:]
    elif report.outcome == "skipped" and isinstance(report.longrepr, tuple):
        row["reason"] = str(report.longrepr[2])[:300]
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def step_parity(cfg: Config, report: Report, budget: Budget) -> None:
    rows_file = report.out / "parity_rows.jsonl"
    rows_file.unlink(missing_ok=True)
    env = dict(os.environ, GPU_CHECK_ROWS=str(rows_file), PYTHONPATH=str(REPO_ROOT))
    # Run from inside an xdist worker (the CI test of the dry run), the child would inherit the
    # worker's variables and its plugin hook would stay silent as if it were a worker itself.
    for key in [k for k in env if k.startswith("PYTEST_XDIST_") or k == "PYTEST_CURRENT_TEST"]:
        env.pop(key)
    if cfg.dry_run:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "benchmarks.gpu_check"]
    cmd += cfg.parity_args
    timeout = max(budget.remaining() - 2, 1)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = 0
    timed_out = False
    while proc.poll() is None:
        if time.perf_counter() - started > timeout:
            proc.kill()
            timed_out = True
            break
        seen = _forward_parity_rows(rows_file, seen, report)
        time.sleep(0.5)
    output = proc.communicate()[0] or ""
    seen = _forward_parity_rows(rows_file, seen, report)
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    if timed_out:
        report.add(
            "parity", "pytest", "budget", reason=f"stopped after {timeout:.0f} s and {seen} results", note=summary
        )
    elif proc.returncode not in (0, 1) or seen == 0:
        report.add("parity", "pytest", "error", error=f"pytest exit status {proc.returncode}", output=output[-4000:])
    else:
        status = "ok" if proc.returncode == 0 else "fail"
        report.add("parity", "pytest", status, value=seen, unit="results", note=summary)


def _forward_parity_rows(path: Path, seen: int, report: Report) -> int:
    if not path.exists():
        return seen
    lines = path.read_text().splitlines()
    for line in lines[seen:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line still being written: read it next time
            break
        name, status = row.pop("name"), row.pop("status")
        report.add("parity", name, status, **row)
        seen += 1
    return seen


def step_determinism(cfg: Config, report: Report, budget: Budget) -> None:
    import torch

    for layout in cfg.layouts:
        for dtype_name in cfg.dtypes[-1:]:
            for name, run in op_runs(cfg, cfg.det_shape, dtype_name, layout).items():
                budget.check(f"determinism {name}", 1.0)
                label = f"{name} {dtype_name} {layout} {'x'.join(map(str, cfg.det_shape))}"
                try:
                    a = run()
                    b = run()
                    sync(cfg)
                    same = all(torch.equal(x, y) for x, y in zip(a, b) if x is not None)
                    report.add(
                        "determinism",
                        label,
                        "ok" if same else "fail",
                        value=same,
                        note="forward and every gradient bitwise equal across two runs",
                    )
                except Exception as exc:  # noqa: BLE001 (recorded as a row)
                    report.error("determinism", label, exc)


def step_graphs(cfg: Config, report: Report, budget: Budget) -> None:
    import torch

    if cfg.device != "cuda":
        report.add("graphs", "CUDA graph capture and replay", "skipped", reason="needs a CUDA device (dry run)")
    else:
        for name, run in op_runs(cfg, (2, 64, 64, 64), "bf16", "channels_last").items():
            budget.check(f"graphs {name}", 2.0)
            try:
                expected = run()
                static: list = []
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    run()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static = run()
                graph.replay()
                torch.cuda.synchronize()
                same = all(torch.equal(x, y) for x, y in zip(expected, static))
                report.add("graphs", f"CUDA graph {name}", "ok" if same else "fail", value=same, note="replay == eager")
            except Exception as exc:  # noqa: BLE001
                report.error("graphs", f"CUDA graph {name}", exc)
    budget.check("torch.compile", 3.0)
    label = 'torch.compile(mode="reduce-overhead") GN + gate + noise + WS block'
    try:
        from colorizer.kernels.attention_gate import attention_gate
        from colorizer.kernels.group_norm_act import group_norm_act
        from colorizer.kernels.noise_inject import noise_inject
        from colorizer.kernels.weight_standardize import weight_standardize
        from colorizer.testing import assert_close

        def block(x, w, gw, gb, nw, noise):
            conv = torch.nn.functional.conv2d(x, weight_standardize(w), padding=1)
            y = group_norm_act(conv, gw, gb, 32, 1e-5, "relu", x, nw, noise)
            gated = attention_gate(y, conv, x, gw, gb, gw * 2, gb + 1, nw / 8, gb[:1], 32, 1e-5)
            return noise_inject(gated, nw, noise)

        gen = torch.Generator().manual_seed(0)
        h = 4 if cfg.dry_run else 32
        args = [
            torch.randn(2, 64, h, h, generator=gen),
            torch.randn(64, 64, 3, 3, generator=gen) * 0.02,
            torch.randn(64, generator=gen) + 1,
            torch.randn(64, generator=gen),
            torch.randn(64, generator=gen),
            torch.randn(2, 1, h, h, generator=gen),
        ]
        args = [a.to(cfg.device) for a in args]
        torch._dynamo.reset()
        if cfg.device == "cuda":
            compiled = torch.compile(block, mode="reduce-overhead", fullgraph=True)
            backend = "inductor, reduce-overhead (CUDA graphs)"
        else:
            compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
            backend = "aot_eager (dry run: reduce-overhead needs CUDA)"
        eager = block(*args)
        for _ in range(3):  # reduce-overhead records the graph on a later call
            out = compiled(*args)
        sync(cfg)
        assert_close(out, eager, dtype=torch.float32, name="compiled block")
        report.add("graphs", label, "ok", value=True, note=f"{backend}; equal to eager within fp32 tolerance")
    except Exception as exc:  # noqa: BLE001
        report.error("graphs", label, exc)


def launcher_variants() -> list[tuple[str, object]]:
    """(kernel name, compiled kernel) of every variant in the launchers' caches."""
    from colorizer.kernels.backend import compiled_variants

    return compiled_variants()


def step_compiled(cfg: Config, report: Report, budget: Budget) -> None:
    import torch

    if cfg.device != "cuda":
        report.add("compiled", "registers and spills", "skipped", reason="the interpreter compiles nothing (dry run)")
    # First-call time (compile included) of each op at a shape not used before, then a second call.
    for name, run in op_runs(cfg, (3, 64, 24, 40) if not cfg.dry_run else (1, 64, 3, 3), "bf16", "nchw").items():
        budget.check(f"first call {name}", 3.0)
        try:
            before = len(launcher_variants())
            t0 = time.perf_counter()
            run()
            sync(cfg)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            run()
            sync(cfg)
            second = time.perf_counter() - t0
            compiled = len(launcher_variants()) - before
            report.add(
                "compiled",
                f"first call {name}",
                value=round(first, 3),
                unit="s",
                second_call_s=round(second, 4),
                new_variants=compiled,
            )
        except Exception as exc:  # noqa: BLE001
            report.error("compiled", f"first call {name}", exc)
    variants = launcher_variants()
    report.add("compiled", "variants in the launcher caches", value=len(variants), unit="variants")
    for kernel, compiled in variants:
        try:
            regs = getattr(compiled, "n_regs", None)
            spills = getattr(compiled, "n_spills", None)
            meta = getattr(compiled, "metadata", None)
            warps = getattr(meta, "num_warps", None)
            consts = getattr(getattr(compiled, "src", None), "constants", None)
            shared = getattr(meta, "shared", None)
            report.add(
                "compiled",
                f"{kernel} warps={warps}",
                "ok" if not spills else "fail",
                value=spills,
                unit="spilled registers",
                target="no_spills",
                regs=regs,
                shared_bytes=shared,
                constants=str(consts)[:300] if consts is not None else None,
            )
        except Exception as exc:  # noqa: BLE001
            report.error("compiled", kernel, exc)
    del torch


def step_host(cfg: Config, report: Report, budget: Budget) -> None:
    import torch

    from colorizer.kernels.group_norm_act import group_norm_act
    from colorizer.ops import get_ops, reference

    providers = {"triton": group_norm_act, "eager": reference.group_norm_act}
    try:
        providers["native"] = get_ops("native").group_norm_act
    except Exception as exc:  # noqa: BLE001
        report.error("host", "native ops", exc)
    for dtype_name in cfg.dtypes:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
        p = gn_inputs(cfg, cfg.host_shape, dtype, "nchw")
        dy = torch.randn_like(p["x"])
        for provider, fn in providers.items():
            for mode in ("forward", "forward+backward"):
                budget.check(f"host {provider}", 1.0)
                label = f"{provider} group_norm_act {mode} {dtype_name} {'x'.join(map(str, cfg.host_shape))}"
                try:

                    def call(fn=fn, mode=mode):
                        if mode == "forward":
                            with torch.no_grad():
                                fn(p["x"], p["weight"], p["bias"], 32, 1e-5, "relu", p["residual"])
                        else:
                            y = fn(p["x"], p["weight"], p["bias"], 32, 1e-5, "relu", p["residual"])
                            torch.autograd.grad(y, [p["x"], p["weight"], p["bias"], p["residual"]], dy)

                    for _ in range(1 if cfg.dry_run else 3):  # warm-up (compiles on a GPU)
                        call()
                    sync(cfg)
                    t0 = time.perf_counter()
                    for _ in range(cfg.host_calls):
                        call()
                    host = (time.perf_counter() - t0) / cfg.host_calls
                    sync(cfg)
                    total = (time.perf_counter() - t0) / cfg.host_calls
                    report.add(
                        "host",
                        label,
                        value=round(host * 1e6, 1),
                        unit="us/call (host)",
                        wall_us_per_call=round(total * 1e6, 1),
                        calls=cfg.host_calls,
                    )
                except Exception as exc:  # noqa: BLE001
                    report.error("host", label, exc)


def step_t_copy(cfg: Config, report: Report, budget: Budget) -> None:
    import torch

    from benchmarks.gpu_kernels import DTYPES, Site, build_case, make_runner

    sites = []
    for shape in cfg.gn_shapes:
        # The targets' case: GroupNorm + ReLU alone, whose ideal is exactly T_copy forward (read x,
        # write y) and 2.5 T_copy forward+backward (+ read x, dy, write dx); a residual and noise add
        # passes of their own and are timed in benchmarks.gpu_kernels.
        sites.append(Site("group_norm_act", shape, {"act": "relu", "residual": False, "noise": False}))
        sites.append(Site("noise_inject", (shape[0], min(shape[1], 32), *shape[2:])))
    for n, f, fl, h, w in cfg.gate_shapes:
        sites.append(Site("attention_gate", (n, f, h, w), {"x_channels": fl}))
    graph = cfg.device == "cuda"
    copy_bw = _copy_bandwidth(cfg)
    report.add("t_copy", "device copy bandwidth (read + write)", value=round(copy_bw / 1e9, 1), unit="GB/s")
    for site in sites:
        for dtype_name in cfg.dtypes:
            for layout in cfg.layouts:
                budget.check(f"t_copy {site.label()}", 2.0)
                label = f"{site.label()} {dtype_name} {layout}"
                try:
                    rotations = 1 if cfg.dry_run else _rotations(site, DTYPES[dtype_name])
                    case = build_case(site, DTYPES[dtype_name], layout, rotations, device=cfg.device)
                    srcs = [t.detach() for t in case.copy_tensors]
                    dsts = [torch.empty_like(t) for t in srcs]
                    t_copy = time_call(cfg, lambda: [d.copy_(s) for d, s in zip(dsts, srcs)], graph=graph) / rotations
                    for mode, backward in (("forward", False), ("forward+backward", True)):
                        nbytes = case.fwd_bytes + (case.bwd_bytes if backward else 0)
                        t = time_call(cfg, make_runner(case.triton, case, backward), graph=graph) / rotations
                        fields = {"t_s": t, "t_copy_s": t_copy, "min_bytes": nbytes, "gbps": nbytes / t / 1e9}
                        if site.op == "attention_gate":
                            value, target = t / (nbytes / copy_bw), "gate_x_ideal"
                            unit = "x ideal-bytes time"
                        else:
                            value = t / t_copy
                            unit = "x T_copy"
                            target = None
                            if site.op == "group_norm_act":
                                target = "gn_fwd_x_t_copy" if not backward else "gn_fwdbwd_x_t_copy"
                        report.add(
                            "t_copy",
                            f"{label} {mode}",
                            value=round(value, 3),
                            unit=unit,
                            target=target,
                            **{k: v for k, v in fields.items() if k != "t_s"},
                            time_s=t,
                            rotations=rotations,
                        )
                    del case
                    if cfg.device == "cuda":
                        torch.cuda.empty_cache()
                except OutOfBudget:
                    raise
                except Exception as exc:  # noqa: BLE001
                    report.error("t_copy", label, exc)


def _copy_bandwidth(cfg: Config) -> float:
    import torch

    n = 2**28 if cfg.device == "cuda" else 2**20
    src = torch.empty(n, device=cfg.device).uniform_()
    dst = torch.empty_like(src)
    t = time_call(cfg, lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / t


def _rotations(site, dtype) -> int:
    """Input copies so that one replay streams more than 3x the L2 cache from HBM (at most 8)."""
    import torch

    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 * 2**20)
    per_copy = math.prod(site.shape) * torch.tensor([], dtype=dtype).element_size() * 3
    return max(1, min(8, math.ceil(3 * l2 / max(per_copy, 1))))


def step_train(cfg: Config, report: Report, budget: Budget) -> None:
    """The trainer's own step (``colorizer.train.step.GanStep``, as ``Trainer.train_step`` runs it:
    device palettes, one G forward, D frozen in G's backward, non-finite checks), ``--amp bf16`` and
    channels_last on CUDA, per kernel backend and with ``--compile``."""
    import torch

    from benchmarks.bench_train_step import TrainCase, build_step, lean_step

    kwargs = {} if cfg.channels is None else {"channels": cfg.channels}
    case = TrainCase(batch=cfg.train_batch, size=cfg.size, device=cfg.device, disc_channels=cfg.disc_channels, **kwargs)
    gen = torch.Generator().manual_seed(0)
    color = (torch.rand(cfg.train_batch, 3, cfg.size, cfg.size, generator=gen) * 2 - 1).to(cfg.device)
    sketch = (torch.rand(cfg.train_batch, 1, cfg.size, cfg.size, generator=gen) * 2 - 1).to(cfg.device)
    sketch = sketch.expand(-1, 3, -1, -1)
    on_cuda = cfg.device == "cuda"
    for provider in cfg.train_providers:
        budget.check(f"train {provider}", 20.0 if (on_cuda and "compile" in provider) else 1.0)
        label = f"train step {provider} batch {cfg.train_batch} {cfg.size}px {'bf16' if on_cuda else 'fp32'}"
        try:
            kernels = provider.split("+")[0] if provider != "compile" else "eager"
            if kernels == "triton" and not on_cuda:
                from colorizer.kernels.tuning import interpreting

                if not interpreting():
                    raise RuntimeError("triton on the CPU needs TRITON_INTERPRET=1")
            compiled = "compile" in provider
            gan, _ = build_step(
                case,
                kernels=kernels,
                amp="bf16" if on_cuda else "none",
                channels_last=on_cuda,
                compile=compiled and on_cuda,  # the trainer's --compile (inductor)
            )
            note = "the trainer's step (GanStep)"
            if compiled:
                if on_cuda:
                    note += "; generator compiled (inductor); D eager (spectral norm)"
                else:
                    torch._dynamo.reset()
                    gan.g_forward = torch.compile(gan.g_forward, backend="aot_eager")
                    note += "; dry run: aot_eager backend"

            def step():
                lean_step(gan, color, sketch)

            # Warm-up: the first step compiles every kernel variant (and torch.compile's graphs);
            # its time and the variants it added are reported, then the timed steps run warm.
            before = len(launcher_variants())
            t0 = time.perf_counter()
            step()
            sync(cfg)
            first = time.perf_counter() - t0
            new_variants = len(launcher_variants()) - before
            budget.check(f"train {provider} timing", 1.0)
            t = time_call(cfg, step, rounds=max(1, min(cfg.rounds, 5)))
            report.add(
                "train",
                label,
                value=round(cfg.train_batch / t, 2),
                unit="images/s",
                target="train_images_per_s",
                step_s=t,
                first_step_s=round(first, 2),
                new_triton_variants=new_variants,
                note=note,
            )
            gan = None
            if on_cuda:
                torch.cuda.empty_cache()
        except OutOfBudget:
            raise
        except Exception as exc:  # noqa: BLE001
            report.error("train", label, exc)


def step_inference(cfg: Config, report: Report, budget: Budget) -> None:
    import torch

    from colorizer.models import Sketch2Color
    from colorizer.runtime.runner import ModuleRunner

    on_cuda = cfg.device == "cuda"
    kwargs = {} if cfg.channels is None else {"channels": cfg.channels}
    for batch in cfg.infer_batches:
        for kernels in cfg.infer_providers:
            budget.check(f"inference {kernels}", 2.0)
            label = f"inference {kernels} batch {batch} {cfg.size}px {'bf16 CUDA graph' if on_cuda else 'fp32'}"
            try:
                torch.manual_seed(0)
                # The folded model on the backend, as colorize / eval / serve run it (the runtime seam).
                model = ModuleRunner(Sketch2Color(**kwargs), cfg.device, kernels).module
                x = torch.randn(batch, 30, cfg.size, cfg.size, device=cfg.device)
                if on_cuda:
                    model = model.to(torch.bfloat16, memory_format=torch.channels_last)
                    x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)

                def run():
                    with torch.no_grad():
                        model(x, noise="zero")

                t = time_call(cfg, run, graph=on_cuda)
                if batch == 1:
                    report.add(
                        "inference",
                        label,
                        value=round(t * 1e3, 3),
                        unit="ms",
                        target="latency_ms",
                    )
                else:
                    report.add(
                        "inference",
                        label,
                        value=round(batch / t, 1),
                        unit="images/s",
                        target="inference_images_per_s",
                    )
                model = None
            except OutOfBudget:
                raise
            except Exception as exc:  # noqa: BLE001
                report.error("inference", label, exc)


def step_palettes(cfg: Config, report: Report, budget: Budget) -> None:
    import torch

    from colorizer import palette

    for batch in cfg.palette_batches:
        budget.check(f"palettes {batch}", 2.0)
        label = f"palettes batch {batch} {cfg.palette_size}px"
        try:
            gen = torch.Generator().manual_seed(batch)
            images = torch.randint(
                0, 256, (batch, cfg.palette_size, cfg.palette_size, 3), generator=gen, dtype=torch.uint8
            ).to(cfg.device)
            impl = "auto" if cfg.device == "cuda" else "triton"
            t = time_call(
                cfg,
                lambda: palette.extract_palette(images, kernels=impl, **cfg.palette_kwargs),
                rounds=max(1, min(cfg.rounds, 5)),
            )
            report.add(
                "palettes",
                label,
                value=round(batch / t, 1),
                unit="palettes/s",
                target="palettes_per_s",
                kernels=impl,
                options=cfg.palette_kwargs or "defaults (k=9, 10 restarts, 10 iterations)",
            )
        except OutOfBudget:
            raise
        except Exception as exc:  # noqa: BLE001
            report.error("palettes", label, exc)


STEPS: list[tuple[str, Callable]] = [
    ("parity", step_parity),
    ("determinism", step_determinism),
    ("graphs", step_graphs),
    ("compiled", step_compiled),
    ("host", step_host),
    ("t_copy", step_t_copy),
    ("train", step_train),
    ("inference", step_inference),
    ("palettes", step_palettes),
]


def run_steps(cfg: Config, report: Report, budget: Budget, steps=STEPS) -> None:
    """Run the steps in order; an exception or a spent budget ends a step with a row, never the run."""
    for name, fn in steps:
        left = budget.left()
        if left <= 1.0:
            report.add(name, name, "budget", reason=f"not started: the run's {budget.total_s:.0f} s are spent")
            continue
        budget.step_deadline = time.perf_counter() + min(cfg.step_budget_s.get(name, left), left)
        t0 = time.perf_counter()
        try:
            fn(cfg, report, budget)
        except OutOfBudget as exc:
            report.add(name, f"{name} (cut)", "budget", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 (a failing step is a row; the next step runs)
            report.error(name, name, exc)
        report.add(name, f"{name} done", "ok", value=round(time.perf_counter() - t0, 2), unit="s")
        budget.step_deadline = math.inf


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def environment(cfg: Config) -> dict:
    import torch

    meta = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": cfg.dry_run,
        "budget_s": cfg.budget_s,
        "step_budget_s": cfg.step_budget_s,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
    }
    try:
        import triton

        meta["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001
        meta["triton"] = f"unavailable: {exc}"
    meta["git_revision"] = _git("rev-parse", "HEAD") or os.environ.get("GIT_REVISION")
    meta["git_dirty_files"] = _git("status", "--porcelain")
    if cfg.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        meta["device"] = f"{props.name} (sm_{props.major}{props.minor}, {props.multi_processor_count} SMs)"
        meta["driver"] = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    else:
        meta["device"] = f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
        meta["driver"] = None
    return meta


def _run(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO_ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git(*args: str) -> str | None:
    return _run(["git", *args])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--dry-run", action="store_true", help="the same plan on the CPU, tiny shapes (<1 min)")
    parser.add_argument("--budget-s", type=float, help="wall-clock budget (default 420 s; dry run 60 s)")
    parser.add_argument("--steps", help="comma-separated subset of: " + ", ".join(n for n, _ in STEPS))
    args = parser.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before anything imports Triton
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    cfg = make_config(args.dry_run, args.budget_s)
    if args.dry_run:
        torch.set_num_threads(1)
    steps = STEPS
    if args.steps:
        wanted = set(args.steps.split(","))
        unknown = wanted - {n for n, _ in STEPS}
        if unknown:
            parser.error(f"unknown steps {sorted(unknown)}")
        steps = [(n, f) for n, f in STEPS if n in wanted]
    report = Report(args.out, environment(cfg))
    budget = Budget(cfg.budget_s, started=START)  # from the import: the whole command stays in budget
    start_watchdog(report, budget)
    with contextlib.suppress(KeyboardInterrupt):
        run_steps(cfg, report, budget, steps)
    total = time.perf_counter() - START
    report.add("run", "total", value=round(total, 1), unit="s", note=f"budget {cfg.budget_s:.0f} s")
    errors = sum(r["status"] in ("error", "fail") for r in report.rows)
    print(f"gpu_check: {len(report.rows)} rows, {errors} errors/failures, {total:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
