"""One call on a lent GPU: train a successor of the bundled ``demo`` model and score it beside it.

    python -m benchmarks.train_bundled --out benchmarks/results/bundled-gpu-2026-12-08
    python -m benchmarks.train_bundled --out DIR --gpu-check benchmarks/results/gpu_check   # backend from a GPU check
    python -m benchmarks.train_bundled --out /tmp/dry --dry-run    # the same steps on the CPU, tiny (< 1 min)

What it does, in order (the recipe and the evidence behind it: docs/bundled_gpu_recipe.md):

1. Picks the op backend (``pick_kernels``): the fastest backend whose correctness and speed a GPU check
   of this device proved (``benchmarks.gpu_check``'s ``gpu_check.json``, given with ``--gpu-check``);
   eager when none is given or none is proven.
2. Trains with the trainer users run, ``python -m colorizer.train --config colorizer/configs/bundled_gpu.yaml``,
   in a child process, with ``--amp bf16`` on CUDA, into ``OUT/run``. The training time is limited by
   ``--budget-s`` (default 360 s, counted from the trainer's first step; its start-up, CUDA
   initialisation included, has ``--startup-timeout-s`` of its own): when it runs out the trainer
   gets SIGTERM, finishes its step and writes a checkpoint (colorizer/train/loop.py); after
   ``--stop-grace-s`` more it is killed, and its newest periodic checkpoint stands.
3. Exports the generator of the newest good checkpoint (``OUT/generator.safetensors``, weights only,
   what a model card would bundle) and runs ``colorizer.evaluation.evaluate`` on it and on the
   bundled ``demo`` model, on the same drawings (``OUT/eval_new``, ``OUT/eval_bundled``).
4. Writes ``OUT/results.json`` and ``OUT/results.md``: both eval tables side by side, the issue's
   targets, the verdict of the "replace only when better" rule (``verdict``; it never replaces the
   bundled model itself), the trainer's exit and the steps done, the backend decision, the budget,
   and the environment (``benchmarks.environment``: device, versions, git revision).

Everything is written as soon as it is known (atomically), so a run that dies, is interrupted
(Ctrl-C or SIGTERM here stops the trainer the same way, then evaluates what it has) or runs out of
time keeps its last good checkpoint and a partial table. ``OUT`` must be new or empty: nothing is
replaced. ``OUT/.gitignore`` keeps the training checkpoints (optimizer state, ~3x the weights) and the
exported weights out of a commit of the folder; a model card copies the weights where it needs them.

``--dry-run``: the same steps on the CPU with a tiny model (64 channels, 128 px, batch 2, fp32: bf16
convolutions are far slower than fp32 on CPUs without native bf16), a 10 s budget and 4 eval drawings
at 128 px. tests/test_train_bundled.py runs it in ``make test``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.output import write_json, write_text
from colorizer.errors import ArgumentParser, ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "colorizer" / "configs" / "bundled_gpu.yaml"
BUNDLED = "demo"
DEFAULT_BUDGET_S = 360.0
DEFAULT_STARTUP_TIMEOUT_S = 240.0
DEFAULT_STOP_GRACE_S = 120.0
TRAINING_STARTED = "training "  # the trainer's line just before its first step (Trainer._start_run)

# The targets for the new model at 256 px on colorizer eval's default drawings.
TARGETS = {
    "l1": ("<=", 10.0, "L1 <= 10/255"),
    "l1_background": ("<=", 6.0, "background L1 <= 6/255"),
    "swap_following": (">=", 0.95, "swap following >= 95%"),
    "shape_kinds": (">=", 0.80, "shape kinds >= 80%"),
}
# The "replace only when better" rule: every one of these no worse than the bundled model's ...
RULE_METRICS = {"l1": "lower", "l1_background": "lower", "swap_following": "higher", "shape_kinds": "higher"}
# ... and these clearly better: at least CLEAR_MARGIN lower (relative), more than run-to-run noise
# (two evaluations of one model on other noise seeds differ by well under 1%).
CLEARLY_BETTER = ("l1", "l1_background")
CLEAR_MARGIN = 0.10

# The dry run: the recipe's file with what makes it tiny on top (TrainConfig fields).
DRY_RUN_OVERRIDES = {
    "device": "cpu",
    "amp": "none",
    "channels_last": "false",
    "channels": "64",
    "size": "128",
    "batch_size": "2",
    "workers": "0",
    "ckpt_every": "5",
    "log_every": "1",
    "warmup_steps": "2",
}
DRY_RUN_BUDGET_S = 10.0
DRY_RUN_EVAL = {"count": 4, "size": 128}


# ----------------------------------------------------------------------------------------------
# Decisions (pure functions, unit-tested)


def _better_or_equal(new: float, old: float, direction: str) -> bool:
    return new <= old if direction == "lower" else new >= old


def target_holds(metric: str, value) -> bool | None:
    if value is None or metric not in TARGETS:
        return None
    op, bound, _ = TARGETS[metric]
    return value <= bound if op == "<=" else value >= bound


def verdict(new: dict | None, bundled: dict | None) -> dict:
    """The "replace only when better" rule on two ``Report.metrics`` dicts (0-255 L1s, 0-1 shares).

    "replace" when every metric of RULE_METRICS is no worse than the bundled model's and the L1 and
    background L1 are each at least CLEAR_MARGIN lower; else "keep" (also when either side is
    missing). Returns {"decision", "reasons", "rows", "targets"}; rows and targets are for the tables.
    """
    rows, reasons = [], []
    if not new or not bundled:
        missing = "the new model" if not new else "the bundled model"
        return {
            "decision": "keep",
            "reasons": [f"no evaluation of {missing}"],
            "rows": rows,
            "targets": _targets(new),
        }
    for metric, direction in RULE_METRICS.items():
        a, b = new.get(metric), bundled.get(metric)
        if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
            rows.append({"metric": metric, "new": a, "bundled": b, "rule": "no worse", "holds": False})
            reasons.append(f"{metric}: not measured")
            continue
        rule = "no worse"
        holds = _better_or_equal(a, b, direction)
        if metric in CLEARLY_BETTER:
            rule = f"at least {CLEAR_MARGIN:.0%} lower"
            holds = a <= b * (1.0 - CLEAR_MARGIN)
        rows.append({"metric": metric, "new": a, "bundled": b, "rule": rule, "holds": holds})
        if not holds:
            reasons.append(f"{metric}: {_show(metric, a)} vs bundled {_show(metric, b)} ({rule} needed)")
    decision = "replace" if not reasons else "keep"
    if decision == "replace":
        reasons = ["every metric no worse, L1 and background L1 clearly better"]
    return {"decision": decision, "reasons": reasons, "rows": rows, "targets": _targets(new)}


def _targets(metrics: dict | None) -> list[dict]:
    out = []
    for metric, (_, _, text) in TARGETS.items():
        value = (metrics or {}).get(metric)
        out.append({"metric": metric, "target": text, "value": value, "holds": target_holds(metric, value)})
    return out


def _show(metric: str, value) -> str:
    if value is None:
        return "n/a"
    if metric.startswith("l1") or metric == "swap_l1":
        return f"{value:.2f}"
    if metric in ("psnr",):
        return f"{value:.2f}"
    if metric == "ssim":
        return f"{value:.4f}"
    return f"{100 * value:.1f}%"


def pick_kernels(gpu_check: Path | None, device_name: str | None) -> tuple[str, str]:
    """(op backend, why) for training on ``device_name``, from a ``benchmarks.gpu_check`` result.

    A backend other than eager is taken only when the GPU check ran on this device (not a dry
    run), its parity step passed as a whole (every Triton/GPU kernel test), and its train-step row
    for that backend (no torch.compile: compiling would spend the budget) is ok and faster than the
    eager row. Of those, the fastest. Anything else: eager, with the reason.
    """
    if gpu_check is None:
        return "eager", "no --gpu-check result given: eager (nothing proves another backend here)"
    path = gpu_check / "gpu_check.json" if gpu_check.is_dir() else gpu_check
    try:
        doc = json.loads(path.read_text())
        meta, rows = doc["meta"], doc["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--gpu-check {gpu_check}: not a gpu_check result ({exc})") from None
    if meta.get("dry_run"):
        return "eager", f"{path} is a dry run (CPU): it proves nothing about a GPU"
    measured_on = str(meta.get("device") or "")
    if not device_name or not measured_on.startswith(device_name):
        return "eager", f"{path} was measured on {measured_on or 'an unknown device'}, not on {device_name}"
    parity = [r for r in rows if r.get("step") == "parity" and r.get("name") == "pytest"]
    if not parity or parity[-1].get("status") != "ok":
        status = parity[-1].get("status") if parity else "missing"
        return "eager", f"{path}: the parity step is {status}, so no kernel backend is proven correct"
    speeds = {}
    for row in rows:
        name = str(row.get("name", ""))
        if row.get("step") != "train" or row.get("status") != "ok" or not name.startswith("train step "):
            continue
        provider = name.split()[2]
        if "compile" not in provider and isinstance(row.get("value"), (int, float)):
            speeds[provider] = float(row["value"])
    if "eager" not in speeds:
        return "eager", f"{path}: no eager train-step row to compare with"
    best = max(speeds, key=speeds.get)
    if best == "eager":
        return "eager", f"{path}: no backend trains faster than eager ({_speeds(speeds)})"
    return best, f"{path}: parity passed; fastest train step {best} ({_speeds(speeds)})"


def _speeds(speeds: dict) -> str:
    return ", ".join(f"{k} {v:.0f} images/s" for k, v in sorted(speeds.items(), key=lambda kv: -kv[1]))


# ----------------------------------------------------------------------------------------------
# The training child


@dataclass
class TrainOutcome:
    exit_code: int | None = None
    stop: str = "not started"  # budget | finished | signal | startup timeout | killed | failed
    started: bool = False
    wall_s: float = 0.0  # the trainer process, start to end
    training_s: float = 0.0  # from its first step to its end


def trainer_command(config: Path, run_dir: Path, overrides: dict[str, str]) -> list[str]:
    """``python -m colorizer.train --config CONFIG --out RUN --option value ...`` (TrainConfig fields)."""
    from colorizer.train.config import coerce, fields

    bools = {f.name for f in fields() if f.type in (bool, "bool")}
    cmd = [sys.executable, "-m", "colorizer.train", "--config", str(config), "--out", str(run_dir), "--no-progress"]
    for key, value in overrides.items():
        flag = key.replace("_", "-")
        if key in bools:  # the trainer's booleans are --flag / --no-flag
            cmd.append(f"--{flag}" if coerce(key, value) else f"--no-{flag}")
        else:
            cmd += [f"--{flag}", str(value)]
    return cmd


class _Interrupt:
    """Ctrl-C / SIGTERM to this script: the first stops the trainer gracefully (then the evaluation
    runs on what it has); a second raises KeyboardInterrupt."""

    def __init__(self):
        self.count = 0
        self._old = {}

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def _handle(self, signum, frame):
        self.count += 1
        print(f"\n{signal.Signals(signum).name}: stopping the trainer (it writes a checkpoint)", flush=True)
        if self.count > 1:
            raise KeyboardInterrupt


def run_trainer(
    cmd: list[str],
    log_path: Path,
    budget_s: float,
    startup_timeout_s: float,
    stop_grace_s: float,
    interrupt: _Interrupt,
    env: dict | None = None,
) -> TrainOutcome:
    """Run the trainer; SIGTERM it when ``budget_s`` of training has passed, kill it ``stop_grace_s``
    later. Its output goes to ``log_path`` and to this process's stdout."""
    outcome = TrainOutcome()
    started_event = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # a terminal's Ctrl-C reaches this script, which stops the trainer once
    )

    def pump():
        with open(log_path, "a") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                print(f"  [train] {line}", end="", flush=True)
                if line.startswith(TRAINING_STARTED):
                    started_event.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    train_t0 = None
    term_at = None
    try:
        while proc.poll() is None:
            now = time.perf_counter()
            if train_t0 is None and started_event.is_set():
                train_t0 = now
                outcome.started = True
            if term_at is None:
                reason = None
                if interrupt.count:
                    reason = "signal"
                elif train_t0 is not None and now - train_t0 >= budget_s:
                    reason = "budget"
                elif train_t0 is None and now - t0 >= startup_timeout_s:
                    reason = "startup timeout"
                if reason:
                    outcome.stop = reason
                    term_at = now
                    proc.send_signal(signal.SIGTERM)
            elif now - term_at >= stop_grace_s:
                proc.kill()
                outcome.stop = f"killed ({outcome.stop} + {stop_grace_s:.0f} s grace)"
            time.sleep(0.2)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        raise
    finally:
        proc.wait()
        reader.join(timeout=10)
        end = time.perf_counter()
        outcome.exit_code = proc.returncode
        outcome.wall_s = round(end - t0, 2)
        if started_event.is_set() and train_t0 is None:
            train_t0 = end
            outcome.started = True
        outcome.training_s = round(end - train_t0, 2) if train_t0 is not None else 0.0
    if term_at is None:
        outcome.stop = "finished" if proc.returncode == 0 else "failed"
    return outcome


