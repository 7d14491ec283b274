"""benchmarks.train_bundled, the one-call GPU training of the bundled model's successor: its CPU dry
run end to end (train, stop on the budget, evaluate both models, write the folder), the verdict rule
and the backend choice on made-up inputs, the trainer-stopping paths with stand-in children, and the
GroupNorm group-count option of the narrow generators it may train."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from benchmarks import train_bundled
from benchmarks.train_bundled import pick_kernels, run_trainer, verdict
from colorizer.errors import run_cli
from colorizer.testing import assert_close

REPO = Path(__file__).resolve().parents[1]

# Made-up metrics in colorizer eval's units (L1s in 0-255, shares in 0-1).
BUNDLED = {"l1": 21.7, "l1_background": 14.9, "swap_following": 0.812, "shape_kinds": 0.08, "psnr": 18.2}


def better(**changes) -> dict:
    new = {"l1": 9.0, "l1_background": 5.0, "swap_following": 0.97, "shape_kinds": 0.85, "psnr": 25.0}
    new.update(changes)
    return new


# ----------------------------------------------------------------------------------------------
# The dry run: every step, in one call, on the CPU


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundled") / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        # --set: a trainer option on top (here the GroupNorm group count, so that the trainer's build and
        # record of it are checked on the way).
        [sys.executable, "-m", "benchmarks.train_bundled", "--out", str(out), "--dry-run", "--budget-s", "4"]
        + ["--set", "norm_groups=16"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), done.stdout


def test_dry_run_trains_until_the_budget_stops_it_and_keeps_the_checkpoint(dry_run):
    out, doc, _ = dry_run
    train = doc["train"]
    assert doc["status"] == "done" and doc["dry_run"] is True and not doc["errors"]
    # Stopped by the budget (SIGTERM -> the trainer's own graceful stop, exit 128 + 15), not by its
    # step limit: the recipe's max_steps is far beyond what 4 s of CPU training reaches.
    assert train["stop"] == "budget" and train["exit_code"] == 143 and train["started"]
    assert train["steps_logged"] >= 1 and train["training_s"] >= doc["budget_s"]
    checkpoint = out / train["checkpoint"]
    assert checkpoint.is_file() and checkpoint.parent == out / "run" / "checkpoints"
    step = int(checkpoint.stem.split("_")[1])
    assert step == train["steps_logged"]  # the checkpoint is of the last step the log shows
    assert "stopped by SIGTERM" in (out / "train_stdout.log").read_text()
    # The resolved config and the log of the trainer users run, with the dry run's tiny settings on
    # top of the recipe file, and the CPU in float32 with eager ops.
    config = (out / "run" / "config.yaml").read_text()
    assert "channels:\n- 64\n" in config or "channels: [64]" in config
    assert "amp: none" in config and "kernels: eager" in config and "size: 128" in config
    assert (out / "run" / "train_log.csv").read_text().startswith("step,")
    assert doc["kernels"]["chosen"] == "eager" and "no --gpu-check" in doc["kernels"]["reason"]
    for key in ("device_name", "versions", "git", "threads"):
        assert doc["environment"][key], key
    assert doc["trainer_command"].split()[1:5] == [
        "-m",
        "colorizer.train",
        "--config",
        str(train_bundled.DEFAULT_CONFIG),
    ]
    ignored = (out / ".gitignore").read_text().split()
    assert "run/checkpoints/" in ignored and "generator.safetensors" in ignored


def test_dry_run_evaluates_the_new_and_the_bundled_model_side_by_side(dry_run):
    out, doc, stdout = dry_run
    new, old = doc["eval"]["new"], doc["eval"]["bundled"]
    assert new["settings"]["model_kind"] == "checkpoint" and old["settings"]["model_kind"] == "bundled"
    for report in (new, old):
        assert report["settings"]["count"] == 4 and report["settings"]["size"] == 128
        m = report["metrics"]
        assert 0 <= m["l1"] <= 255 and 0 <= m["l1_background"] <= 255
        assert 0 <= m["swap_following"] <= 1 and 0 <= m["ssim"] <= 1
    for folder in ("eval_new", "eval_bundled"):
        assert json.loads((out / folder / "eval.json").read_text())["metrics"]["l1"] > 0
        assert (out / folder / "contact_sheet.png").stat().st_size > 0
    # The exported weights are the evaluated checkpoint's generator.
    from colorizer.checkpoint import load_generator

    weights = load_generator(str(out / "generator.safetensors"))
    checkpoint = load_generator(str(out / doc["train"]["checkpoint"]))
    assert weights.norm_groups == checkpoint.norm_groups == 16  # --set norm_groups=16, built and recorded
    for (name, a), b in zip(weights.state_dict().items(), checkpoint.state_dict().values()):
        assert torch.equal(a, b), name
    # The verdict is the rule applied to the two measured tables; the table shows both columns.
    assert doc["verdict"] == json.loads(json.dumps(verdict(new["metrics"], old["metrics"])))
    table = (out / "results.md").read_text()
    assert "| metric | new | bundled `demo` | meaning |" in table
    assert f"Verdict: **{doc['verdict']['decision']}**" in table and "L1 <= 10/255" in table
    row = next(line for line in table.splitlines() if line.startswith("| l1 |"))
    assert f"{new['metrics']['l1']:.2f}" in row and f"{old['metrics']['l1']:.2f}" in row
    assert f"verdict: {doc['verdict']['decision']}" in stdout


def test_an_existing_results_folder_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "results.md").write_text("an earlier run\n")
    code = run_cli(train_bundled.main, ["--out", str(tmp_path), "--dry-run"])
    assert code == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.md"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget-s", "0"], "--budget-s must be a positive"),
        (["--set", "channels=65"], "channels"),
        (["--set", "nonsense=1"], "--set 'nonsense=1'"),
        (["--set", "out=/tmp/x"], "this script sets it"),
        (["--config", "/nonexistent.yaml"], "file not found"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "results"
    assert run_cli(train_bundled.main, ["--out", str(out), "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# The verdict ("replace only when better") on made-up metrics


def test_verdict_replaces_only_when_every_metric_is_no_worse_and_both_l1s_clearly_better():
    assert verdict(better(), BUNDLED)["decision"] == "replace"
    # Equal shares are "no worse"; the L1s need a clear margin (10%).
    tie = better(swap_following=BUNDLED["swap_following"], shape_kinds=BUNDLED["shape_kinds"])
    assert verdict(tie, BUNDLED)["decision"] == "replace"
    for worse in (
        {"swap_following": 0.80},  # one drawing fewer follows its swap
        {"shape_kinds": 0.07},
        {"l1": 20.0},  # lower, but by less than 10%
        {"l1_background": 14.0},
        {"l1": 30.0},
    ):
        result = verdict(better(**worse), BUNDLED)
        (metric,) = worse
        assert result["decision"] == "keep", worse
        assert any(r.startswith(metric) for r in result["reasons"]), result["reasons"]
        assert [r["holds"] for r in result["rows"] if r["metric"] == metric] == [False]
    # A PSNR (not one of the rule's metrics) does not count.
    assert verdict(better(psnr=1.0), BUNDLED)["decision"] == "replace"


def test_verdict_keeps_when_a_side_is_missing_and_reports_the_issue_targets():
    assert verdict(None, BUNDLED)["decision"] == "keep"
    assert verdict(better(), None)["decision"] == "keep"
    assert verdict(better(swap_following=None), BUNDLED)["decision"] == "keep"
    targets = {t["metric"]: t["holds"] for t in verdict(better(), BUNDLED)["targets"]}
    assert targets == {"l1": True, "l1_background": True, "swap_following": True, "shape_kinds": True}
    targets = {t["metric"]: t["holds"] for t in verdict(BUNDLED, BUNDLED)["targets"]}
    assert targets == {"l1": False, "l1_background": False, "swap_following": False, "shape_kinds": False}
    edge = {"l1": 10.0, "l1_background": 6.0, "swap_following": 0.95, "shape_kinds": 0.80}  # bounds hold
    assert all(t["holds"] for t in verdict(edge, BUNDLED)["targets"])


# ----------------------------------------------------------------------------------------------
# The backend choice from a GPU check's result


DEVICE = "NVIDIA H100 80GB HBM3"


def gpu_check_result(tmp_path, *, dry_run=False, device=DEVICE, parity="ok", speeds=None) -> Path:
    speeds = {"eager": 300.0, "triton": 420.0, "native": 380.0, "compile": 600.0} if speeds is None else speeds
    rows = [{"step": "parity", "name": "tests/kernels/test_x.py::test_a", "status": "ok"}]
    if parity is not None:
        rows.append({"step": "parity", "name": "pytest", "status": parity, "value": 120})
    for provider, value in speeds.items():
        status = "error" if value is None else "ok"
        rows.append(
            {"step": "train", "name": f"train step {provider} batch 32 256px bf16", "status": status, "value": value}
        )
    meta = {"dry_run": dry_run, "device": f"{device} (sm_90, 132 SMs)"}
    (tmp_path / "gpu_check.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    return tmp_path


def test_pick_kernels_takes_the_fastest_backend_a_gpu_check_of_this_device_proved(tmp_path):
    kernels, why = pick_kernels(gpu_check_result(tmp_path), DEVICE)
    assert kernels == "triton" and "parity passed" in why  # compile is faster but not taken (compile time)
    kernels, _ = pick_kernels(
        gpu_check_result(tmp_path, speeds={"eager": 300.0, "triton": None, "native": 380.0}), DEVICE
    )
    assert kernels == "native"  # a backend whose train step errored is not a candidate
    assert pick_kernels(tmp_path / "gpu_check.json", DEVICE)[0] == "native"  # the file itself works too


@pytest.mark.parametrize(
    ("kwargs", "device", "reason"),
    [
        ({}, "NVIDIA H200", "measured on"),
        ({"dry_run": True}, DEVICE, "dry run"),
        ({"parity": "fail"}, DEVICE, "parity step is fail"),
        ({"parity": "budget"}, DEVICE, "parity step is budget"),
        ({"parity": None}, DEVICE, "parity step is missing"),
        ({"speeds": {"eager": 500.0, "triton": 420.0}}, DEVICE, "no backend trains faster"),
        ({"speeds": {"triton": 420.0}}, DEVICE, "no eager train-step row"),
    ],
)
def test_pick_kernels_falls_back_to_eager_when_nothing_proves_another_backend(tmp_path, kwargs, device, reason):
    kernels, why = pick_kernels(gpu_check_result(tmp_path, **kwargs), device)
    assert kernels == "eager" and reason in why


def test_pick_kernels_without_a_result_is_eager_and_a_bad_file_is_one_line(tmp_path):
    assert pick_kernels(None, DEVICE)[0] == "eager"
    (tmp_path / "gpu_check.json").write_text("{not json")
    from colorizer.errors import ConfigError

    with pytest.raises(ConfigError, match="not a gpu_check result"):
        pick_kernels(tmp_path, DEVICE)


# ----------------------------------------------------------------------------------------------
# Stopping the trainer: stand-in children (no torch), so each path takes about a second


def child(tmp_path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


GRACEFUL = """
    import signal, sys, time
    def stop(signum, frame):
        print("stopped by SIGTERM", flush=True)
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, stop)
    print("training 100 steps", flush=True)
    while True:
        time.sleep(0.05)
