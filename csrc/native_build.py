"""Build description of the native extension ``colorizer._C`` (called by setup.py).

``extensions(root)`` returns ``(ext_modules, cmdclass)``:

- the CPU extension always (``CppExtension``: csrc/ops.cpp + csrc/cpu/*.cpp, ``-O3``, OpenMP for
  ``at::parallel_for``, ``at::vec`` at the widest instruction set this build machine has, AVX2+FMA
  on x86-64 when available);
- the CUDA variant (``CUDAExtension``, adding csrc/cuda/*.cu) only where nvcc exists AND torch is a
  CUDA build;
- ``([], {})`` when torch is not importable (nothing can be built).

It prints to stderr what it builds and why. Environment:

- ``COLORIZER_NATIVE_ARCH=generic`` builds portable code (no -mavx2), e.g. for a wheel that must run on
  older CPUs; ``avx2`` forces AVX2+FMA; default ``auto`` reads /proc/cpuinfo.
- ``COLORIZER_NATIVE_CUDA=0`` skips the CUDA variant even where it could be built.
- ``MAX_JOBS`` (torch's own) bounds parallel compilation when ninja is installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys


def _log(message: str) -> None:
    print(f"colorizer setup: {message}", file=sys.stderr)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _vector_flags() -> tuple[list[str], str]:
    """Compiler flags selecting at::vec's implementation, and its name for the log.

    at::vec picks its SIMD code at compile time from CPU_CAPABILITY_* macros; torch itself builds
    each kernel several times and dispatches at run time. One extra copy is enough here: the
    extension is built on the machine that runs it (pip install -e / make), so AVX2 is used when
    this machine has it and the portable default otherwise.
    """
    import platform

    arch = os.environ.get("COLORIZER_NATIVE_ARCH", "auto").lower()
    if arch not in ("auto", "generic", "avx2"):
        _log(f"unknown COLORIZER_NATIVE_ARCH={arch!r} (auto, generic or avx2); using generic")
        arch = "generic"
    machine = platform.machine().lower()
    if arch == "auto":
        flags = _cpu_flags()
        arch = "avx2" if machine in ("x86_64", "amd64") and {"avx2", "fma", "f16c"} <= flags else "generic"
    if arch == "avx2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"], "avx2"
    return [], "default"


def _nvcc_version(nvcc: str) -> str | None:
    """'13.0' from ``nvcc --version`` ("release 13.0, V13.0.88"), or None if it cannot be read."""
    import re
    import subprocess

    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def extensions(root: str):
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as exc:
        _log(f"native extension skipped: torch is not importable ({exc}); install torch first")
        return [], {}

    csrc = os.path.join(root, "csrc")
    cpu_sources = [os.path.join(csrc, "ops.cpp")] + sorted(glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
    vec_flags, capability = _vector_flags()
    # -Wno-unknown-pragmas: torch's vec headers carry "#pragma unroll", which gcc does not know.
    # -ffp-contract=off: scalar code rounds like torch (no implicit FMA), so K-means distances and
    # their ties match colorizer.palette.assign_accumulate bit for bit.
    # -g0: no debug info (Python's CFLAGS add -g), which roughly halves the compile time.
    cxx = [
        "-O3",
        "-g0",
        "-fopenmp",
        "-ffp-contract=off",
        "-Wno-unknown-pragmas",
        *vec_flags,
        f'-DCOLORIZER_CPU_CAPABILITY="{capability}"',
    ]
    # Relative paths keep the build output under build/ and the compile commands short.
    rel = [os.path.relpath(p, root) for p in cpu_sources]

    nvcc = shutil.which("nvcc") or (os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None)
    has_nvcc = bool(nvcc) and os.path.exists(nvcc)
    cuda_torch = torch.version.cuda is not None
    want_cuda = os.environ.get("COLORIZER_NATIVE_CUDA", "1") != "0"
    # torch refuses to build with an nvcc whose major version differs from its own CUDA's; that
    # would fail the whole install, so such a machine gets the CPU extension only.
    nvcc_version = _nvcc_version(nvcc) if has_nvcc and cuda_torch else None
    same_major = nvcc_version is not None and nvcc_version.split(".")[0] == str(torch.version.cuda).split(".")[0]
    if want_cuda and has_nvcc and cuda_torch and same_major and cuda_sources:
        ext = CUDAExtension(
            "colorizer._C",
            rel + [os.path.relpath(p, root) for p in cuda_sources],
            extra_compile_args={
                "cxx": [*cxx, "-DCOLORIZER_WITH_CUDA"],
                "nvcc": ["-O3", "-DCOLORIZER_WITH_CUDA", "--expt-relaxed-constexpr"],
            },
            extra_link_args=["-fopenmp"],
        )
        _log(f"building colorizer._C for CPU ({capability} vectors, OpenMP) and CUDA {torch.version.cuda} ({nvcc})")
    else:
        if not want_cuda:
            why = "COLORIZER_NATIVE_CUDA=0"
        elif not cuda_torch:
            why = f"torch {torch.__version__} is a CPU build"
        elif not has_nvcc:
            why = "nvcc not found"
        elif not same_major:
            why = f"nvcc {nvcc_version} does not match torch's CUDA {torch.version.cuda}"
        else:
            why = "no csrc/cuda sources"
        ext = CppExtension(
            "colorizer._C",
            rel,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
        _log(f"building colorizer._C for CPU only ({capability} vectors, OpenMP); CUDA skipped: {why}")
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}
