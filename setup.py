"""Build script for colorizer.

Packages: ``colorizer`` (colorizer/), ``colorizer.kernels`` (kernels/, Triton ops) and
``colorizer.export`` (export/, ONNX / TensorRT). A top-level ``kernels`` package would clash with
an existing PyPI project, hence the package_dir mapping.

The native extension ``colorizer._C`` is built from csrc/ by ``native_extensions()`` below: the CPU
part always, the CUDA part only where nvcc and a CUDA build of torch exist. Install with
``pip install --no-build-isolation -e .`` so the already-installed CPU torch is used to build it.
"""

import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _packages():
    pkgs = ["colorizer"] + [f"colorizer.{p}" for p in find_packages("colorizer")]
    pkgs += ["colorizer.assets", "colorizer.configs"]  # data-only folders (PNG, YAML)
    pkgs += ["colorizer.kernels"] + [f"colorizer.kernels.{p}" for p in find_packages("kernels")]
    pkgs += ["colorizer.export"] + [f"colorizer.export.{p}" for p in find_packages("export")]
    return pkgs


def native_extensions():
    """Return (ext_modules, cmdclass) for csrc/, or ([], {}) when there is nothing to build."""
    csrc = os.path.join(ROOT, "csrc")
    if os.environ.get("COLORIZER_NO_NATIVE") == "1" or not os.path.isdir(csrc):
        print("colorizer setup: native extension skipped", file=sys.stderr)
        return [], {}
    sys.path.insert(0, csrc)
    try:
        from native_build import extensions  # type: ignore
    except ImportError:
        print("colorizer setup: csrc/native_build.py not present, no native extension", file=sys.stderr)
        return [], {}
    finally:
        sys.path.pop(0)
    return extensions(ROOT)


ext_modules, cmdclass = native_extensions()

setup(
    name="colorizer",
    version="0.1.0",
    description="Reference-based anime sketch colorizer: training, fused kernels, export",
    python_requires=">=3.10",
    packages=_packages(),
    package_dir={
        "colorizer": "colorizer",
        "colorizer.kernels": "kernels",
        "colorizer.export": "export",
    },
    package_data={
        "colorizer.assets": ["*.png"],
        "colorizer.configs": ["*.yaml"],
        # the bundled models: weights, model cards, training configs and logs, eval reports
        "colorizer.pretrained": ["*.safetensors", "*.md", "*.csv", "*.json", "*.yaml"],
        "colorizer.export": ["*.json", "*.txt"],
        "colorizer.serve": ["static/*.html", "static/*.js", "static/*.css"],  # the page at / of colorizer serve
    },
    include_package_data=True,
    install_requires=[
        # torch is deliberately not listed: install the CPU wheel first (see Makefile), or pip
        # resolves a multi-GB CUDA build.
        "numpy",
        "pillow",
        "pyyaml",
        "tqdm",
        "safetensors",
        "matplotlib",
        "threadpoolctl",  # colorizer.palette: one OpenMP thread per CPU palette worker, per thread
    ],
    extras_require={
        "palette": ["opencv-python-headless", "scikit-learn"],
        "export": ["onnx", "onnxruntime", "onnxscript"],
        "triton": ["triton"],
        "openvino": ["openvino", "nncf"],
        "serve": [
            "fastapi",
            "uvicorn",
            "uvloop; sys_platform != 'win32'",  # uvicorn's fast loop and parser, used when installed
            "httptools",
            "python-multipart",
            "prometheus-client",
            "swagger-ui-bundle",
        ],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={
        "console_scripts": [
            "colorizer=colorizer.cli:main",
            "colorizer-export=colorizer.export.cli:main",
        ]
    },
)