"""


def test_run_trainer_stops_a_trainer_on_the_budget_and_keeps_its_output(tmp_path):
    log = tmp_path / "out.log"
    outcome = run_trainer(child(tmp_path, GRACEFUL), log, 0.5, 30, 30, train_bundled._Interrupt())
    assert outcome.stop == "budget" and outcome.exit_code == 143 and outcome.started
    assert outcome.training_s >= 0.5
    assert log.read_text().splitlines() == ["training 100 steps", "stopped by SIGTERM"]


def test_run_trainer_kills_a_trainer_that_ignores_the_stop(tmp_path):
    body = GRACEFUL.replace("signal.signal(signal.SIGTERM, stop)", "signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    outcome = run_trainer(child(tmp_path, body), tmp_path / "out.log", 0.3, 30, 0.5, train_bundled._Interrupt())
    assert outcome.stop.startswith("killed (budget") and outcome.exit_code == -9


def test_run_trainer_gives_up_on_a_start_that_never_trains(tmp_path):
    body = GRACEFUL.replace('print("training 100 steps", flush=True)', 'print("loading", flush=True)')
    outcome = run_trainer(child(tmp_path, body), tmp_path / "out.log", 30, 0.5, 30, train_bundled._Interrupt())
    assert outcome.stop == "startup timeout" and not outcome.started and outcome.training_s == 0


def test_run_trainer_reports_a_trainer_that_fails_or_finishes(tmp_path):
    failing = child(tmp_path, "import sys\nprint('error: bad data', flush=True)\nsys.exit(2)\n")
    outcome = run_trainer(failing, tmp_path / "a.log", 30, 30, 30, train_bundled._Interrupt())
    assert outcome.stop == "failed" and outcome.exit_code == 2
    finishing = child(tmp_path, "print('training 1 steps', flush=True)\n")
    outcome = run_trainer(finishing, tmp_path / "b.log", 30, 30, 30, train_bundled._Interrupt())
    assert outcome.stop == "finished" and outcome.exit_code == 0 and outcome.started


def test_run_trainer_passes_a_users_stop_on_to_the_trainer(tmp_path):
    import threading

    interrupt = train_bundled._Interrupt()
    log = tmp_path / "out.log"

    def press_ctrl_c_once_training():  # what the handler does on a first Ctrl-C, once the child trains
        while "training" not in (log.read_text() if log.exists() else ""):
            threading.Event().wait(0.05)
        interrupt.count = 1

    threading.Thread(target=press_ctrl_c_once_training, daemon=True).start()
    outcome = run_trainer(child(tmp_path, GRACEFUL), log, 30, 30, 30, interrupt)
    assert outcome.stop == "signal" and outcome.exit_code == 143
    assert log.read_text().splitlines()[-1] == "stopped by SIGTERM"


# ----------------------------------------------------------------------------------------------
# The GroupNorm group count of narrow generators (colorizer.models, an option of the recipe)


def test_norm_groups_changes_no_parameter_and_defaults_to_the_reference():
    from colorizer.models import Sketch2Color

    torch.manual_seed(0)
    reference = Sketch2Color(channels=(64,))
    torch.manual_seed(0)
    grouped = Sketch2Color(channels=(64,), norm_groups=8)
    assert reference.norm_groups == 32
    assert {k: v.shape for k, v in reference.state_dict().items()} == {
        k: v.shape for k, v in grouped.state_dict().items()
    }
    norms = [m for m in grouped.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and {m.num_groups for m in norms} == {8}
    assert {m.num_groups for m in reference.modules() if isinstance(m, torch.nn.GroupNorm)} == {32}
    for bad in (0, 3, 64, 2.0, True):
        with pytest.raises(ValueError, match="norm_groups"):
            Sketch2Color(channels=(64,), norm_groups=bad)


def _model_with_groups(groups: int):
    from colorizer.models import Sketch2Color

    torch.manual_seed(1)
    model = Sketch2Color(channels=(64,), norm_groups=groups).eval()
    with torch.no_grad():  # affine parameters away from 1/0, so a wrong group count shows
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.bias.normal_(0, 0.5)
    return model


def test_a_saved_generator_records_its_group_count_and_loads_back_the_same(tmp_path):
    from colorizer.checkpoint import load_generator, read_checkpoint, save_generator

    model = _model_with_groups(8)
    path = tmp_path / "g.safetensors"
    save_generator(str(path), model)
    assert read_checkpoint(str(path))[1]["generator"]["norm_groups"] == 8
    loaded = load_generator(str(path))
    assert loaded.norm_groups == 8
    x = torch.rand(1, 30, 128, 128) * 2 - 1
    with torch.no_grad():
        expected = model(x, noise=3)
        assert_close(loaded(x, noise=3), expected, dtype=torch.float32)
        # The same weights under the reference's 32 groups paint something else: the record matters.
        wrong = _model_with_groups(32)
        wrong.load_state_dict(model.state_dict())
        assert (wrong(x, noise=3) - expected).abs().max() > 0.05


def test_a_checkpoint_without_a_record_is_the_reference_and_a_bad_record_is_refused():
    from colorizer.errors import CheckpointError
    from colorizer.models import generator_architecture

    state = _model_with_groups(32).state_dict()
    assert generator_architecture(state)["norm_groups"] == 32
    assert generator_architecture(state, "x", {"generator": {"channels": [64]}})["norm_groups"] == 32
    assert generator_architecture(state, "x", {"generator": {"norm_groups": 4}})["norm_groups"] == 4
    with pytest.raises(CheckpointError, match="norm_groups"):
        generator_architecture(state, "x", {"generator": {"norm_groups": 5}})


def test_the_group_count_is_a_config_field_that_old_runs_do_not_hash():
    from colorizer.errors import ConfigError
    from colorizer.train import TrainConfig

    assert "norm_groups" not in TrainConfig().identity()  # runs from before the option keep their hash
    assert TrainConfig(norm_groups=8).identity()["norm_groups"] == 8
    with pytest.raises(ConfigError, match="norm_groups"):
        TrainConfig(data="synthetic", norm_groups=3).validate()


@pytest.mark.parametrize("graph", ["two-level", "instance-norm"])
def test_the_onnx_graph_ops_of_a_narrow_model_use_its_group_count(graph):
    # export_onnx traces the model through these op sets (GeneratorForExport.set_kernels(GRAPH_OPS[...])):
    # they take the group count from each GroupNorm module, so the graph computes what eager does.
    from colorizer.export.graph_ops import GRAPH_OPS
    from colorizer.models import fold_weight_standardization

    model = _model_with_groups(8)
    x = torch.rand(1, 30, 128, 128) * 2 - 1
    with torch.no_grad():
        expected = model(x, noise=3)
        traced = fold_weight_standardization(model).set_kernels(GRAPH_OPS[graph])
        assert_close(traced(x, noise=3), expected, dtype=torch.float32, rtol=1e-3, atol=1e-3)
