"""Trainer: configuration (presets, files, overrides, bad values), a smoke run, and an overfit test."""

import os

import pytest
import torch

from colorizer.errors import ConfigError, run_cli
from colorizer.train import TrainConfig, Trainer, resolve_config
from colorizer.train.__main__ import main
from colorizer.train.config import PRESETS, build_parser, fields
from tests.test_train_support import FixedDataset, synthetic_tensors, tiny_config


def test_help_documents_every_option():
    text = build_parser().format_help()
    for f in fields():
        assert "--" + f.name.replace("_", "-") in text, f.name
        assert f.metadata["help"]
    assert "--preset" in text and "--config" in text and "--resume" in text


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_resolve_and_validate(preset):
    extra = ["--data-root", "/somewhere"] if preset == "reference" else []
    config, _ = resolve_config(["--preset", preset, *extra])
    if preset == "reference":  # SPEC.md values
        assert (config.size, config.batch_size, config.epochs, config.channels) == (256, 2, 25, (64, 128, 256, 512))
        assert (config.lr_g, config.lr_d, config.betas_g, config.betas_d) == (2e-4, 2e-4, (0.5, 0.999), (0.5, 0.999))
        assert (config.w_gan, config.w_l1, config.w_feature, config.w_tv) == (1.0, 100.0, 1e-4, 1e-2)
    else:
        assert config.data == "synthetic" and config.size == 128


def test_precedence_preset_then_file_then_command_line(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("batch-size: 3\nlr_g: 1.0e-3\nchannels: [64, 128]\n")
    config, _ = resolve_config(["--preset", "tiny", "--config", str(yaml_file), "--lr-g", "5e-4"])
    assert (config.batch_size, config.lr_g, config.channels, config.size) == (3, 5e-4, (64, 128), 128)
    toml_file = tmp_path / "c.toml"
    toml_file.write_text('data = "synthetic"\nsize = 256\nbetas_d = [0.0, 0.9]\naugment = false\n')
    config, _ = resolve_config(["--config", str(toml_file), "--channels", "64,64"])
    assert (config.size, config.betas_d, config.augment, config.channels) == (256, (0.0, 0.9), False, (64, 64))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "tiny", "--size", "100"], "size: must be a positive multiple of 128"),
        (["--preset", "tiny", "--batch-size", "0"], "batch_size: must be >= 1"),
        (["--preset", "tiny", "--lr-g", "-1"], "lr_g: must be a positive finite number"),
        (["--preset", "tiny", "--lr-d", "abc"], "lr_d: expected float"),
        (["--preset", "tiny", "--channels", "64,96"], "channels: needs 1 to 7 widths, each a multiple of 64"),
        (["--preset", "tiny", "--amp", "fp8"], "amp: must be one of none, bf16, fp16"),
        (["--preset", "tiny", "--betas-g", "0.5,1.5"], "betas_g: needs two values in [0, 1)"),
        (["--preset", "tiny", "--w-l1", "nan"], "w_l1: must be a finite number >= 0"),
        (["--preset", "tiny", "--vgg-weights", "/no/such/vgg16.pth"], "vgg_weights: file not found"),
        (["--data", "pair"], "data=pair needs --data-root"),
        (["--config", "/no/such/file.yaml"], "config file not found"),
    ],
)
def test_bad_values_give_one_line_errors(argv, message, capsys):
    assert run_cli(main, argv) == ConfigError.exit_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_bad_config_files(tmp_path):
    unknown = tmp_path / "u.yaml"
    unknown.write_text("batch_size: 2\nlearning_rate: 3\n")
    with pytest.raises(ConfigError, match="unknown option.*learning_rate"):
        resolve_config(["--config", str(unknown)])
    broken = tmp_path / "b.yaml"
    broken.write_text("size: [128\n")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        resolve_config(["--config", str(broken)])
    wrong = tmp_path / "w.json"
    wrong.write_text("{}")
    with pytest.raises(ConfigError, match=r"must end in \.yaml, \.yml or \.toml"):
        resolve_config(["--config", str(wrong)])


