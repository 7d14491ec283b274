"""Fixtures of the service tests: a tiny colorizer checkpoint, its runner, pictures as PNG bytes, an app."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'colorizer[serve]')")
httpx = pytest.importorskip("httpx", reason="the serve tests' client (requirements-dev.txt) is not installed")

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


class Server:
    def __init__(self, model, *args, env=None):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
        env.pop("COLORIZER_API_KEY", None)
        cmd = [sys.executable, "-m", "colorizer.cli", "serve", str(model), "--port", "0", "--warmup-size", "128", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        self.lines: list[str] = []
        self.url = None
        found = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.lines.append(line)
                match = re.search(r"listening on (http://\S+/)", line)
                if match:
                    self.url = match.group(1).rstrip("/")
                    found.set()
            found.set()

        threading.Thread(target=pump, daemon=True).start()
        assert found.wait(60) and self.url, "".join(self.lines)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "".join(self.lines)
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("not ready: " + "".join(self.lines))

    def metric(self, name: str) -> float:
        text = self.client.get("/metrics").text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert match, name
        return float(match.group(1))

    def close(self):
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def serve(tiny_checkpoint):
    """serve(*options, model=tiny, env=None) -> a running `colorizer serve` process (killed after the test)."""
    servers = []

    def start(*args, model=None, env=None):
        server = Server(model or tiny_checkpoint, *args, env=env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
