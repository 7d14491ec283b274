"""OpenVINO's CPU plugin and the thread's alternate signal stack (``colorizer.export.openvino.shared_core``).

Each CPU plugin instance gives the thread that creates it a signal stack of its own (``sigaltstack``)
and unmaps it when destroyed, restoring the previous one only if its own is still current. Two
plugin instances released in creation order (two runners, each with its own Core) left the thread's
signal stack unmapped, and the next Python signal handler on that thread crashed the process with
SIGSEGV: a Ctrl-C, a SIGTERM to the trainer, or the SIGCHLD handler of a DataLoader with workers. In
the test suite it killed the pytest-xdist worker that ran a trainer test after the OpenVINO benchmark
test (OpenVINO 2026.4.1). The runners now share the process's one Core.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import openvino as ov
    import openvino.opset13 as ops
    from colorizer.export import openvino as xo

    folder = sys.argv[1]
    # The smallest IR with the colorizer interface (zero-noise mode): image = relu(sketch).
    sketch = ops.parameter([1, 3, 8, 8], ov.Type.f32, name="sketch")
    palette = ops.parameter([1, 9, 3], ov.Type.f32, name="palette")
    image = ops.relu(sketch)
    image.output(0).get_tensor().set_names({"image"})
    model = ov.Model([image], [sketch, palette])
    meta = {"format": xo.FORMAT_NAME, "noise_mode": "zero", "precision": "fp32", "inference_precision": "f32"}
    for key, value in meta.items():
        model.set_rt_info(value, ["colorizer", key])
    ov.save_model(model, os.path.join(folder, xo.XML_NAME))

    signal.signal(signal.SIGUSR1, lambda *a: print("handler ran", flush=True))
    first = xo.OpenVinoRunner(folder)
    second = xo.OpenVinoRunner(folder)
    del first  # released in creation order: the order that left the signal stack unmapped
    del second
    os.kill(os.getpid(), signal.SIGUSR1)  # a Python signal handler on the main thread
    print("alive", flush=True)
    """
)


def test_python_signal_handlers_survive_runners_released_in_creation_order(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-2000:]}"
    assert result.stdout.split() == ["handler", "ran", "alive"], result.stdout
