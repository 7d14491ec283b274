"""colorizer.evaluation and `colorizer eval`: the metrics on hand-made outputs, the end-to-end command
on a checkpoint and on an exported ONNX file, and the bad inputs it refuses."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer.cli import main
from colorizer.data.synthetic import MIXED, REGION_BACKGROUND, ROLES
from colorizer.evaluation import Report, evaluate
from colorizer.models import Color2Sketch, NoiseInjection, Sketch2Color
from colorizer.runtime.load import load_runner
from colorizer.scoring import (
    EVAL_SEED,
    METRICS,
    colorize_set,
    contact_sheet,
    folder_set,
    score_outputs,
    swap_partner,
    swap_targets,
    synthetic_set,
)

SIZE = 128
COUNT = 6


@pytest.fixture(scope="module")
def data():
    return synthetic_set(COUNT, SIZE)


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    g = Sketch2Color(channels=(64,))
    for m in g.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(0.3)  # make the noise seed matter
    return g.eval()


@pytest.fixture(scope="module")
def checkpoint(generator, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "G.pth"
    torch.save({"netG": generator.state_dict()}, path)
    return path


def _blend(a, b, t):
    return np.rint(a.astype(np.float64) * (1 - t) + b.astype(np.float64) * t).astype(np.uint8)


def test_the_eval_stream_is_not_the_trainers():
    from importlib import resources

    import yaml

    from colorizer.train.config import TrainConfig

    assert EVAL_SEED != TrainConfig().seed
    presets = [f for f in resources.files("colorizer.configs").iterdir() if f.name.endswith(".yaml")]
    assert len(presets) >= 3
    for preset in presets:
        assert (yaml.safe_load(preset.read_text()) or {}).get("seed", TrainConfig().seed) != EVAL_SEED, preset.name


def test_derangement_has_no_fixed_point():
    for n in (2, 3, 64):
        p = swap_partner(n)
        assert sorted(p.tolist()) == list(range(n)) and (p != np.arange(n)).all()


def test_swap_targets_repaint_roles_with_the_partners_colors(data):
    targets = swap_targets(data)
    for i, j in enumerate(swap_partner(len(data))):
        pure = data.roles[i] != MIXED
        np.testing.assert_array_equal(targets[i][pure], data.role_colors[j][data.roles[i][pure]])
        np.testing.assert_array_equal(targets[i][~pure], data.colors[i][~pure])


def test_perfect_outputs_score_perfectly(data):
    metrics, counts, rows = score_outputs(data, data.colors, swap_targets(data))
    assert metrics["l1"] == 0 and metrics["l1_background"] == 0 and metrics["swap_l1"] == 0
    assert math.isinf(metrics["psnr"]) and metrics["ssim"] == pytest.approx(1.0)
    assert metrics["swap_following"] == 1.0 and metrics["swap_toward_other"] == 1.0
    assert counts["swaps_judged"] == COUNT and counts["swaps_followed"] == COUNT
    assert counts["shape_kind_drawings"] >= 2  # the set shows both kinds of shape in some drawings
    assert metrics["shape_kinds"] == 1.0 and metrics["shape_kinds_swap"] == 1.0
    assert len(rows) == COUNT and all(r["following"] for r in rows)
    # A perfect own output is as far from the repainted truth as the two colorings are apart.
    assert counts["swap_contrast_min"] == pytest.approx(min(r["own_to_other"] for r in rows))
    assert counts["swap_contrast_min"] > 20


def test_swap_skips_colors_the_partner_does_not_show(data):
    accent = [ROLES.index("accent"), ROLES.index("accent_shade")]
    partner = swap_partner(len(data))
    has_polygons = [np.isin(r, accent).sum() >= 100 for r in data.roles]
    cases = [i for i in range(len(data)) if has_polygons[i] and not has_polygons[partner[i]]]
    assert cases, "the test set should hold a drawing whose partner has no polygon"
    i = cases[0]
    swapped = swap_targets(data)
    swapped[i][np.isin(data.roles[i], accent)] = (0, 255, 0)  # unknowable: j's palette has no accent
    metrics, counts, rows = score_outputs(data, data.colors, swapped)
    assert rows[i]["following"] and rows[i]["swap_to_other"] == 0.0
    assert metrics["swap_following"] == 1.0
    assert "round_main_swap" not in rows[i]
    assert 1 <= counts["shape_kind_swap_drawings"] < counts["shape_kind_drawings"]


def test_constant_grey_and_palette_blind_outputs_follow_nothing(data):
    grey = np.full_like(data.colors, 128)
    metrics, counts, _ = score_outputs(data, grey, grey)
    assert metrics["swap_following"] == 0.0 and counts["swaps_followed"] == 0
    assert metrics["shape_kinds"] == 0.0 and metrics["shape_kinds_swap"] == 0.0
    # A model that paints each drawing's own colors whatever palette it is given: perfect L1, no following.
    metrics, _, _ = score_outputs(data, data.colors, data.colors)
    assert metrics["l1"] == 0 and metrics["swap_following"] == 0.0 and metrics["swap_toward_other"] == 0.0


def test_following_is_decided_by_the_nearer_palette(data):
    own, other = data.colors, swap_targets(data)
    nearer_other = _blend(own, other, 0.6)
    nearer_own = _blend(own, other, 0.4)
    assert score_outputs(data, own, nearer_other)[0]["swap_following"] == 1.0
    metrics = score_outputs(data, own, nearer_own)[0]
    assert metrics["swap_following"] == 0.0 and metrics["swap_toward_other"] == 0.0
    # The own-palette output must itself be nearer its own palette.
    assert score_outputs(data, nearer_other, other)[0]["swap_following"] == 0.0


def test_known_perturbations_give_the_expected_l1_and_psnr(data):
    truth = data.colors.astype(np.int16)
    shifted = np.where(truth >= 128, truth - 6, truth + 6).astype(np.uint8)  # |error| = 6 everywhere
    metrics, _, _ = score_outputs(data, shifted, swap_targets(data))
    assert metrics["l1"] == pytest.approx(6.0) and metrics["l1_background"] == pytest.approx(6.0)
    assert metrics["psnr"] == pytest.approx(10 * math.log10(255**2 / 36))
    assert metrics["ssim"] < 1.0 and metrics["swap_following"] == 1.0

    background = data.regions == REGION_BACKGROUND
    only_bg = data.colors.copy()
    only_bg[background] = shifted[background]
    metrics, _, _ = score_outputs(data, only_bg, swap_targets(data))
    assert metrics["l1_background"] == pytest.approx(6.0)
    assert metrics["l1"] == pytest.approx(6.0 * background.mean())


def test_shape_kinds_fail_when_polygons_take_the_main_color(data):
    own = data.colors.copy()
    accent = [ROLES.index("accent"), ROLES.index("accent_shade")]
    for i in range(len(data)):
        own[i][np.isin(data.roles[i], accent)] = data.role_colors[i][ROLES.index("main")]
    metrics, counts, _ = score_outputs(data, own, swap_targets(data))
    assert counts["shape_kind_drawings"] >= 2
    assert metrics["shape_kinds"] == 0.0 and metrics["shape_kinds_swap"] == 1.0


def test_folder_set_scores_user_pictures_without_labels(data, tmp_path):
    for i in range(4):
        Image.fromarray(data.colors[i]).save(tmp_path / f"pic{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    folder = folder_set(tmp_path, count=10, size=SIZE)
    assert len(folder) == 4 and len(folder.skipped) == 1 and not folder.labelled
    np.testing.assert_array_equal(folder.colors, data.colors[:4])
    assert folder.sketches.shape == (4, 1, SIZE, SIZE)
    # Pictures 0..3 in order: repaint each with its partner's colors from the synthetic labels.
    partner = swap_partner(4)
    swapped = data.colors[:4].copy()
    for i, j in enumerate(partner):
        pure = data.roles[i] != MIXED
        swapped[i][pure] = data.role_colors[j][data.roles[i][pure]]
    metrics, _, _ = score_outputs(folder, folder.colors, swapped)
    assert metrics["l1"] == 0 and metrics["swap_following"] == 1.0
    assert all(metrics[name] is None for name in ("l1_background", "swap_l1", "shape_kinds", "shape_kinds_swap"))
    grey = np.full_like(folder.colors, 128)
    assert score_outputs(folder, grey, grey)[0]["swap_following"] == 0.0


def test_outputs_do_not_depend_on_the_batch_size(generator):
    model = load_runner(generator, device="cpu", kernels="eager")
    small = synthetic_set(2, SIZE)
    a = np.concatenate(colorize_set(model, small, noise_seed=5, batch_size=1)).astype(np.int16)
    b = np.concatenate(colorize_set(model, small, noise_seed=5, batch_size=4)).astype(np.int16)
    # Per-picture noise seeds: only the convolutions' float rounding differs between batch sizes.
    assert np.abs(a - b).mean() < 0.1
    c = np.concatenate(colorize_set(model, small, noise_seed=6, batch_size=4)).astype(np.int16)
    assert np.abs(a - c).mean() > 1.0  # the noise seed is used


def test_report_files_and_contact_sheet(data, tmp_path):
    own, swapped = data.colors, swap_targets(data)
    metrics, counts, rows = score_outputs(data, own, swapped)
    settings = {"model": "truth", "model_kind": "module", "data": "synthetic", "size": SIZE}
    settings.update(seed=EVAL_SEED, noise_seed=0, device="cpu")
    sheet = contact_sheet(data, own, swapped, rows=3)
    assert sheet.shape == (16 + 3 * (SIZE + 4) + 4, 5 * (SIZE + 4) + 4, 3)
    paths = Report(metrics, counts, settings, rows, sheet).write(tmp_path / "out")
    saved = json.loads(paths["json"].read_text())
    assert saved["metrics"]["psnr"] == "inf" and saved["metrics"]["swap_following"] == 1.0
    assert set(saved["applicable"]) == set(METRICS)
    table = paths["markdown"].read_text()
    assert table.count("\n|") == len(METRICS) + 2 and "100.0% (6/6)" in table
    assert Image.open(paths["contact_sheet"]).size == (sheet.shape[1], sheet.shape[0])
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


def _eval(args, capsys):
    code = main(["eval", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return code, out, err


def _check_outputs(out_dir, out):
    saved = json.loads((out_dir / "eval.json").read_text())
    assert (out_dir / "eval.md").read_text() in out  # the table is printed too
    with Image.open(out_dir / "contact_sheet.png") as sheet:
        assert sheet.size == (5 * (SIZE + 4) + 4, 16 + 4 * (SIZE + 4) + 4)
    assert saved["settings"]["count"] == 4 and saved["settings"]["size"] == SIZE
    assert len(saved["per_drawing"]) == 4
    return saved


def test_cli_on_checkpoint_and_on_its_onnx_export(checkpoint, generator, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from colorizer.export import export_onnx

    common = ["--count", 4, "--size", SIZE, "--device", "cpu", "--batch-size", 3]
    code, out, err = _eval([checkpoint, *common, "--kernels", "eager", "--out", tmp_path / "ckpt"], capsys)
    assert code == 0, err
    from_ckpt = _check_outputs(tmp_path / "ckpt", out)
    assert from_ckpt["settings"]["model_kind"] == "checkpoint" and from_ckpt["settings"]["kernels"] == "eager"
    for name in METRICS:
        assert isinstance(from_ckpt["metrics"][name], float), name

    onnx_path = tmp_path / "g.onnx"
    export_onnx(generator, str(onnx_path), noise="seeded", verify=False)
    code, out, err = _eval([onnx_path, *common, "--out", tmp_path / "onnx"], capsys)
    assert code == 0, err
    from_onnx = _check_outputs(tmp_path / "onnx", out)
    assert from_onnx["settings"]["model_kind"] == "engine"
    # The same weights and the same seeded noise: the same scores up to float rounding.
    assert from_onnx["metrics"]["l1"] == pytest.approx(from_ckpt["metrics"]["l1"], abs=0.05)
    assert from_onnx["metrics"]["swap_following"] == from_ckpt["metrics"]["swap_following"]


def test_cli_on_a_run_folder(generator, tmp_path, capsys):
    from colorizer.checkpoint import CheckpointManager, save_generator

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    save_generator(CheckpointManager(str(tmp_path / "run" / "checkpoints")).path_for(3), generator)
    args = [tmp_path / "run", "--count", 2, "--size", SIZE, "--device", "cpu", "--out", tmp_path / "o"]
    code, out, err = _eval(args, capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert saved["settings"]["model_path"].endswith("3.safetensors")
    with open(saved["settings"]["model_path"], "rb") as f:
        assert saved["settings"]["model_sha256"] == hashlib.sha256(f.read()).hexdigest()
    code, _, err = _eval([*args, "--noise-seed", 9, "--overwrite"], capsys)  # a second report replaces the first
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "eval.json").read_text())["settings"]["noise_seed"] == 9


def test_cli_on_a_folder_of_pictures(checkpoint, data, tmp_path, capsys):
    pictures = tmp_path / "pictures" / "sub"
    pictures.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(data.colors[i]).resize((200, 150)).save(pictures / f"p{i}.jpg")
    out_dir = tmp_path / "o"
    args = [checkpoint, "--data", "folder", "--data-root", tmp_path / "pictures", "--size", SIZE, "--out", out_dir]
    code, out, err = _eval([*args, "--device", "cpu"], capsys)
    assert code == 0, err
    saved = json.loads((out_dir / "eval.json").read_text())
    assert saved["settings"]["count"] == 3 and saved["settings"]["seed"] is None
    assert set(saved["applicable"]) == {"l1", "psnr", "ssim", "swap_following", "swap_toward_other"}
    assert "| l1_background | n/a |" in out
    assert [r["name"] for r in saved["per_drawing"]] == [f"sub/p{i}.jpg" for i in range(3)]


@pytest.mark.parametrize(
    "case",
    [
        "count_1",
        "size_100",
        "missing_model",
        "junk_model",
        "line_extractor",
        "folder_without_root",
        "root_without_folder",
        "root_missing",
        "root_empty",
        "bad_device",
        "negative_noise_seed",
        "batch_size_0",
        "out_is_a_file",
        "missing_engine",
        "count_not_a_number",
        "seed_too_big",
        "unknown_bundled_name",
        "existing_report",
    ],
)
def test_cli_bad_input_one_line_exit_2(case, checkpoint, tmp_path, capsys):
    model, extra = checkpoint, []
    out = tmp_path / "out"
    if case == "count_1":
        extra = ["--count", 1]
    elif case == "size_100":
        extra = ["--size", 100]
    elif case == "missing_model":
        model = tmp_path / "nope.pth"
    elif case == "junk_model":
        model = tmp_path / "junk.pth"
        model.write_bytes(b"PK\x03\x04 not a checkpoint")
    elif case == "line_extractor":
        model = tmp_path / "c2s.pth"
        torch.save({"netG": Color2Sketch(channels=(64,)).state_dict()}, model)
    elif case == "folder_without_root":
        extra = ["--data", "folder"]
    elif case == "root_without_folder":
        extra = ["--data-root", tmp_path]
    elif case == "root_missing":
        extra = ["--data", "folder", "--data-root", tmp_path / "nowhere"]
    elif case == "root_empty":
        (tmp_path / "empty").mkdir()
        extra = ["--data", "folder", "--data-root", tmp_path / "empty"]
    elif case == "bad_device":
        extra = ["--device", "gpu0"]
    elif case == "negative_noise_seed":
        extra = ["--noise-seed", -1]
    elif case == "batch_size_0":
        extra = ["--batch-size", 0]
    elif case == "out_is_a_file":
        out.write_text("a file")
    elif case == "missing_engine":
        model = tmp_path / "gone.onnx"
    elif case == "count_not_a_number":
        extra = ["--count", "abc"]
    elif case == "seed_too_big":
        extra = ["--seed", 2**31]
    elif case == "unknown_bundled_name":
        model = "no_such_model"
    elif case == "existing_report":
        out.mkdir()
        (out / "eval.md").write_text("an earlier report")
    code, _, err = _eval([model, "--count", 2, "--size", SIZE, "--out", out, *extra], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    if case == "unknown_bundled_name":
        assert "demo" in lines[0]  # the message lists the bundled models
    if case == "existing_report":
        assert "--overwrite" in lines[0] and (out / "eval.md").read_text() == "an earlier report"
        assert sorted(p.name for p in out.iterdir()) == ["eval.md"]
    elif case != "out_is_a_file":
        assert not out.exists()


def test_evaluate_library_call_on_a_module(generator):
    report = evaluate(generator, count=2, size=SIZE, device="cpu", rows=1)
    assert report.settings["model_kind"] == "module" and report.settings["count"] == 2
    assert report.sheet.shape[0] == 16 + SIZE + 8
    assert 0 <= report.metrics["swap_following"] <= 1 and report.metrics["l1"] > 0


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--rows", -5, "--rows must be a positive integer"),  # issue 22 item 8: was accepted
        ("--rows", 0, "--rows must be a positive integer"),
        ("--count", 1, "--count must be an integer of at least 2"),
        ("--count", 10**9, "GiB for the pictures, more than this machine's"),
        ("--size", 100, "--size must be a multiple of 128"),
        ("--size", 10**6, "--size must be a multiple of 128"),
        ("--batch-size", -1, "--batch-size must be a positive integer"),
        ("--seed", -1, "--seed must be in"),
        ("--seed", 2**31, "--seed must be in"),
        ("--noise-seed", -1, "--noise-seed must be in"),
        ("--noise-seed", 2**31, "--noise-seed must be in"),
    ],
)
def test_every_number_of_eval_is_checked_before_the_model_loads(option, value, says, tmp_path, capsys, monkeypatch):
    import colorizer.evaluation

    monkeypatch.setattr(colorizer.evaluation, "load_runner", lambda *a, **k: pytest.fail("checked too late"))
    code, _, err = _eval(["demo", "--count", 2, "--size", SIZE, "--out", tmp_path / "out", option, value], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and says in lines[0], err
    assert not (tmp_path / "out").exists()
