"""Data sets, paired augmentation, bad-file handling and the synthetic drawings (colorizer.data)."""

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer.data import (
    BASE_SIZE,
    ColorFolderDataset,
    PairDataset,
    SkippedFileWarning,
    SyntheticDataset,
    augment_pair,
    build_dataset,
    collate,
    load_image,
    random_resized_crop_params,
    render_drawing,
    split_pair,
    to_tensor,
)
from colorizer.data.synthetic import _DRAWING_STREAM, KIND_COLOR, MIN_LUMA_GAP, _luma, drawing_palette
from colorizer.demo import write_demo_assets
from colorizer.errors import ConfigError, DataError, ImageError
from colorizer.sketch import xdog

ASSETS = Path(__file__).resolve().parents[1] / "colorizer" / "assets"


def _color(seed, h=128, w=128):
    """A smooth, asymmetric color picture: crops and flips of it are all different."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [np.sin(x * rng.uniform(2, 7) + y * rng.uniform(1, 5) + rng.uniform(0, 6)) for _ in range(3)]
    arr = (np.stack(chans, axis=2) * 0.5 + 0.5) * 255
    arr[: h // 5, : w // 4] = (250, 20, 20)  # an unmistakable top-left corner
    return np.clip(arr, 0, 255).astype(np.uint8)


def _luma_u8(arr):
    f = arr.astype(np.float32)
    return np.clip(np.rint(f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114), 0, 255).astype(np.uint8)


def _write_pair(path, seed, half=128):
    color = _color(seed, half, half)
    sketch = np.repeat(_luma_u8(color)[:, :, None], 3, axis=2)  # a "sketch" derived from the color
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([color, sketch], axis=1)).save(path)
    return color


@pytest.fixture
def pair_root(tmp_path):
    root = tmp_path / "pairs"
    for i in range(4):
        _write_pair(root / "train" / f"{i:03d}.png", seed=i)
    return root


def _gray_of(color_t):
    w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (color_t * w).sum(0)


# ---- pairs and augmentation ------------------------------------------------------------------


def test_split_pair():
    color = _color(0, 64, 64)
    right = _color(1, 64, 64)
    c, s = split_pair(np.concatenate([color, right], axis=1), "p.png")
    np.testing.assert_array_equal(c, color)
    np.testing.assert_array_equal(s, _luma_u8(right))
    for shape in ((64, 127, 3), (64, 64, 3), (64, 256, 3), (0, 0, 3)):
        with pytest.raises(ImageError, match="twice as wide"):
            split_pair(np.zeros(shape, np.uint8), "p.png")
    with pytest.raises(ImageError, match="too small"):
        split_pair(np.zeros((64, 128, 3), np.uint8), "p.png", min_size=128)


def test_random_resized_crop_params_follow_torchvision_semantics():
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(2000):
        top, left, h, w = random_resized_crop_params(rng, 300, 400)
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400 and h > 0 and w > 0
        areas.append(h * w / (300 * 400))
        ratios.append(w / h)
    assert min(areas) < 0.12 and max(areas) > 0.95
    assert min(ratios) > 0.72 and max(ratios) < 1.4
    # Impossible aspect: the fallback is a centered crop clamped to the ratio range.
    assert random_resized_crop_params(np.random.default_rng(1), 10, 1000, scale=(0.99, 1.0)) == (
        0,
        (1000 - 13) // 2,
        10,
        13,
    )


def test_augment_pair_applies_the_same_crop_and_flip():
    color = _color(3, 200, 300)
    sketch = _luma_u8(color)
    flips = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        c, s = augment_pair(color, sketch, 64, rng)
        assert c.shape == (64, 64, 3) and s.shape == (64, 64)
        assert np.abs(_luma_u8(c).astype(int) - s.astype(int)).max() <= 2
        # and it is the crop the rng asked for
        rng = np.random.default_rng(seed)
        random_resized_crop_params(rng, 200, 300)
        flips.add(bool(rng.random() < 0.5))
    assert flips == {True, False}
    c, s = augment_pair(color, None, 50, None)
    assert s is None and c.shape == (50, 50, 3)


def test_pair_dataset_crop_and_flip_match_on_color_and_sketch(pair_root):
    ds = PairDataset(pair_root, size=64, seed=3)
    assert len(ds) == 4
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(4):
            sample = ds[i]
            assert set(sample) == {"color", "sketch", "index", "skipped"}
            assert sample["color"].shape == (3, 64, 64) and sample["color"].dtype == torch.float32
            assert sample["sketch"].shape == (3, 64, 64) and sample["index"] == i and sample["skipped"] == 0
            assert torch.equal(sample["sketch"][0], sample["sketch"][2])
            err = (_gray_of(sample["color"]) - sample["sketch"][0]).abs().max().item()
            assert err < 3 * 2 / 255, f"sketch does not line up with color (epoch {epoch}, index {i}): {err}"


def test_pair_dataset_without_augmentation_is_the_resized_halves(pair_root):
    ds = PairDataset(pair_root, size=128, augment=False)
    color = load_image(pair_root / "train" / "002.png")[:, :128]
    torch.testing.assert_close(ds[2]["color"], to_tensor(color), rtol=0, atol=0)
    assert torch.equal(ds[2]["color"], ds[2]["color"])
    ds.set_epoch(5)
    torch.testing.assert_close(ds[2]["color"], to_tensor(color), rtol=0, atol=0)


def test_augmentation_is_a_function_of_seed_epoch_index(pair_root):
    a = PairDataset(pair_root, size=48, seed=7)
    b = PairDataset(pair_root, size=48, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    for i in (3, 0, 2):  # any order
        assert torch.equal(a[i]["color"], b[i]["color"]) and torch.equal(a[i]["sketch"], b[i]["sketch"])
    # the (epoch, index) key overrides the stored epoch (for persistent DataLoader workers)
    b.set_epoch(0)
    assert torch.equal(b[(2, 1)]["color"], a[1]["color"])
    assert not torch.equal(b[1]["color"], a[1]["color"])
    c = PairDataset(pair_root, size=48, seed=8)
    c.set_epoch(2)
    assert not torch.equal(c[1]["color"], a[1]["color"])


def test_dataloader_workers_see_the_same_data(pair_root):
    ds = PairDataset(pair_root, size=32, seed=1)
    ds.set_epoch(4)
    loaders = [
        torch.utils.data.DataLoader(ds, batch_size=2, num_workers=w, collate_fn=collate, shuffle=False) for w in (0, 2)
    ]
    one, two = ([b for b in loader] for loader in loaders)
    for x, y in zip(one, two):
        assert torch.equal(x["color"], y["color"]) and torch.equal(x["sketch"], y["sketch"])
        assert torch.equal(x["index"], y["index"])


def test_pair_dataset_xdog_and_model_modes(pair_root):
    ds = PairDataset(pair_root, size=64, sketch="xdog", seed=2)
    sample = ds[1]
    torch.testing.assert_close(sample["sketch"], xdog(sample["color"]), rtol=0, atol=0)
    model_mode = PairDataset(pair_root, size=64, sketch="model", seed=2)
    sample_m = model_mode[1]
    assert "sketch" not in sample_m
    assert torch.equal(sample_m["color"], sample["color"])
    with pytest.raises(ConfigError):
        PairDataset(pair_root, sketch="pencil")


# ---- bad files -------------------------------------------------------------------------------


def _make_bad_files(root):
    """Alphabetical order: a good, b zero-byte, c truncated, d text, e wrong shape, f good."""
    _write_pair(root / "a.png", 0)
    (root / "b.png").write_bytes(b"")
    data = (root / "a.png").read_bytes()
    (root / "c.png").write_bytes(data[: len(data) // 2])
    (root / "d.jpg").write_text("not an image")
    Image.fromarray(_color(5, 128, 128)).save(root / "e.png")
    _write_pair(root / "f.png", 1)
    (root / "notes.txt").write_text("ignored: not an image extension")


def test_bad_files_are_skipped_counted_and_reported_once(tmp_path):
    root = tmp_path / "mixed"
    _make_bad_files(root)
    ds = PairDataset(root, size=32, augment=False)
    assert len(ds) == 6
    with pytest.warns(SkippedFileWarning) as record:
        sample = ds[1]
    assert sample["skipped"] == 4 and sample["index"] == 1
    assert torch.equal(sample["color"], ds[5]["color"])  # the next good file, in order
    messages = [str(w.message) for w in record if issubclass(w.category, SkippedFileWarning)]
    assert len(messages) == 4
    for name in ("b.png", "c.png", "d.jpg", "e.png"):
        assert sum(str(root / name) in m for m in messages) == 1, (name, messages)
    assert any("twice as wide" in m for m in messages)
    # Known bad files are still counted, but not reported or decoded again.
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedFileWarning)
        assert ds[2]["skipped"] == 3 and ds[4]["skipped"] == 1 and ds[0]["skipped"] == 0
    assert set(ds.bad_files) == {str(root / n) for n in ("b.png", "c.png", "d.jpg", "e.png")}


def test_skip_count_does_not_depend_on_what_was_read_before(tmp_path):
    root = tmp_path / "mixed"
    _make_bad_files(root)
    fresh = PairDataset(root, size=32, augment=False)
    used = PairDataset(root, size=32, augment=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFileWarning)
        [used[i] for i in range(6)]
        assert fresh[3]["skipped"] == used[3]["skipped"] == 2


def test_all_files_bad_raises_data_error(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "x.png").write_bytes(b"")
    (root / "y.png").write_text("nope")
    ds = ColorFolderDataset(root, size=32)
    with pytest.warns(SkippedFileWarning), pytest.raises(DataError, match="all 2 image files failed"):
        ds[0]
    with pytest.raises(DataError, match="all 2"):  # and again, without re-decoding
        ds[1]


def test_empty_or_missing_folder_raises_at_construction(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no pictures here")
    for cls in (PairDataset, ColorFolderDataset):
        with pytest.raises(DataError, match="no image files"):
            cls(tmp_path / "empty")
        with pytest.raises(DataError, match="no such data folder"):
            cls(tmp_path / "missing")


# ---- color folders -------------------------------------------------------------------------------


def test_color_folder_dataset(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(_color(1, 150, 210)).save(root / "wide.jpg", quality=95)
    Image.fromarray(_color(2, 140, 140)).save(root / "sq.PNG")
    Image.fromarray(_color(3, 60, 60)).save(root / "tiny.png")  # below min_size: skipped
    ds = ColorFolderDataset(root, size=64, seed=1)
    assert [p.name for p in ds.files] == ["sq.PNG", "tiny.png", "wide.jpg"]
    s = ds[0]
    torch.testing.assert_close(s["sketch"], xdog(s["color"]), rtol=0, atol=0)
    with pytest.warns(SkippedFileWarning, match="too small"):
        assert ds[1]["skipped"] == 1
    plain = ColorFolderDataset(root, size=70, augment=False)
    assert plain[2]["color"].shape == (3, 70, 70)  # the centered square of the wide picture
    with pytest.raises(ConfigError):
        ColorFolderDataset(root, sketch="given")


# ---- synthetic ---------------------------------------------------------------------------------


def test_synthetic_is_deterministic_by_seed_and_index():
    a, b = SyntheticDataset(length=20, size=64, seed=5), SyntheticDataset(length=20, size=64, seed=5)
    for i in (0, 7, 19):
        assert torch.equal(a[i]["color"], b[i]["color"]) and torch.equal(a[i]["sketch"], b[i]["sketch"])
    assert not torch.equal(a[3]["color"], SyntheticDataset(length=20, size=64, seed=6)[3]["color"])
    assert not torch.equal(a[3]["color"], a[4]["color"])
    c1, l1 = render_drawing(5, 3)
    c2, l2 = render_drawing(5, 3)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(l1, l2)
    a.set_epoch(1)
    assert not torch.equal(a[3]["color"], b[3]["color"])  # new augmentation, same drawing
    assert len(a) == 20 and a[19]["skipped"] == 0
    with pytest.raises(IndexError):
        a[20]


def test_synthetic_line_art_is_exactly_the_drawn_outlines():
    for index in range(6):
        color, lines = render_drawing(0, index)
        assert color.shape == (BASE_SIZE, BASE_SIZE, 3) and lines.shape == (BASE_SIZE, BASE_SIZE)
        ink = lines == 0
        assert ink.mean() > 0.003
        assert np.all(color[ink] == 0), "full-ink line pixels must be black in the color picture"
        # Anywhere the line art is paper, the picture has no outline ink at all.
        paper = lines == 255
        assert np.all(color[paper].max(axis=1) > 0)
        # Partial ink (antialiasing): the picture is darkened there as well.
        part = (lines > 0) & (lines < 128)
        assert np.all(color[part].max(axis=1) < 200)


def test_synthetic_palette_rule_and_flat_colors():
    for index in range(30):
        palette = drawing_palette(np.random.default_rng([11, index]))
        assert _luma(palette["main"]) - _luma(palette["accent"]) >= MIN_LUMA_GAP
        assert _luma(palette["background"]) - _luma(palette["main"]) >= MIN_LUMA_GAP
        assert len(set(palette.values())) == 7
    assert set(KIND_COLOR.values()) == {"main", "accent"}
    for index in range(4):
        color, _ = render_drawing(2, index)
        palette = drawing_palette(np.random.default_rng([_DRAWING_STREAM, 2, index]))
        counts = Counter(map(tuple, color.reshape(-1, 3).tolist()))
        pixels = color.shape[0] * color.shape[1]
        assert sum(n for _, n in counts.most_common(9)) / pixels > 0.9, "at most 9 flat colors"
        for rgb, n in counts.items():
            if n > 0.005 * pixels:  # every color of any extent is a palette color (the rest: antialiasing)
                assert rgb in set(palette.values()), (index, rgb)


def test_synthetic_sample_dict_and_modes():
    ds = build_dataset("synthetic", size=64, length=10)
    s = ds[2]
    assert s["color"].shape == s["sketch"].shape == (3, 64, 64)
    assert s["color"].min() >= -1 and s["color"].max() <= 1 and s["sketch"].max() == 1.0
    assert "sketch" not in build_dataset("synthetic", size=64, length=10, sketch="model")[2]
    x = build_dataset("synthetic", size=64, length=10, sketch="xdog")[2]
    torch.testing.assert_close(x["sketch"], xdog(x["color"]), rtol=0, atol=0)
    big = SyntheticDataset(length=2, size=320, augment=False)
    assert big.render_size == 320 and big[0]["color"].shape == (3, 320, 320)


def test_demo_assets_are_small_and_reproducible(tmp_path):
    sketch_path, reference_path = write_demo_assets(tmp_path)
    for name, made in (("demo_sketch.png", sketch_path), ("demo_reference.png", reference_path)):
        committed = ASSETS / name
        assert committed.stat().st_size < 100_000
        np.testing.assert_array_equal(load_image(committed), load_image(made))
        assert load_image(made).shape == (256, 256, 3)
    sketch = load_image(sketch_path)
    assert (sketch == 255).mean() > 0.8 and (sketch < 64).any()
    reference = load_image(reference_path)
    assert len(np.unique(reference.reshape(-1, 3), axis=0)) > 5


# ---- factory and collate -----------------------------------------------------------------------


def test_a_new_data_set_kind_is_one_class_and_one_registry_line(monkeypatch, tmp_path):
    from colorizer.data import DATASET_KINDS, AugmentedDataset
    from colorizer.train.config import TrainConfig

    class Flat(AugmentedDataset):
        """Gray squares with white paper as the sketch."""

        def __len__(self):
            return 4

        def _read(self, index):
            return np.full((64, 64, 3), 50 * index, np.uint8), np.full((64, 64), 255, np.uint8), 0

        @classmethod
        def build(cls, root, size, sketch, seed, length, augment, **options):
            return cls(size, sketch or "given", seed, augment)

    monkeypatch.setitem(DATASET_KINDS, "flat", Flat)
    ds = build_dataset("flat", size=32, augment=False)
    batch = collate([ds[1], ds[2]])
    assert batch["color"].shape == batch["sketch"].shape == (2, 3, 32, 32) and batch["index"].tolist() == [1, 2]
    assert TrainConfig(data="flat", out=str(tmp_path)).validate().data == "flat"  # --data accepts it
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="data: must be one of pair, folder, synthetic"):
        TrainConfig(data="flat", out=str(tmp_path)).validate()


def test_build_dataset_and_collate(pair_root):
    assert isinstance(build_dataset("pair", pair_root, size=32), PairDataset)
    folder = build_dataset("folder", pair_root, size=32, min_size=None)
    assert isinstance(folder, ColorFolderDataset) and folder.sketch == "xdog"
    assert len(build_dataset("synthetic")) > 1000
    with pytest.raises(ConfigError, match="unknown data set kind"):
        build_dataset("imagenet", pair_root)
    with pytest.raises(ConfigError, match="needs a data folder"):
        build_dataset("pair")
    ds = build_dataset("pair", pair_root, size=32)
    batch = collate([ds[0], ds[3]])
    assert batch["color"].shape == (2, 3, 32, 32) and batch["sketch"].shape == (2, 3, 32, 32)
    assert batch["index"].tolist() == [0, 3] and batch["skipped"].dtype == torch.int64
    with pytest.raises(ValueError, match="different keys"):
        collate([ds[0], {"color": ds[0]["color"], "index": 1, "skipped": 0}])


def test_find_images_follows_links_once_and_skips_hidden(tmp_path):
    from colorizer.data import find_images

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / ".cache").mkdir()
    for p in (root / "b.png", root / "sub" / "a.JPG", root / ".cache" / "x.png", root / ".hidden.png"):
        p.write_bytes(b"x")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # a cycle
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.webp").write_bytes(b"x")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    names = [p.relative_to(root).as_posix() for p in find_images(root)]
    assert names == ["b.png", "linked/c.webp", "sub/a.JPG"]
