"""What a benchmark result was measured on: device, driver, versions, git revision, threads, date.

``collect_environment(device)`` returns a JSON-ready dict that the report stores next to every result;
``device_slug(env)`` names the results folder (``nvidia-h100-80gb-hbm3``, ``cpu-intel-xeon-processor``).
Nothing here needs a GPU or a network; missing tools give ``None`` fields, not errors.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

# Distributions whose versions change benchmark numbers. Missing ones are recorded as None.
PACKAGES = (
    "torch",
    "triton",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "opencv-python-headless",
    "opencv-python",
    "tensorrt",
    "scikit-learn",
    "colorizer",
)


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 10.0) -> str | None:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path = REPO_ROOT) -> dict:
    """Revision of the checkout, and whether tracked files differ from it (``dirty``).

    Untracked files are counted separately: in a shared working tree they are often someone else's
    work in progress, which does not change what the measured code was.
    """
    revision = _run(["git", "rev-parse", "HEAD"], cwd=root)
    modified = _run(["git", "diff", "--name-only", "HEAD"], cwd=root)
    untracked = _run(["git", "ls-files", "--others", "--exclude-standard"], cwd=root)
    return {
        "revision": revision,
        "dirty": None if modified is None else bool(modified),
        "modified_files": modified.splitlines() if modified else [],
        "untracked_files": None if untracked is None else len(untracked.splitlines()),
    }


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The instruction-set flags that decide CPU matmul speed (AVX-512, bf16, AMX)."""
    wanted = {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "avx512_vnni"}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(wanted & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def fast_bf16() -> dict:
    """{"torch": ..., "openvino": ...}: whether each runs bf16 natively on this CPU (None: not installed).
    torch's answer is ``colorizer.hardware.cpu_has_fast_bf16``, OpenVINO's its CPU plugin's
    capabilities (they can differ: ONEDNN_MAX_CPU_ISA limits torch's oneDNN, not OpenVINO's)."""
    from colorizer.hardware import cpu_has_fast_bf16

    out = {"torch": cpu_has_fast_bf16(), "openvino": None}
    try:
        from colorizer.export.openvino import openvino_has_bf16, openvino_missing

        if openvino_missing() is None:
            out["openvino"] = openvino_has_bf16()
    except Exception:  # a broken OpenVINO install must not stop a benchmark of something else
        pass
    return out


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_info(device: torch.device) -> dict:
    props = torch.cuda.get_device_properties(device)
    driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"--id={device.index or 0}"])
    return {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "driver": driver,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }


def collect_environment(device: str | torch.device = "cpu") -> dict:
    """Everything needed to reproduce or compare a result, as a JSON-ready dict."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    env = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device_type": device.type,
        "device_name": None,
        "gpu": None,
        "cpu": {
            "model": cpu_model(),
            "usable_cpus": usable_cpus(),
            "flags": cpu_flags(),
            "torch_capability": torch.backends.cpu.get_cpu_capability(),
            # Whether bf16 runs natively (else torch's slow path, OpenVINO's f32): decides every bf16 row.
            "fast_bf16": fast_bf16(),
            # The machine may be shared: the load when the run started says how quiet it was.
            "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "threads": {
            "torch_intra_op": torch.get_num_threads(),
            "torch_inter_op": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
        },
        "platform": platform.platform(),
        "versions": package_versions(),
        "git": git_state(),
        "env": {
            k: os.environ[k]
            for k in ("TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
            if k in os.environ
        },
    }
    if device.type == "cuda":
        env["gpu"] = gpu_info(device)
        env["device_name"] = env["gpu"]["name"]
    else:
        env["device_name"] = env["cpu"]["model"]
    return env


def slugify(text: str, max_len: int = 48) -> str:
    """Lower-case, ASCII letters/digits and single dashes: safe as a folder name."""
    text = re.sub(r"\((r|tm)\)", "", text.lower())
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text[:max_len].rstrip("-") or "unknown"


def device_slug(env: dict) -> str:
    """Folder name of a device: ``nvidia-h100-80gb-hbm3`` or ``cpu-<model>-<n>c`` (n usable cores)."""
    if env["device_type"] == "cuda":
        return slugify(env["device_name"])
    return f"cpu-{slugify(env['cpu']['model'], 36)}-{env['cpu']['usable_cpus']}c"


def _fast_bf16_text(fast: dict | None) -> str:
    if not fast:
        return "not recorded"
    return ", ".join(f"{k} {'yes' if v else 'no' if v is not None else 'n/a'}" for k, v in fast.items())


def format_environment(env: dict) -> list[str]:
    """Markdown bullet lines summarising ``env`` for the report."""
    versions = env["versions"]
    shown = ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None)
    git = env["git"]
    if git["dirty"] is None:
        dirty = "unknown"
    else:
        dirty = "yes: " + ", ".join(git["modified_files"]) if git["dirty"] else "no"
    lines = [f"- date (UTC): {env['date_utc']}", f"- device: {env['device_name']} ({env['device_type']})"]
    if env["gpu"]:
        gpu = env["gpu"]
        lines.append(
            f"- GPU: compute capability {gpu['capability']}, {gpu['memory_gib']} GiB, driver {gpu['driver']}, "
            f"CUDA runtime {gpu['cuda_runtime']}, cuDNN {gpu['cudnn']}, TF32 matmul {gpu['tf32_matmul']} / "
            f"cuDNN {gpu['tf32_cudnn']}"
        )
    cpu = env["cpu"]
    load = cpu["load_average_1_5_15"]
    lines += [
        f"- CPU: {cpu['model']}, {cpu['usable_cpus']} usable cores, flags {' '.join(cpu['flags']) or 'n/a'}, "
        f"torch CPU capability {cpu['torch_capability']}, fast bf16 {_fast_bf16_text(cpu.get('fast_bf16'))}"
        + (f", load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}" if load else "")
        + (f", at end {cpu['load_average_end'][0]:.2f}" if cpu.get("load_average_end") else ""),
        f"- threads: torch intra-op {env['threads']['torch_intra_op']}, inter-op {env['threads']['torch_inter_op']}",
        f"- versions: {shown}",
        f"- git: {git['revision'] or 'unknown'} (tracked changes: {dirty}; untracked files: {git['untracked_files']})",
        f"- platform: {env['platform']}",
    ]
    return lines