def read_train_log(path: Path) -> dict:
    """Steps done, the last logged losses and the mean images/s from the trainer's train_log.csv."""
    if not path.is_file():
        return {"steps_logged": 0}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {"steps_logged": 0}
    last = rows[-1]

    def num(value):
        try:
            v = float(value)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None

    rates = [r for r in (num(row.get("images_per_s")) for row in rows) if r]
    return {
        "steps_logged": int(float(last["step"])),
        "last_l1": num(last.get("l1")),
        "last_loss_g": num(last.get("loss_g")),
        "mean_images_per_s": round(sum(rates) / len(rates), 2) if rates else None,
        "elapsed_s": num(last.get("elapsed_s")),
    }


# ----------------------------------------------------------------------------------------------
# The run


class Results:
    """results.json / results.md, rewritten atomically whenever something is added."""

    def __init__(self, out: Path, doc: dict):
        self.out = out
        self.doc = doc
        self.write()

    def update(self, **fields) -> None:
        self.doc.update(fields)
        self.write()

    def write(self) -> None:
        write_json(self.out / "results.json", self.doc)
        write_text(self.out / "results.md", results_markdown(self.doc))


def results_markdown(doc: dict) -> str:
    from benchmarks.environment import format_environment
    from colorizer.scoring import METRICS

    train = doc.get("train") or {}
    lines = [
        f"# Bundled-model training run ({doc['status']})",
        "",
        f"- command: `{doc['command']}`",
        f"- config: `{doc['config_file']}` + {doc['overrides'] or 'no overrides'}; resolved: `run/config.yaml`",
        f"- op backend: {doc['kernels']['chosen']} ({doc['kernels']['reason']}); amp {doc['amp']}",
        f"- budget: {doc['budget_s']:.0f} s of training (start-up limit {doc['startup_timeout_s']:.0f} s)",
    ]
    if train:
        lines.append(
            f"- trainer: stop = {train.get('stop')}, exit code {train.get('exit_code')}, "
            f"{train.get('steps_logged', 0)} steps logged, {train.get('training_s', 0):.0f} s training, "
            f"{train.get('wall_s', 0):.0f} s in all, mean {train.get('mean_images_per_s')} images/s; "
            f"log `run/train_log.csv`, output `train_stdout.log`"
        )
        lines.append(
            f"- checkpoint: `{train.get('checkpoint') or 'none'}`; weights: `{train.get('weights') or 'none'}`"
        )
    evals = doc.get("eval") or {}
    new, old = evals.get("new"), evals.get("bundled")
    if new or old:
        settings = (new or old)["settings"]
        lines += [
            "",
            f"## colorizer eval, side by side ({settings['count']} drawings at {settings['size']} px, "
            f"seed {settings['seed']}, noise seed {settings['noise_seed']}, {settings['device']})",
            "",
            "| metric | new | bundled `demo` | meaning |",
            "|---|---|---|---|",
        ]
        for metric, meaning in METRICS.items():
            a = _show(metric, (new or {}).get("metrics", {}).get(metric)) if new else "not measured"
            b = _show(metric, (old or {}).get("metrics", {}).get(metric)) if old else "not measured"
            lines.append(f"| {metric} | {a} | {b} | {meaning} |")
    v = doc.get("verdict")
    if v:
        lines += ["", f"## Verdict: **{v['decision']}**", ""]
        lines += [f"- {r}" for r in v["reasons"]]
        if v["rows"]:
            lines += ["", "| metric | new | bundled | rule | holds |", "|---|---|---|---|---|"]
            for r in v["rows"]:
                lines.append(
                    f"| {r['metric']} | {_show(r['metric'], r['new'])} | {_show(r['metric'], r['bundled'])} "
                    f"| {r['rule']} | {'yes' if r['holds'] else 'no'} |"
                )
        lines += ["", "Targets of issue 23 for the new model:", "", "| target | value | holds |", "|---|---|---|"]
        for t in v["targets"]:
            holds = "n/a" if t["holds"] is None else ("yes" if t["holds"] else "no")
            lines.append(f"| {t['target']} | {_show(t['metric'], t['value'])} | {holds} |")
        lines += ["", "The bundled model is never replaced by this script: a model card update does that."]
    if doc.get("errors"):
        lines += ["", "## Errors", ""] + [f"- {e}" for e in doc["errors"]]
    if doc.get("environment"):
        lines += ["", "## Environment", ""] + format_environment(doc["environment"])
    return "\n".join(lines) + "\n"


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not empty; choose a new folder (nothing is replaced)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    write_text(
        out / ".gitignore",
        "# training checkpoints (optimizer state included) and the exported weights stay out of a commit;\n"
        "# a model card copies the weights to colorizer/pretrained/ when the verdict is replace\n"
        "run/checkpoints/\ngenerator.safetensors\n",
    )


