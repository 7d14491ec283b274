import os

import torch

# Triton kernels run in interpreter mode on CPU tensors when there is no GPU. This must be set
# before triton is first imported anywhere in the test process.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Under pytest-xdist (make test runs two workers on CI's two cores) each worker gets one thread, so
# the workers do not fight over the cores; a plain run uses both.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


# The files that take longest (summed test time of a make test run on 2 CPU cores, 2026-12-07:
# 156, 125, 80, 42, 35, 33, 27 and 27 s; every other file takes under 22 s), run first. Under
# `--dist loadfile --no-loadscope-reorder` (make test) the workers take files in this order, so a long
# file is not left for last while the other worker idles (longest-processing-time-first). Only the
# order changes: a file missing here, or a stale entry, costs speed, never a test.
HEAVY_FILES_FIRST = (
    "tests/test_reliability.py",
    "tests/export/test_openvino.py",
    "tests/test_inference.py",
    "tests/test_gpu_check.py",
    "tests/test_resume.py",
    "tests/export/test_no_data_loss.py",
    "tests/test_benchmarks.py",
    "tests/export/test_onnx_export.py",
    "tests/serve/test_api.py",
    "tests/export/test_openvino_bench.py",
    "tests/test_ddp.py",
    "tests/export/test_formats.py",
    "tests/serve/test_server.py",
    "tests/serve/test_browser.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
