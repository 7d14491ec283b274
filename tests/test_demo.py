"""``make demo`` (colorizer.demo): the bundled model's swap panel comes first, then training and scoring."""

import numpy as np

from colorizer.data import load_image
from colorizer.demo import PANEL_PALETTES, STRIP_HEIGHT, panel_palettes, run_demo, swap_panel


def test_panel_palettes_are_clearly_different():
    palettes = panel_palettes()
    assert len(palettes) == 1 + len(PANEL_PALETTES) >= 3
    mains = np.array([p[1] for _, p in palettes], dtype=float)  # slot 1: the largest colored area
    gaps = np.linalg.norm(mains[:, None] - mains[None], axis=2)
    assert gaps[~np.eye(len(mains), dtype=bool)].min() > 60


def test_swap_panel_shows_one_different_output_per_palette():
    panel = swap_panel("demo")
    n = len(PANEL_PALETTES) + 1
    assert panel.dtype == np.uint8 and panel.shape[0] == 256 + STRIP_HEIGHT
    assert panel.shape[1] == (2 + n) * 256 + (1 + n) * 4
    outputs = [panel[:256, (2 + k) * 260 : (2 + k) * 260 + 256].astype(float) for k in range(n)]
    for a in range(n):
        for b in range(a + 1, n):
            assert np.abs(outputs[a] - outputs[b]).mean() > 5  # the palette changes the picture


def test_run_demo_shows_the_bundled_model_first_then_trains_and_scores(tmp_path, capsys):
    out = tmp_path / "demo_out"
    # No DataLoader worker: forking a worker inside an xdist worker (threads running) crashed it in a fresh-clone run.
    tiny = ("--max-steps", "2", "--length", "8", "--batch-size", "2", "--no-progress", "--ckpt-every", "0")
    tiny += ("--workers", "0")
    assert run_demo(str(out), train_args=tiny, eval_count=2, eval_size=128) == 0
    text = capsys.readouterr().out
    assert text.index("swap_panel.png") < text.index("2/3 training") < text.index("3/3 scoring")
    assert "swap_following" in text  # the eval table is printed
    for name in ("swap_panel.png", "trained_swap_panel.png", "eval/eval.json", "eval/eval.md"):
        assert (out / name).is_file(), name
    assert load_image(out / "swap_panel.png").shape[0] == 256 + STRIP_HEIGHT
    assert list((out / "train" / "checkpoints").glob("*.safetensors"))


def test_a_rerun_on_one_machine_with_one_thread_count_repeats_training_bit_for_bit(tmp_path):
    # What README's "What `make demo` shows" promises (issue 22 item 17): the same machine, torch build
    # and thread count give the same weights. Not across thread counts or CPUs: the convolutions'
    # weight gradients are summed in an order that depends on both (measured in the README).
    from colorizer.checkpoint import read_checkpoint
    from colorizer.train import Trainer
    from tests.test_train_support import payload_diffs, tiny_config

    runs = [Trainer(tiny_config(tmp_path / name, max_steps=1), log=lambda m: None).fit() for name in "ab"]
    a, _ = read_checkpoint(runs[0].checkpoint)
    b, _ = read_checkpoint(runs[1].checkpoint)
    assert payload_diffs(a, b) == []