def test_print_config_round_trips(tmp_path, capsys):
    assert main(["--preset", "demo", "--print-config", "--seed", "7"]) == 0
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(capsys.readouterr().out)
    again, _ = resolve_config(["--config", str(dumped)])
    expected, _ = resolve_config(["--preset", "demo", "--seed", "7"])
    assert again == expected


def test_smoke_run_writes_checkpoint_log_samples_and_curve(tmp_path):
    messages = []
    config = tiny_config(tmp_path, max_steps=2, sample_every=1, log_every=1)
    result = Trainer(config, log=messages.append).fit()
    assert result.exit_code == 0 and result.progress.step == 2
    assert any("feature loss: DISABLED" in m for m in messages)  # said once, clearly
    assert os.path.isfile(result.checkpoint)
    assert sorted(os.listdir(tmp_path / "samples")) == ["step_000000001.png", "step_000000002.png"]
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss_d,loss_g") and len(rows) == 3
    assert "feature loss: DISABLED" in (tmp_path / "config.yaml").read_text()
    from PIL import Image

    with Image.open(tmp_path / "samples" / "step_000000002.png") as im:
        assert im.size == (5 * 128, 1 * 128)  # reference | sketch | palette | output | ground truth


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    Trainer(tiny_config(tmp_path, max_steps=1), log=lambda m: None).fit()
    with pytest.raises(ConfigError, match="already holds checkpoints; continue with --resume auto"):
        Trainer(tiny_config(tmp_path, max_steps=2), log=lambda m: None).fit()


def test_overfit_fixed_batch_l1_drops(tmp_path):
    """A fixed batch of two drawings: L1 falls to well under 60% of its start within 12 steps.

    (The generator's last layer is a weight-standardized conv into tanh, so at initialisation most
    outputs are saturated at +-1 and L1 starts near 1; the first steps must fix that.)
    """
    color, sketch = synthetic_tensors(2)
    dataset = FixedDataset(color, sketch)
    trainer = Trainer(tiny_config(tmp_path, batch_size=2, lr_g=1e-3), dataset=dataset, log=lambda m: None)
    from colorizer.data import collate

    batch = collate([dataset[0], dataset[1]])
    l1 = [trainer.train_step(batch)["l1"] for _ in range(12)]
    assert all(torch.isfinite(torch.tensor(l1)))
    assert min(l1[-3:]) < 0.6 * l1[0], l1


def test_default_config_is_the_reference():
    c = TrainConfig()
    assert (c.size, c.batch_size, c.epochs, c.lr_g, c.betas_d, c.w_l1, c.w_feature, c.w_tv) == (
        256,
        2,
        25,
        2e-4,
        (0.5, 0.999),
        100.0,
        1e-4,
        1e-2,
    )


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_channels_last_steps_and_resumes(tmp_path, amp):
    config = tiny_config(tmp_path, device="cuda", amp=amp, channels_last=True, max_steps=2, workers=0)
    result = Trainer(config, log=lambda m: None).fit()
    assert result.exit_code == 0
    from colorizer.checkpoint import read_checkpoint

    payload, _ = read_checkpoint(result.checkpoint)
    assert all(torch.isfinite(v).all() for v in payload["netG"].values() if v.is_floating_point())
    assert ("_scale" in payload["scalerG"]) == (amp == "fp16")
    again = Trainer(tiny_config(tmp_path, device="cuda", amp=amp, max_steps=3, resume="auto"), log=lambda m: None)
    assert again.fit().progress.step == 3


@pytest.mark.gpu
def test_cuda_compile_smoke(tmp_path):
    config = tiny_config(tmp_path, device="cuda", compile=True, max_steps=1, workers=0)
    assert Trainer(config, log=lambda m: None).fit().exit_code == 0
