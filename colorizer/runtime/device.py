"""Which device and which op backend: the one place that decides, for every command.

The ``"auto"`` backend policy (``resolve_backend``), the same default in ``colorize``, ``eval``,
``serve``, the demo and ``extract_palette(kernels="auto")``:

- CPU: ``native`` (the compiled C++ extension, ``colorizer._C``) when it is built, else ``eager``. The
  native CPU kernels are parity-tested against the reference and measured faster on the CPU
  (benchmarks/bench_native.py).
- CUDA: ``triton`` (the fused Triton kernels) when Triton can run, else ``eager``.

``"auto"`` as a device is CUDA when a GPU is visible (and ``CUDA_VISIBLE_DEVICES`` is not empty), else the
CPU.
"""

from __future__ import annotations

import os

import torch

from colorizer.errors import ConfigError, KernelsUnavailable, MissingDependencyError

AUTO = "auto"
# The auto policy: per device type, the backends tried in order; "eager" when none can run.
AUTO_BACKENDS: dict[str, tuple[str, ...]] = {"cuda": ("triton",), "cpu": ("native",)}


def cuda_available() -> bool:
    """A usable GPU: torch sees one and ``CUDA_VISIBLE_DEVICES`` does not hide them all."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return False
    return torch.cuda.is_available()


def default_device_name() -> str:
    """What ``"auto"`` means here: ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if cuda_available() else "cpu"


def resolve_device(name: str | torch.device | None = AUTO) -> torch.device:
    """A torch.device that can hold tensors here, or one line saying why not.

    ``name``: ``"auto"`` (or None), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or a torch.device. ConfigError for a
    bogus name or ``meta``; MissingDependencyError for CUDA on a CPU-only torch or without a GPU.
    """
    if name is None or (isinstance(name, str) and name == AUTO):
        name = default_device_name()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(
            f"device {name!r}: not a torch device (use auto, cpu, cuda or cuda:N)", option="device"
        ) from None
    if device.type == "meta":
        raise ConfigError("device meta holds no data and cannot colorize; use cpu or cuda", option="device")
    if device.type == "cuda":
        if not cuda_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise MissingDependencyError(f"device {device}: CUDA is not available ({why}); use the CPU (device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device}: there are {torch.cuda.device_count()} GPU(s) (cuda:0 ..)", option="device"
            )
    elif device.type != "cpu":
        try:
            torch.empty(1, device=device)
        except Exception as exc:  # each backend raises its own error type for a missing device
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MissingDependencyError(f"device {device}: not usable here ({first})") from None
    return device


def backend_choices() -> tuple[str, ...]:
    """``"auto"`` and every registered backend (read at call time: ``register_backend`` adds choices)."""
    from colorizer.ops import BACKENDS

    return (AUTO, *BACKENDS)


def backend_available(name: str) -> bool:
    from colorizer.ops import get_ops

    try:
        get_ops(name)
    except KernelsUnavailable:
        return False
    return True


def resolve_backend(kernels: str = AUTO, device: str | torch.device = "cpu") -> str:
    """The op backend for ``kernels`` on ``device``: ``"auto"`` by the policy above, any other name in
    ``colorizer.ops.BACKENDS`` as given (ConfigError for an unknown one; whether it runs here is checked
    when a model takes it, with one line from KernelsUnavailable)."""
    from colorizer.ops import BACKENDS

    if kernels == AUTO:
        device_type = torch.device(device).type
        return next((name for name in AUTO_BACKENDS.get(device_type, ()) if backend_available(name)), "eager")
    if kernels not in BACKENDS:
        raise ConfigError(f"kernels must be one of {', '.join(backend_choices())}, got {kernels!r}", option="kernels")
    return kernels


def add_device_options(parser) -> None:
    """Add ``--device`` and ``--kernels`` to an argparse parser: the same options, defaults and help in every
    command that runs a model (colorize, eval, serve)."""
    parser.add_argument(
        "--device", default=AUTO, help="torch device: auto (cuda when a GPU is visible, else cpu), cpu, cuda, cuda:1"
    )
    parser.add_argument(
        "--kernels",
        default=AUTO,
        choices=backend_choices(),
        help="op backend of a torch model (default auto: native on the CPU when built, triton on CUDA, else "
        "eager; colorizer.runtime.device); an exported engine runs on its own runtime",
    )
