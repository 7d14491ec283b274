"""Checkpoint format, atomic writes, rotation, and the model loaders for every supported format."""

import errno
import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from colorizer import atomic
from colorizer import checkpoint as ck
from colorizer.checkpoint import (
    CheckpointManager,
    ConfigMismatchWarning,
    config_hash,
    decode_checkpoint,
    encode_checkpoint,
    load_discriminator,
    load_generator,
    read_checkpoint,
    save_generator,
    write_checkpoint,
)
from colorizer.errors import CheckpointError
from colorizer.models import Color2Sketch, Discriminator, Sketch2Color
from tests.test_train_support import payload_diffs

G_CHANNELS = (64, 64, 128, 128)
D_CHANNELS = (32, 32, 64, 64)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(3)
    g = Sketch2Color(channels=G_CHANNELS)
    d = Discriminator(channels=D_CHANNELS)
    for p in g.parameters():  # noise weights start at 0: make every tensor distinct from its init
        p.data.add_(torch.randn_like(p) * 0.01)
    return g, d


def _same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_nested_payload_round_trips_bit_for_bit():
    payload = {
        "model": {"a.weight": torch.randn(3, 4), "b.bias": torch.randn(5).bfloat16()},
        "optim": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 2)}}, "param_groups": [{}]},
        "scalar": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
        "tuple": (1, 2.5, "x", None, True),
        "numpy": np.arange(5, dtype=np.uint32),
        "nested": [[torch.ones(1, dtype=torch.uint8)], {"k": float("inf")}],
    }
    data = encode_checkpoint(payload, {"hello": "world", "step": 4})
    back, meta = decode_checkpoint(data)
    assert meta == {"hello": "world", "step": 4}
    np.testing.assert_array_equal(back.pop("numpy"), payload.pop("numpy"))
    assert payload_diffs(back, payload) == []
    assert isinstance(back["tuple"], tuple) and list(back["optim"]["state"]) == [0]


def test_refuses_objects_it_cannot_store_safely():
    with pytest.raises(TypeError, match="cannot store a object"):
        encode_checkpoint({"x": object()})


def test_our_training_checkpoint_loads_as_generator_and_discriminator(tmp_path, nets):
    g, d = nets
    path = str(tmp_path / "run.safetensors")
    write_checkpoint(path, {"netG": g.state_dict(), "netD": d.state_dict(), "step": 3}, {"kind": "training"})
    g2, d2 = load_generator(path), load_discriminator(path)
    assert isinstance(g2, Sketch2Color) and g2.channels == G_CHANNELS and g2.in_channels == 30
    assert d2.channels == D_CHANNELS and not g2.training
    _same_model(g, g2)
    _same_model(d, d2)


def test_reference_pth_format_and_plain_state_dicts(tmp_path, nets):
    g, d = nets
    ref = tmp_path / "reference.pth"
    # The reference notebook saves generator, discriminator and optimizers in one dict.
    opt = torch.optim.Adam(g.parameters())
    torch.save({"netG": g.state_dict(), "netD": d.state_dict(), "optimizerG": opt.state_dict(), "epoch": 3}, ref)
    _same_model(g, load_generator(str(ref)))
    _same_model(d, load_discriminator(str(ref)))
    plain = tmp_path / "plain.pth"
    torch.save({f"module.{k}": v for k, v in g.state_dict().items()}, plain)  # DataParallel prefix
    _same_model(g, load_generator(str(plain)))
    from safetensors.torch import save_file

    st = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in d.state_dict().items()}, str(st))
    _same_model(d, load_discriminator(str(st)))


def test_color2sketch_is_inferred_from_three_input_channels(tmp_path):
    c2s = Color2Sketch(channels=(64,))
    path = str(tmp_path / "c2s.safetensors")
    save_generator(path, c2s)
    loaded = load_generator(path)
    assert isinstance(loaded, Color2Sketch) and loaded.in_channels == 3 and loaded.channels == (64, 64, 64, 64)
    _same_model(c2s, loaded)


