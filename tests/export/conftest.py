"""Shared fixtures for the export tests: one small generator, its checkpoint, and one export per
noise mode (module-scoped work is cached per session so the suite stays within its time budget)."""

import os

import pytest
import torch

from colorizer.models import NoiseInjection, Sketch2Color

SMALL = (64, 64, 64, 64)
# Parity cases for tests: two sizes, two batch sizes, still cheap at this width.
TEST_CASES = ((1, 128, 256), (2, 128, 128))


def small_generator(seed: int = 0) -> Sketch2Color:
    """A small Sketch2Color with non-zero noise weights (the init's zeros would hide noise bugs)."""
    torch.manual_seed(seed)
    model = Sketch2Color(channels=SMALL)
    for module in model.modules():
        if isinstance(module, NoiseInjection):
            module.weight.data.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="session")
def generator():
    return small_generator()


@pytest.fixture(scope="session")
def checkpoint(generator, tmp_path_factory):
    """The generator saved in the public reference's format {'netG': state_dict}."""
    path = tmp_path_factory.mktemp("ckpt") / "G.pth"
    torch.save({"netG": generator.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="session")
def exported(generator, tmp_path_factory):
    """noise mode -> OnnxExport of the small generator (parity-gated on TEST_CASES)."""
    from colorizer.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(noise: str):
        if noise not in cache:
            path = os.path.join(folder, f"g_{noise}.onnx")
            cache[noise] = export_onnx(generator, path, noise=noise, source_sha256="ab" * 32, cases=TEST_CASES)
        return cache[noise]

    return get


def reuse_traced_graph(monkeypatch, source_path: str) -> None:
    """Make export_onnx copy an already traced graph instead of tracing again (saves test time).

    Everything after the trace (metadata, ONNX checks, the parity gate against the model given to
    export_onnx, the atomic rename) still runs.
    """
    import shutil

    import onnx

    from colorizer.export import onnx_export

    def copy_graph(model, path, noise, opset, *args, **kwargs):
        proto = onnx.load(source_path)
        assert onnx_export.read_metadata(proto)["noise_mode"] == noise
        shutil.copyfile(source_path, path)

    monkeypatch.setattr(onnx_export, "trace_to_onnx", copy_graph)


def assert_as_close_as_eager(out: torch.Tensor, model, x: torch.Tensor, noise) -> None:
    """The parity rule of the gates: out's relative L2 error against the float64 model is at most
    2x eager fp32's own. x: the generator input (N, 30, H, W); noise: the eager ``noise`` argument."""
    from colorizer.export.verify import allowed_error, reference_models
    from colorizer.testing import relative_l2

    m64, m32 = reference_models(model)
    with torch.no_grad():
        n64 = noise if isinstance(noise, str) else [m.double() for m in noise]
        oracle = m64(x.double(), noise=n64)
        eager = m32(x.float(), noise=noise)
    err, ref = relative_l2(out, oracle), relative_l2(eager, oracle)
    assert err <= allowed_error(ref), f"error {err:.3e} vs eager fp32 {ref:.3e} (allowed {allowed_error(ref):.3e})"
