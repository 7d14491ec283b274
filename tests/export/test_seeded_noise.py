import math

import numpy as np
import pytest
import torch

from colorizer.export.seeded_noise import seeded_noise
from colorizer.limits import MAX_SEED
from colorizer.limits import check_seed_tensor as check_seed
from colorizer.models import noise_shapes


def test_shapes_dtype_and_determinism():
    seeds = torch.tensor([0, 7, MAX_SEED], dtype=torch.int32)
    maps = seeded_noise(seeds, 128, 256)
    assert [tuple(m.shape) for m in maps] == noise_shapes(3, 128, 256)
    assert all(m.dtype == torch.float32 for m in maps)
    again = seeded_noise(seeds, 128, 256)
    assert all(torch.equal(a, b) for a, b in zip(maps, again))


def test_each_sample_depends_only_on_its_own_seed():
    # Triton batches requests together: a sample's noise must not depend on its batch neighbours.
    alone = seeded_noise(torch.tensor([42]), 128, 128)
    batched = seeded_noise(torch.tensor([3, 42, 9]), 128, 128)
    for a, b in zip(alone, batched):
        assert torch.equal(a[0], b[1])


def test_standard_normal_statistics():
    z = torch.cat([m.reshape(2, -1) for m in seeded_noise(torch.tensor([1, 2**30 + 5]), 256, 256)], dim=1)
    n = z.shape[1]
    assert z.mean(1).abs().max() < 5 / math.sqrt(n)
    assert (z.std(1) - 1).abs().max() < 0.02
    # Kolmogorov-Smirnov distance to N(0, 1), well under the 0.1% critical value 1.95 / sqrt(n).
    x = np.sort(z[0].double().numpy())
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    ks = np.max(np.maximum(np.arange(1, n + 1) / n - cdf, cdf - np.arange(n) / n))
    assert ks < 1.95 / math.sqrt(n)


def test_no_correlation_between_seeds_or_neighbours():
    maps = seeded_noise(torch.tensor([5, 6]), 256, 256)
    big = maps[-1][:, 0]  # (2, 256, 256)
    bound = 5 / math.sqrt(big[0].numel())

    def corr(a, b):
        return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].abs().item()

    assert corr(big[0], big[1]) < bound  # adjacent seeds
    assert corr(big[0, :, :-1], big[0, :, 1:]) < bound  # horizontal neighbours
    assert corr(big[0, :-1], big[0, 1:]) < bound  # vertical neighbours
    assert corr(maps[-2][0, 0], big[0, ::2, ::2]) < 2 * 5 / math.sqrt(128 * 128)  # across maps


@pytest.mark.parametrize("bad", [torch.tensor([-1]), torch.tensor([2**31]), torch.tensor([[1]]), torch.tensor([0.5])])
def test_check_seed_rejects(bad):
    with pytest.raises(ValueError):
        check_seed(bad)


def test_noise_in_onnx_graph_matches_pytorch(tmp_path):
    """The in-graph noise is the same function: integer stages exact, Box-Muller to float32 rounding."""
    import onnxruntime as ort

    class Noise(torch.nn.Module):
        def forward(self, sketch, seed):
            return tuple(seeded_noise(seed, sketch.shape[2], sketch.shape[3]))

    path = str(tmp_path / "noise.onnx")
    names = [f"n{i}" for i in range(8)]
    axes = {"sketch": {0: "b", 2: "h", 3: "w"}, "seed": {0: "b"}} | {n: {0: "b", 2: f"h{n}", 3: f"w{n}"} for n in names}
    with pytest.warns(Warning) if False else _quiet():
        torch.onnx.export(
            Noise(),
            (torch.zeros(1, 3, 128, 128), torch.tensor([1], dtype=torch.int32)),
            path,
            dynamo=False,
            opset_version=18,
            input_names=["sketch", "seed"],
            output_names=names,
            dynamic_axes=axes,
        )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    seeds = np.array([0, 123456789, MAX_SEED], dtype=np.int32)
    outs = session.run(None, {"sketch": np.zeros((3, 3, 256, 384), np.float32), "seed": seeds})
    expected = seeded_noise(torch.from_numpy(seeds), 256, 384)
    for got, want in zip(outs, expected):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=2e-5, atol=2e-5)


def _quiet():
    import warnings

    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")

    class _Exit:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            ctx.__exit__(*exc)

    return _Exit()
