"""The benchmark suite cannot rot: the report runs end to end in quick mode and writes what it promises.

Nothing here asserts a speed. The quick report (tiny model, 128x128, one round) runs once per module.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import report
from benchmarks.ceilings import generator_inference_work
from benchmarks.timing import measure, quantile

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Providers this suite builds itself: in fp32 they must always run (others may skip with a reason).
OWN_PROVIDERS = {"eager", "eager-folded", "onnxruntime-plain", "reference", "reference-published", "lean-eager"}


def test_quantile_matches_numpy():
    samples = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2]
    for q in (0.0, 0.2, 0.5, 0.8, 1.0):
        assert quantile(samples, q) == pytest.approx(float(np.quantile(samples, q)))


def test_measure_excludes_warmup_and_reports_spread():
    calls = []

    def work():
        calls.append(time.perf_counter())
        time.sleep(0.002)

    timing = measure(work, warmup=2, min_rounds=5, max_rounds=5, target_s=0.0)
    assert len(calls) == 7 and timing.rounds == 5 and len(timing.samples_s) == 5
    assert timing.warmup == 2 and timing.method == "perf_counter"
    assert 0.002 <= timing.p20_s <= timing.median_s <= timing.p80_s
    with pytest.raises(ValueError):
        measure(work, min_rounds=3, max_rounds=2)
    with pytest.raises(ValueError):
        measure(work, cuda_graph=True)  # CPU: there is no graph to capture


def test_generator_flops_match_spec():
    # SPEC.md: about 55 GFLOP per 256x256 image (multiply-add = 2); the floor rests on this count.
    work = generator_inference_work((64, 128, 256, 512), 1, 256)
    assert work.flops == pytest.approx(55.2e9, rel=0.01)
    assert 0 < work.bytes < work.eager_bytes
    assert generator_inference_work((64, 128, 256, 512), 2, 256).flops == pytest.approx(2 * work.flops)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-quick")
    started = time.perf_counter()
    plan = report.plan_from_args(report.parse_args(["--quick", "--out", str(out)]))
    data = report.run_report(plan, out)
    assert data["duration_s"] <= time.perf_counter() - started
    return out, data


def test_quick_report_writes_markdown_json_and_plots(quick_report):
    out, _ = quick_report
    md = (out / "report.md").read_text()
    for heading in ("## Environment", "## Ceilings", "## Generator inference", "## GAN train step", "## Targets"):
        assert heading in md, heading
    data = json.loads((out / "report.json").read_text())
    assert data["plots"], "no plots written"
    for name in data["plots"]:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
        assert f"({name})" in md


def test_quick_report_json_has_environment_ceilings_and_rows(quick_report):
    out, _ = quick_report
    data = json.loads((out / "report.json").read_text())
    env = data["environment"]
    for key in ("date_utc", "device_name", "versions", "git", "threads", "cpu"):
        assert env.get(key) is not None, key
    assert env["versions"]["torch"] and env["threads"]["torch_intra_op"] >= 1

    ceilings = data["ceilings"]
    assert ceilings["matmul_flops_per_s"]["float32"] > 0 and ceilings["copy_bytes_per_s"] > 0

    rows = data["rows"]
    sections = {r["section"] for r in rows}
    assert {"inference", "train_step", "palettes"} <= sections
    errors = [f"{r['section']}/{r['provider']}: {r['reason']}" for r in rows if r["status"] == "error"]
    assert not errors, errors
    for r in rows:
        if r["status"] == "ok":
            assert 0 < r["p20_s"] <= r["median_s"] <= r["p80_s"], r
            assert r["throughput"] > 0 and r["flops"] > 0 and r["floor_s"] > 0 and r["pct_of_floor"] > 0, r
        else:
            assert r["status"] == "skipped" and r["reason"], r
    ok = {(r["section"], r["provider"]) for r in rows if r["status"] == "ok"}
    for must in ("eager", "eager-folded"):
        assert ("inference", must) in ok
    for must in ("reference", "lean-eager"):
        assert ("train_step", must) in ok
    assert ("palettes", "cv2-loop") in ok
    eager = next(r for r in rows if r["provider"] == "eager" and r["dtype"] == "float32" and r["status"] == "ok")
    assert eager["vs_eager"] == pytest.approx(1.0) and eager["rel_l2_vs_eager_fp32"] == 0.0
    folded = next(r for r in rows if r["provider"] == "eager-folded" and r["dtype"] == "float32")
    assert folded["rel_l2_vs_eager_fp32"] < 1e-3  # same function: folding only moves rounding
    skipped_own = [
        (r["section"], r["provider"], r["reason"])
        for r in rows
        if r["provider"] in OWN_PROVIDERS and r["dtype"] == "float32" and r["status"] != "ok"
    ]
    assert not skipped_own, skipped_own

    statuses = {t["name"]: t["status"] for t in data["targets"]}
    assert set(statuses) == {t.name for t in report.TARGETS}
    assert set(statuses.values()) <= {"met", "missed", "unmeasured"}
    # Quick mode runs a tiny model: no target can be judged from it.
    assert all(t["status"] == "unmeasured" and t["reason"] for t in data["targets"])
    assert data["suites"] == {}  # quick mode leaves the per-subject suites to their own tests


def test_report_cli_rejects_bad_options(capsys):
    assert report.main(["--quick", "--sizes", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "multiples of 128" in err[0]
    assert report.main(["--quick", "--providers", "fastest"]) == 2


def test_benchmark_files_collect_with_pytest_benchmark():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "bench_generator.py::test_generator_inference[eager]" in done.stdout
    assert "bench_train_step.py::test_train_step[reference]" in done.stdout


def test_suite_rows_render_as_tables():
    # The per-subject suites (left out of quick mode) report rows of their own shape: nested timing
    # dicts flatten into columns, and a suite that could not run says why.
    results = {
        "demo": {
            "title": "Demo suite",
            "status": "ok",
            "reason": None,
            "rows": [
                {"shape": [1, 64, 8, 8], "eager": {"median_s": 0.5, "samples_s": [0.5]}, "ratio": 2.0, "note": None}
            ],
        },
        "missing": {"title": "Missing suite", "status": "skipped", "reason": "not present", "rows": []},
    }
    md = "\n".join(report.suite_markdown(results))
    assert "| shape | eager.median_s | ratio | note |" in md
    assert "| 1x64x8x8 | 0.5 | 2 | - |" in md
    assert "skipped: not present" in md


def test_suites_call_the_subject_files_directly(monkeypatch):
    """Each suite of the report calls its subject file's function by name: a renamed function or a
    changed signature fails here, not as a skipped suite in a long run."""
    from benchmarks import bench_palette

    calls = {}

    def recorder(name, rows):
        def record(*args, **kwargs):
            calls[name] = (args, kwargs)
            return rows

        return record

    palette_row = bench_palette.Row(provider="cv2", device="cpu", size=128, n=1)
    monkeypatch.setattr(report.bench_palette, "run", recorder("palette", [palette_row]))
    monkeypatch.setattr(report.bench_native, "bench_group_norm_act", recorder("native", [{"ratio": 2.0}]))
    monkeypatch.setattr(report.native, "NATIVE_AVAILABLE", True)
    monkeypatch.setattr(report.bench_export, "run_rows", recorder("export", [{"variant": "eager"}]))
    monkeypatch.setattr(report.bench_precision, "report_rows", recorder("precision", [{"provider": "eager"}]))
    plan = report.plan_from_args(report.parse_args(["--quick", "--device", "cpu"]))
    results = report.suite_results(plan)
    assert {name: r["status"] for name, r in results.items()} == {
        "palette_speed": "ok",
        "native_speed": "ok",
        "gpu_kernels": "skipped",  # needs a CUDA GPU
        "export_speed": "ok",
        "precision_speed": "ok",
    }
    assert results["palette_speed"]["rows"] == [dataclasses.asdict(palette_row)]
    assert results["native_speed"]["rows"] == [{"ratio": 2.0}]
    assert calls["native"][0] == (128, 2, "cpu")
    for name in ("export", "precision"):
        assert calls[name][1]["quick"] is True and calls[name][1]["device"] == "cpu", calls[name]
    assert calls["palette"][1]["providers"] == ["cv2", "sklearn", "eager", "native"]
    # Without the extension the native suite says why instead of failing.
    monkeypatch.setattr(report.native, "NATIVE_AVAILABLE", False)
    assert report.suite_results(plan)["native_speed"]["status"] == "skipped"


def test_the_train_rows_run_the_trainers_own_step(monkeypatch):
    """bench_train_step has no GAN step of its own: the lean rows call GanStep.step, the reference row
    GanStep's d_backward / g_backward / apply (D frozen, non-finite check) with two G forwards."""
    from benchmarks import bench_train_step as bench
    from colorizer.train.step import GanStep

    calls = []

    def counted(name):
        original = getattr(GanStep, name)

        def wrapper(self, *args, **kwargs):
            calls.append(name)
            return original(self, *args, **kwargs)

        return wrapper

    for name in ("step", "generate", "d_backward", "g_backward", "apply"):
        monkeypatch.setattr(GanStep, name, counted(name))
    case = bench.TrainCase(channels=(64,), batch=2, size=128, disc_channels=(32, 32, 32, 32))
    bench.prepare("lean-eager", case).run()
    assert calls == ["step", "generate", "d_backward", "apply", "g_backward", "apply"]
    calls.clear()
    bench.prepare("reference", case).run()
    assert calls == ["generate", "d_backward", "apply", "generate", "g_backward", "apply"]


def test_the_bf16_train_row_is_skipped_where_the_trainer_trains_float32(monkeypatch):
    import colorizer.hardware
    from benchmarks import bench_train_step as bench

    monkeypatch.setattr(colorizer.hardware, "cpu_has_fast_bf16", lambda: False)
    case = bench.TrainCase(channels=(64,), batch=2, size=128, disc_channels=(32, 32, 32, 32))
    with pytest.raises(bench.Skip, match="no native bf16"):
        bench.prepare("lean-bf16", case)
    monkeypatch.setattr(colorizer.hardware, "cpu_has_fast_bf16", lambda: True)
    assert bench.prepare("lean-bf16", case).dtype == "bfloat16"