def _device(name: str, dry_run: bool) -> str:
    import torch

    if dry_run:
        return "cpu"
    if name == "auto":
        if not torch.cuda.is_available():
            raise ConfigError("no CUDA device: this run is meant for a GPU (--dry-run for the CPU, or --device cpu)")
        return "cuda"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {name!r}")
    return name


def _parse_set(items: list[str]) -> dict[str, str]:
    from colorizer.train.config import fields

    names = {f.name for f in fields()}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE with a TrainConfig field (see --help)")
        if key in ("out", "resume"):
            raise ConfigError(f"--set {key}: this script sets it")
        out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m benchmarks.train_bundled", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="results folder (new or empty)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="trainer config (default: the recipe)")
    p.add_argument("--budget-s", type=float, default=None, help=f"training seconds (default {DEFAULT_BUDGET_S:.0f})")
    p.add_argument("--startup-timeout-s", type=float, default=DEFAULT_STARTUP_TIMEOUT_S, help="trainer start-up limit")
    p.add_argument("--stop-grace-s", type=float, default=DEFAULT_STOP_GRACE_S, help="SIGTERM to kill, seconds")
    p.add_argument("--gpu-check", type=Path, default=None, help="a benchmarks.gpu_check result (folder or json)")
    p.add_argument("--device", default="auto", help="auto (CUDA, refused without one) | cuda | cpu")
    p.add_argument("--eval-count", type=int, default=None, help="eval drawings (default colorizer eval's 64)")
    p.add_argument("--eval-size", type=int, default=None, help="eval size in px (default colorizer eval's 256)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a trainer option")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, 10 s budget, 4 eval drawings (< 1 min)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from colorizer.scoring import DEFAULT_COUNT, DEFAULT_SIZE

    budget_s = args.budget_s if args.budget_s is not None else (DRY_RUN_BUDGET_S if args.dry_run else DEFAULT_BUDGET_S)
    for name, value in (("--budget-s", budget_s), ("--startup-timeout-s", args.startup_timeout_s)):
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
    if not args.stop_grace_s >= 0:
        raise ConfigError(f"--stop-grace-s must be >= 0, got {args.stop_grace_s}")
    if not args.config.is_file():
        raise ConfigError(f"--config {args.config}: file not found")
    eval_count = args.eval_count or (DRY_RUN_EVAL["count"] if args.dry_run else DEFAULT_COUNT)
    eval_size = args.eval_size or (DRY_RUN_EVAL["size"] if args.dry_run else DEFAULT_SIZE)
    device = _device(args.device, args.dry_run)
    overrides = dict(DRY_RUN_OVERRIDES) if args.dry_run else {}
    overrides.update(_parse_set(args.set))
    overrides.setdefault("device", device)
    overrides.setdefault("amp", "bf16" if device == "cuda" else "none")

    from benchmarks.environment import collect_environment

    environment = collect_environment(device)
    kernels, why = pick_kernels(args.gpu_check, environment["device_name"] if device == "cuda" else None)
    if args.gpu_check is not None and device != "cuda":
        why = "training on the CPU: a GPU check does not apply; eager"
    if "kernels" in overrides:
        why = f"given with --set kernels={overrides['kernels']} (the GPU check's choice would be {kernels})"
    overrides.setdefault("kernels", kernels)

    # Check the whole trainer config before anything is created (one line on a bad value).
    from colorizer.train.config import resolve_config

    out = args.out
    run_dir = out / "run"
    cmd = trainer_command(args.config, run_dir, overrides)
    resolve_config(cmd[cmd.index("--config") :])
    _prepare_out(out)

    results = Results(
        out,
        {
            "status": "training",
            "command": " ".join(["python -m benchmarks.train_bundled", *(sys.argv[1:] if argv is None else argv)]),
            "trainer_command": " ".join(cmd),
            "config_file": os.path.relpath(args.config, REPO_ROOT) if args.config.is_absolute() else str(args.config),
            "overrides": overrides,
            "dry_run": args.dry_run,
            "kernels": {
                "chosen": overrides["kernels"],
                "reason": why,
                "gpu_check": args.gpu_check and str(args.gpu_check),
            },
            "amp": overrides["amp"],
            "budget_s": budget_s,
            "startup_timeout_s": args.startup_timeout_s,
            "stop_grace_s": args.stop_grace_s,
            "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment,
            "errors": [],
        },
    )
    interrupt = _Interrupt()
    interrupt.install()
    try:
        return _run(args, results, cmd, run_dir, budget_s, eval_count, eval_size, device, interrupt)
    finally:
        interrupt.restore()


