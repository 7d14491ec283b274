"""colorizer.runtime.allocator: after tune_malloc, repeated forward passes reuse their freed activations
instead of faulting fresh pages in (in the main thread and in another thread); with glibc's defaults they
fault. Each case runs in a fresh interpreter: malloc settings are per process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

# Page faults of five forward passes of a small conv net at 256 px (8 MiB activations) after three
# warm-up passes, run first in a new thread (its own arena unless M_ARENA_MAX is 1), then in the main thread.
PROGRAM = """
import json, resource, sys, threading
import torch
from colorizer.runtime.allocator import tune_malloc
applied = tune_malloc() if sys.argv[1] == "tuned" else {}
torch.set_num_threads(1)
torch.manual_seed(0)
conv = torch.nn.Conv2d
net = torch.nn.Sequential(conv(3, 32, 3, padding=1), torch.nn.ReLU(), conv(32, 32, 3, padding=1), conv(32, 3, 1)).eval()
x = torch.randn(1, 3, 256, 256)

def faults():
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            net(x)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

box = {}
thread = threading.Thread(target=lambda: box.update(faults=faults()))
thread.start(); thread.join()
print(json.dumps({"applied": applied, "thread": box["faults"], "main": faults()}))
"""


def run(mode: str, **env) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=120, env={**environment, **env}
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_a_freed_block_is_reused_without_faults_after_tune_malloc():
    from colorizer.runtime.allocator import SETTINGS

    tuned, plain = run("tuned"), run("plain")
    assert tuned["applied"] == SETTINGS
    # Measured in 36 runs: tuned, 0 pages in the main thread and 0-4,096 in the other (now and then one or
    # two of the 8 MiB activations, 2,048 pages each, fault in again there); plain, 24,000-51,000 in both.
    assert tuned["main"] < 100 and tuned["thread"] < 10_000, tuned
    assert plain["main"] > 20_000 and plain["thread"] > 20_000, plain


def test_the_users_own_malloc_environment_wins():
    result = run("tuned", GLIBC_TUNABLES="glibc.malloc.trim_threshold=0")
    assert result["applied"] == {}
    assert run("tuned", MALLOC_TRIM_THRESHOLD_="0")["applied"] == {}


def test_the_colorizer_command_tunes_its_process(monkeypatch):
    from colorizer.runtime import allocator

    calls = []
    monkeypatch.setattr(allocator, "tune_malloc", lambda: calls.append(1) or {})
    from colorizer.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert calls == [1]