def test_missing_and_extra_keys_are_listed(tmp_path, nets):
    g, _ = nets
    state = dict(g.state_dict())
    state.pop("decoder.noise3.weight")
    state["decoder.bogus.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"netG": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_generator(str(path))
    msg = str(info.value)
    assert "missing keys decoder.noise3.weight" in msg and "unexpected keys decoder.bogus.weight" in msg
    assert "\n" not in msg
    shape = dict(g.state_dict())
    shape["decoder.noise3.weight"] = torch.zeros(7)
    torch.save({"netG": shape}, path)
    with pytest.raises(CheckpointError, match=r"decoder.noise3.weight has shape \(7,\)"):
        load_generator(str(path))
    torch.save({"netD": {}}, path)
    with pytest.raises(CheckpointError, match="holds no netG"):
        load_generator(str(path))


def test_truncated_and_tampered_files_raise(tmp_path, nets):
    g, d = nets
    path = tmp_path / "ok.safetensors"
    write_checkpoint(str(path), {"netG": g.state_dict(), "netD": d.state_dict()})
    data = path.read_bytes()
    for cut in (5, 100, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_generator(str(bad))
    flipped = bytearray(data)
    flipped[-1000] ^= 0x40  # one bit of one weight
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_generator(str(bad))
    pth = tmp_path / "ref.pth"
    torch.save({"netG": g.state_dict()}, pth)
    raw = pth.read_bytes()
    (tmp_path / "ref_cut.pth").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated, damaged or not a checkpoint"):
        load_generator(str(tmp_path / "ref_cut.pth"))
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(str(tmp_path / "nope.pth"))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_generator(str(tmp_path / "empty.pth"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/colorizer_pwned_by_checkpoint",))


def test_pickled_code_is_never_executed(tmp_path):
    marker = "/tmp/colorizer_pwned_by_checkpoint"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"netG": _Evil()}, f)
    with pytest.raises(CheckpointError):
        load_generator(str(path))
    torch.save({"netG": {"x": _Evil()}}, tmp_path / "evil_zip.pth")
    with pytest.raises(CheckpointError):
        load_generator(str(tmp_path / "evil_zip.pth"))
    assert not os.path.exists(marker)


def test_config_hash_mismatch_warns(tmp_path):
    path = str(tmp_path / "c.safetensors")
    h = config_hash({"size": 256, "lr": 2e-4})
    assert h == config_hash({"lr": 2e-4, "size": 256})
    write_checkpoint(path, {"x": torch.ones(1)}, {"config_hash": h})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_checkpoint(path, expected_config_hash=h)
    with pytest.warns(ConfigMismatchWarning, match="different config"):
        read_checkpoint(path, expected_config_hash=config_hash({"size": 128, "lr": 2e-4}))


def test_manager_keeps_last_n_points_latest_and_skips_a_corrupt_newest(tmp_path):
    mgr = CheckpointManager(str(tmp_path), keep_last=2)
    for step in (1, 2, 3):
        mgr.save(step, {"w": torch.full((2,), float(step))}, {"step": step})
    assert [s for s, _ in mgr.checkpoints()] == [2, 3]
    assert (tmp_path / "latest").read_text() == "step_000000003.safetensors\n"  # for people and scripts
    with open(mgr.path_for(3), "r+b") as f:  # damage the newest
        f.truncate(os.path.getsize(mgr.path_for(3)) - 10)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        path, payload, meta = mgr.load_latest_good()
    assert path == mgr.path_for(2) and payload["w"][0].item() == 2.0 and meta["step"] == 2


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    mgr = CheckpointManager(str(tmp_path), keep_last=3)
    mgr.save(1, {"w": torch.ones(3)})
    before = open(mgr.path_for(1), "rb").read()

    def disk_full(fd, data):
        os.write(fd, bytes(data)[: len(data) // 3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_write_fully", disk_full)
    with pytest.raises(CheckpointError, match=r"no space left on device; the previous checkpoint .*step_000000001"):
        mgr.save(2, {"w": torch.zeros(3)})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["latest", "step_000000001.safetensors"]
    assert open(mgr.path_for(1), "rb").read() == before
    # Same for a folder that turned read-only (simulated: tests may run as root, which ignores modes).
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args)

    monkeypatch.setattr(ck.os, "open", read_only)
    with pytest.raises(CheckpointError, match="folder is not writable"):
        mgr.save(2, {"w": torch.zeros(3)})


def test_stale_temp_files_are_removed(tmp_path):
    (tmp_path / ".step_000000002.safetensors.123.tmp").write_bytes(b"half")
    (tmp_path / "keep.txt").write_text("x")
    removed = atomic.remove_stale_temp_files(str(tmp_path))
    assert [os.path.basename(p) for p in removed] == [".step_000000002.safetensors.123.tmp"]
    assert os.listdir(tmp_path) == ["keep.txt"]
