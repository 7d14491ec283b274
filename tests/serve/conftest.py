"""Fixtures of the service tests: a tiny colorizer checkpoint, its runner, pictures as PNG bytes, an app."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'colorizer[serve]')")

SMALL = (64, 64, 64, 64)  # a 4-level generator: milliseconds per 128 px picture


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from colorizer.checkpoint import save_generator
    from colorizer.models import NoiseInjection, Sketch2Color

    torch.manual_seed(0)
    g = Sketch2Color(channels=SMALL)
    for m in g.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(0.3)  # make the seed matter
    path = tmp_path_factory.mktemp("serve_model") / "tiny.safetensors"
    save_generator(str(path), g)
    return path


@pytest.fixture(scope="session")
def runner(tiny_checkpoint):
    from colorizer.runtime.load import load_runner

    return load_runner(str(tiny_checkpoint), device="cpu", kernels="eager")


def png_bytes(height=150, width=200, seed=0, gray=False, fmt="PNG") -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    if gray:
        img = img.convert("L")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def wait_ready(client, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("the service did not become ready")


@pytest.fixture
def make_client(runner):
    """make_client(settings=None, runner=None) -> a TestClient whose app is warmed up (closed after the test)."""
    from fastapi.testclient import TestClient

    from colorizer.serve.app import create_app
    from colorizer.serve.settings import ServeSettings

    opened = []

    def make(settings=None, model=None, ready=True, **kwargs):
        settings = settings or ServeSettings(warmup_size=128, **kwargs)
        client = TestClient(create_app(model or runner, settings), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        if ready:
            wait_ready(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
