"""benchmarks.gpu_check, the one-call device script: its CPU dry run end to end (the plan, rows
written as it goes, the budget), and its runner's handling of errors and budgets in process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[1]
STEP_NAMES = [name for name, _ in gpu_check.STEPS]


def read_report(out: Path) -> dict:
    doc = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.md").read_text().startswith("# gpu_check")
    return doc


@pytest.mark.triton
def test_dry_run_runs_the_whole_plan_in_order_within_its_budget(tmp_path):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = read_report(tmp_path)
    meta, rows = doc["meta"], doc["rows"]
    assert meta["dry_run"] is True and meta["TRITON_INTERPRET"] == "1"
    for key in ("date_utc", "device", "torch", "triton", "python", "git_revision"):
        assert meta.get(key), key
    # Every step of the plan left rows, in the plan's order: its results and its "done" row, or a
    # row saying the run's budget was spent before it started (a loaded CI machine is slower).
    first_seen = []
    for row in rows:
        if row["step"] in STEP_NAMES and row["step"] not in first_seen:
            first_seen.append(row["step"])
    assert first_seen == STEP_NAMES
    started = 0
    for step in STEP_NAMES:
        done = any(r["step"] == step and r["name"] == f"{step} done" for r in rows)
        skipped = any(r["step"] == step and r["status"] == "budget" and "not started" in r["reason"] for r in rows)
        assert done or skipped, step
        started += done
    assert started >= 5, f"only {started} of {len(STEP_NAMES)} steps ran within the budget"
    parity = [r for r in rows if r["step"] == "parity" and r["name"].startswith("tests/")]
    assert all(r["status"] == "ok" for r in parity), parity
    assert any(r["step"] == "determinism" and r["value"] is True for r in rows)
    assert any(r["step"] in ("train", "inference") and r["status"] == "ok" and r.get("unit") for r in rows)
    # Targets are recorded, and a CPU run never claims one holds.
    targeted = [r for r in rows if "target" in r]
    assert targeted and all(r["target_holds"] is None for r in targeted)
    # Nothing failed silently: every error row carries its exception text.
    for r in rows:
        if r["status"] == "error":
            assert r["error"] and (r.get("traceback") or r.get("output")), r
    # The wall-clock budget holds (the watchdog ends the run at the latest when it is spent).
    total = next(r for r in rows if r["name"] == "total")
    assert total["value"] <= meta["budget_s"] + 2
    assert wall < meta["budget_s"] + 30, f"dry run took {wall:.0f} s"
    # The Markdown has one line per row.
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.count("\n| ") >= len(rows)


def config(**budgets) -> gpu_check.Config:
    cfg = gpu_check.make_config(dry_run=True, budget_s=30.0)
    cfg.step_budget_s = budgets
    return cfg


def test_an_error_is_a_row_and_the_next_step_runs(tmp_path):
    report = gpu_check.Report(tmp_path, {"dry_run": True})

    def broken(cfg, report, budget):
        raise RuntimeError("kernel exploded\nsecond line")

    def fine(cfg, report, budget):
        report.add("fine", "measured", value=1.5, unit="s", target="latency_ms")

    gpu_check.run_steps(config(), report, gpu_check.Budget(30.0), [("broken", broken), ("fine", fine)])
    rows = read_report(tmp_path)["rows"]
    error = next(r for r in rows if r["status"] == "error")
    assert error["step"] == "broken" and "kernel exploded\nsecond line" in error["error"]
    assert "RuntimeError" in error["traceback"]
    measured = next(r for r in rows if r["name"] == "measured")
    assert measured["target"] == gpu_check.TARGETS["latency_ms"][0] and measured["target_holds"] is None


def test_a_step_past_its_budget_is_cut_with_a_row(tmp_path):
    report = gpu_check.Report(tmp_path, {"dry_run": False})

    def slow(cfg, report, budget):
        for i in range(100):
            budget.check(f"item {i}", 0.05)
            report.add("slow", f"item {i}", value=i)
            time.sleep(0.05)

    started = time.perf_counter()
    gpu_check.run_steps(config(slow=0.3), report, gpu_check.Budget(30.0), [("slow", slow)])
    assert time.perf_counter() - started < 2
    rows = read_report(tmp_path)["rows"]
    cut = [r for r in rows if r["status"] == "budget"]
    assert len(cut) == 1 and "item" in cut[0]["reason"]
    assert 1 <= sum(r["name"].startswith("item") for r in rows) < 100


def test_a_step_after_the_run_budget_is_not_started(tmp_path):
    report = gpu_check.Report(tmp_path, {"dry_run": True})
    ran = []
    budget = gpu_check.Budget(total_s=10.0, started=time.perf_counter() - 11.0)  # already spent
    gpu_check.run_steps(config(), report, budget, [("late", lambda *a: ran.append(1))])
    assert not ran
    assert read_report(tmp_path)["rows"][0]["status"] == "budget"


def test_targets_compare_the_issues_bounds():
    assert gpu_check.target_holds("gn_fwd_x_t_copy", 1.3) is True
    assert gpu_check.target_holds("gn_fwd_x_t_copy", 1.31) is False
    assert gpu_check.target_holds("train_images_per_s", 999.0) is False
    assert gpu_check.target_holds("latency_ms", 0.99) is True and gpu_check.target_holds("latency_ms", 1.0) is False
    assert gpu_check.target_holds("no_spills", 0) is True and gpu_check.target_holds("no_spills", 4) is False
    assert gpu_check.target_holds("palettes_per_s", None) is None


def test_the_report_is_rewritten_after_every_row(tmp_path):
    report = gpu_check.Report(tmp_path, {"dry_run": True})
    for i in range(3):
        report.add("s", f"row {i}", value=i)
        assert [r["name"] for r in read_report(tmp_path)["rows"]] == [f"row {k}" for k in range(i + 1)]
    assert not list(tmp_path.glob("*.tmp"))