def _run(args, results: Results, cmd, run_dir: Path, budget_s, eval_count, eval_size, device, interrupt) -> int:
    out = results.out
    env = dict(os.environ)
    if device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")  # the dry run shares 2 cores with the test suite
    try:
        outcome = run_trainer(
            cmd, out / "train_stdout.log", budget_s, args.startup_timeout_s, args.stop_grace_s, interrupt, env
        )
    except KeyboardInterrupt:
        results.update(status="interrupted")
        raise
    train = {**vars(outcome), **read_train_log(run_dir / "train_log.csv")}
    results.update(train=train, status="evaluating")

    from colorizer.checkpoint import load_generator, resolve_checkpoint, save_generator
    from colorizer.errors import ColorizerError
    from colorizer.evaluation import evaluate

    checkpoint = None
    try:
        if not (run_dir / "checkpoints").is_dir():
            raise ConfigError(f"{run_dir}: the trainer wrote no checkpoints folder")
        checkpoint = resolve_checkpoint(str(run_dir))
    except ColorizerError as exc:
        results.doc["errors"].append(f"no checkpoint to evaluate: {exc}")
    if checkpoint is not None:
        train["checkpoint"] = os.path.relpath(checkpoint, out)
        try:
            weights = out / "generator.safetensors"
            generator = load_generator(checkpoint)
            save_generator(
                str(weights),
                generator,
                {"trained_by": "benchmarks.train_bundled", "checkpoint": train["checkpoint"], "train": train},
            )
            train["weights"] = weights.name
        except ColorizerError as exc:
            results.doc["errors"].append(f"exporting the weights: {exc}")
    results.update(train=train)

    evals: dict = {}
    kwargs = dict(count=eval_count, size=eval_size, device=device)
    for key, model in (("new", checkpoint), ("bundled", BUNDLED)):
        if model is None:
            continue
        try:
            report = evaluate(model, **kwargs)
            report.write(out / f"eval_{key}")
            evals[key] = {"metrics": report.metrics, "counts": report.counts, "settings": report.settings}
        except ColorizerError as exc:
            results.doc["errors"].append(f"evaluating {key}: {exc}")
        results.update(eval=evals)
    decision = verdict((evals.get("new") or {}).get("metrics"), (evals.get("bundled") or {}).get("metrics"))
    status = "done" if outcome.stop in ("budget", "finished") and not results.doc["errors"] else "partial"
    results.update(verdict=decision, status=status, finished_utc=_dt.datetime.now(_dt.timezone.utc).isoformat())
    print(results_markdown(results.doc))
    print(f"verdict: {decision['decision']}; results in {out}")
    return 0 if status == "done" else 1


if __name__ == "__main__":
    from colorizer.errors import run_cli

    sys.exit(run_cli(main))
