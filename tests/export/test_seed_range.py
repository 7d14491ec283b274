"""One seed range everywhere, 0 <= seed < 2**31, and distinct seeds give distinct noise (issue 12, item 6)."""

import importlib

import pytest
import torch

from colorizer.errors import ConfigError
from colorizer.export.seeded_noise import MAX_SEED, seeded_noise
from colorizer.limits import MAX_SEED as PROJECT_MAX_SEED
from colorizer.limits import check_seed

noise_module = importlib.import_module("colorizer.export.seeded_noise")


def _key_codes(seeds: torch.Tensor) -> torch.Tensor:
    keys = torch.cat(noise_module._sample_keys(seeds.to(torch.int32)), dim=1).to(torch.int64)
    code = torch.zeros(len(seeds), dtype=torch.int64)
    for j in range(keys.shape[1]):  # six 15-bit keys do not fit one int64; three determine the seed
        if j < 3:
            code = code * 32768 + keys[:, j]
    return code


def test_the_range_is_the_int32_one():
    assert MAX_SEED == PROJECT_MAX_SEED == 2**31 - 1
    assert check_seed(0) == 0 and check_seed(MAX_SEED) == MAX_SEED
    for bad in (-1, MAX_SEED + 1, 2**32, 2**64, 10**30, 1.5, "3", True):
        with pytest.raises(ConfigError):
            check_seed(bad)


@pytest.mark.parametrize("offset", [0, 2**30, 2**31 - 2**20])
def test_a_million_consecutive_seeds_get_distinct_keys(offset):
    seeds = torch.arange(offset, offset + 2**20, dtype=torch.int64)
    assert torch.unique(_key_codes(seeds)).numel() == seeds.numel()


def test_seeds_that_shared_noise_in_version_1_differ():
    # v1: seed s and s + 2**30 could share keys (the top bit was folded into one half), and the
    # key mix sent (kl, kr) and (kl + 2**14, kr + 2**14) to the same keys. Seed 354 had a twin below 2**22.
    seeds = torch.arange(0, 2**22, dtype=torch.int64)
    codes = _key_codes(seeds)
    assert torch.unique(codes).numel() == seeds.numel()
    pairs = [(5, 5 + 2**30), (354, 354 + 2**30), (0, MAX_SEED), (MAX_SEED - 1, MAX_SEED)]
    for a, b in pairs:
        na, nb = seeded_noise(torch.tensor([a, b]), 128, 128)[-1]
        assert not torch.equal(na, nb), (a, b)


def test_engine_runner_refuses_seeds_out_of_range_and_never_wraps():
    from colorizer.export.runtime import EngineRunner

    runner = EngineRunner()
    assert runner.seeds(2, MAX_SEED).tolist() == [MAX_SEED, 0]  # image i gets seed + i (mod 2**31)
    for bad in (-1, MAX_SEED + 1, 2**32, 2**70):
        with pytest.raises(ConfigError, match="2147483647"):
            runner.seeds(1, bad)


def test_colorizer_refuses_seeds_out_of_range():
    import numpy as np

    from colorizer.inference import Colorizer

    calls = []
    colorizer = Colorizer(lambda x, seed: calls.append(seed) or x[:, :3])
    sketch = np.full((128, 128, 3), 255, np.uint8)
    palette = torch.zeros(9, 3, dtype=torch.uint8)
    colorizer.colorize(sketch, palette, seed=MAX_SEED)
    assert calls == [MAX_SEED]
    for bad in (-1, 2**31, 2**32, 2**64):
        with pytest.raises(ConfigError):
            colorizer.colorize(sketch, palette, seed=bad)
    assert calls == [MAX_SEED]


def test_checkpoint_path_seeds_in_range_give_distinct_noise():
    from colorizer.models.generator import make_noise

    a = make_noise(0, 1, 128, 128, "cpu", torch.float32)
    b = make_noise(2**31 - 1, 1, 128, 128, "cpu", torch.float32)
    assert not torch.equal(a[-1], b[-1])
