"""Generator inference: every provider on the same inputs.

Providers (``PROVIDERS``), each building a callable that colorizes one batch:
- ``eager``: ``Sketch2Color()`` as the reference runs it (weight standardization on every forward).
- ``eager-folded``: the same weights with the standardization folded into constants
  (``colorizer.models.fold_weight_standardization``).
- ``compile``: ``torch.compile`` of the folded model (static shapes; channels_last on a GPU; with
  ``cuda_graph`` it uses ``mode="reduce-overhead"``, Inductor's CUDA graphs).
- ``triton``: the folded model on ``kernels="triton"`` (CUDA only: on the CPU Triton runs only in its
  interpreter, a correctness tool), as ``colorizer.runtime.runner.ModuleRunner`` builds it.
- ``native``: the folded model on ``kernels="native"`` when the ``colorizer.native`` extension loads, as
  ModuleRunner builds it (channels_last), the model ``colorizer colorize`` / ``eval`` / ``serve`` run.
- ``onnxruntime``: our exporter (``colorizer.export.export_onnx``) and onnxruntime, same thread count.
- ``onnxruntime-plain``: a plain legacy ``torch.onnx.export`` (opset 18) of the folded model, the
  baseline the export issue measured against.
- ``tensorrt``: our TensorRT engine (``colorizer.export.build_engine``), where TensorRT and a GPU exist.

Every provider gets the same input (N, 30, S, S) uniform in [-1, 1] and the same eight noise maps
(passed explicitly, so no provider pays for drawing noise), weights and activations in the case's
dtype. ``prepare`` raises ``Skip`` with a one-line reason when a provider cannot run here.

The pytest-benchmark tests at the bottom run with ``pytest benchmarks/ --benchmark-only``; options
(``--bench-size`` etc.) are in ``benchmarks/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
import torch

from benchmarks.ceilings import DTYPES_BY_NAME
from benchmarks.timing import synchronized

REFERENCE_WIDTH = (64, 128, 256, 512)
# Size traced for the dynamic-shape ONNX export (any multiple of 128 works; small is fast).
SIZE_FOR_TRACE = 128
PROVIDERS = (
    "eager",
    "eager-folded",
    "compile",
    "triton",
    "native",
    "onnxruntime",
    "onnxruntime-plain",
    "tensorrt",
)
DESCRIPTIONS = {
    "eager": "PyTorch eager, weight standardization on every forward (the reference's way)",
    "eager-folded": "PyTorch eager, weight standardization folded into constant weights",
    "compile": "torch.compile (Inductor) of the folded model",
    "triton": "folded model on the Triton fused kernels",
    "native": "folded model on the native C++/CUDA extension",
    "onnxruntime": "colorizer.export ONNX graph on onnxruntime",
    "onnxruntime-plain": "plain torch.onnx.export (legacy, opset 18) on onnxruntime",
    "tensorrt": "colorizer.export TensorRT engine",
}


class Skip(Exception):
    """A provider that cannot run here; the message is the one-line reason."""


@dataclass(frozen=True)
class InferenceCase:
    """One measured configuration: generator widths, batch N, square size S (pixels), dtype name."""

    channels: tuple[int, ...] = REFERENCE_WIDTH
    batch: int = 1
    size: int = 256
    dtype: str = "float32"
    device: str = "cpu"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES_BY_NAME[self.dtype]


@dataclass
class Prepared:
    """A ready-to-time provider. run(): one batch, finished when it returns on the CPU (the timer
    handles CUDA). output(): the (N, 3, S, S) result as a float32 CPU tensor, for the parity check."""

    run: Callable[[], object]
    output: Callable[[], torch.Tensor]
    runs_on: str
    note: str = ""
    cuda_graph_capturable: bool = False
    extra: dict = field(default_factory=dict)


def input_parts(case: InferenceCase, seed: int = 0) -> dict[str, torch.Tensor]:
    """The parts of a realistic generator input, float32 on the CPU, in [-1, 1]:
    ``sketch`` (N, 3, S, S), one gray image repeated; ``colors`` (N, 9, 3), the palette;
    ``planes`` (N, 27, S, S), each color broadcast to a plane; ``noise``: the 8 maps N(0, 1)."""
    from colorizer.models import noise_shapes

    gen = torch.Generator(device="cpu").manual_seed(seed)
    n, s = case.batch, case.size
    gray = torch.rand(n, 1, s, s, generator=gen) * 2 - 1
    colors = torch.rand(n, 9, 3, generator=gen) * 2 - 1
    return {
        "sketch": gray.expand(n, 3, s, s).contiguous(),
        "colors": colors,
        "planes": colors.reshape(n, 27, 1, 1).expand(n, 27, s, s).contiguous(),
        "noise": [torch.randn(shape, generator=gen) for shape in noise_shapes(n, s, s)],
    }


def make_inputs(case: InferenceCase, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Generator input x = cat(sketch, palette planes) (N, 30, S, S) and the 8 noise maps, on the
    case's device and dtype (see ``input_parts``)."""
    parts = input_parts(case, seed)
    to = dict(device=case.device, dtype=case.torch_dtype)
    x = torch.cat((parts["sketch"], parts["planes"]), dim=1)
    return x.to(**to), [n.to(**to) for n in parts["noise"]]


def make_model(case: InferenceCase, kernels: str = "eager", seed: int = 0) -> torch.nn.Module:
    """Sketch2Color with the reference initialisation, identical weights for a given seed."""
    from colorizer.models import Sketch2Color

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sketch2Color(channels=case.channels, kernels=kernels)
    return model.eval().to(device=case.device, dtype=case.torch_dtype)


def _folded(case: InferenceCase, kernels: str = "eager") -> torch.nn.Module:
    from colorizer.models import fold_weight_standardization

    return fold_weight_standardization(make_model(case, kernels))


def _torch_provider(model: torch.nn.Module, case: InferenceCase, note: str = "", capturable=True) -> Prepared:
    x, noise = make_inputs(case)
    if case.device.startswith("cuda") and getattr(model, "_bench_channels_last", False):
        x = x.contiguous(memory_format=torch.channels_last)
    box = {}

    def run():
        with torch.inference_mode():
            box["y"] = model(x, noise=noise)

    def output():
        run()
        return box["y"].float().cpu()

    return Prepared(run=run, output=output, runs_on=case.device, note=note, cuda_graph_capturable=capturable)


def _eager(case: InferenceCase, cuda_graph: bool) -> Prepared:
    return _torch_provider(make_model(case), case)


def _eager_folded(case: InferenceCase, cuda_graph: bool) -> Prepared:
    return _torch_provider(_folded(case), case)


def _compile(case: InferenceCase, cuda_graph: bool) -> Prepared:
    if not case.device.startswith("cuda") and not (shutil.which("c++") or shutil.which("g++")):
        raise Skip("torch.compile on the CPU needs a C++ compiler (c++/g++ not found)")
    model = _folded(case)
    note = "static shapes"
    if case.device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
        model._bench_channels_last = True
        note += ", channels_last"
    mode = "reduce-overhead" if cuda_graph else None
    if cuda_graph:
        note += ", Inductor CUDA graphs (mode=reduce-overhead)"
    # Every compile row starts from an empty Dynamo cache: the generator's forward is one code
    # object for all instances, and a full cache would silently fall back to eager.
    torch._dynamo.reset()
    compiled = torch.compile(model, mode=mode, dynamic=False)
    compiled._bench_channels_last = getattr(model, "_bench_channels_last", False)
    # reduce-overhead already replays a CUDA graph: the timer must not capture it again.
    prepared = _torch_provider(compiled, case, note=note, capturable=False)
    first_output = prepared.output

    def output():
        y = first_output()
        if not torch._dynamo.utils.counters["stats"]["unique_graphs"]:
            raise RuntimeError("torch.compile produced no graph: the row would time eager")
        return y

    prepared.output = output
    return prepared


def _kernel_backend(name: str) -> Callable[[InferenceCase, bool], Prepared]:
    def build(case: InferenceCase, cuda_graph: bool) -> Prepared:
        from colorizer.ops import KernelsUnavailable, get_ops

        if name == "triton" and not case.device.startswith("cuda"):
            raise Skip("Triton kernels need a CUDA GPU; on the CPU Triton only runs in its interpreter")
        try:
            get_ops(name)
        except KernelsUnavailable as exc:
            raise Skip(str(exc).splitlines()[0]) from exc
        # The model colorize / eval / serve run: the runtime seam's ModuleRunner makes the folded copy on
        # the backend, in the memory layout it picks for that backend (channels_last for native).
        from colorizer.runtime.runner import ModuleRunner

        runner = ModuleRunner(make_model(case), case.device, name)
        return _torch_provider(_Layout(runner.module, runner.layout), case, note=f"ModuleRunner, {runner.layout}")

    return build


class _Layout(torch.nn.Module):
    """Calls ``model`` with its input in ``layout`` (as ModuleRunner.forward does)."""

    def __init__(self, model: torch.nn.Module, layout: torch.memory_format):
        super().__init__()
        self.model, self.layout = model, layout

    def forward(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=self.layout), noise=noise)


def _ort_session(path: str, case: InferenceCase):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise Skip(f"onnxruntime is not installed: {exc}") from exc
    options = ort.SessionOptions()
    # Same thread count as torch, so the comparison is of implementations, not of thread pools.
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_feed(session, case: InferenceCase) -> dict:
    """Inputs for an ONNX session, matched by name and rank: an integer input is a seed (0); names
    with ``noise`` take the noise maps in order (noise7 first); ``sketch`` and ``palette`` inputs take
    those parts (palette as planes, (N, 9, 3) colors or (N, 27)); the first other 4-D input is the
    30-channel tensor; later unnamed 4-D inputs are noise maps."""
    import numpy as np

    cpu_case = InferenceCase(case.channels, case.batch, case.size, "float32", "cpu")
    parts = input_parts(cpu_case)
    x = torch.cat((parts["sketch"], parts["planes"]), dim=1).numpy()
    noise = [n.numpy() for n in parts["noise"]]
    feed, x_given = {}, False
    for inp in session.get_inputs():
        name, rank = inp.name.lower(), len(inp.shape)
        if "int" in inp.type:
            feed[inp.name] = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], dtype=np.int64)
        elif "noise" in name and noise:
            feed[inp.name] = noise.pop(0)
        elif "sketch" in name:
            feed[inp.name] = parts["sketch"][:, :1].numpy() if inp.shape[1] == 1 else parts["sketch"].numpy()
        elif "palette" in name or "color" in name:
            by_rank = {4: parts["planes"], 3: parts["colors"], 2: parts["colors"].reshape(case.batch, 27)}
            if rank not in by_rank:
                raise Skip(f"cannot feed ONNX palette input {inp.name!r} of shape {inp.shape}")
            feed[inp.name] = by_rank[rank].numpy()
        elif rank == 4 and not x_given:
            feed[inp.name], x_given = x, True
        elif rank == 4 and noise:
            feed[inp.name] = noise.pop(0)
        else:
            raise Skip(f"cannot feed ONNX input {inp.name!r} {inp.shape} ({inp.type})")
    return feed


def _ort_prepared(session, case: InferenceCase, note: str) -> Prepared:
    import numpy as np

    feed = onnx_feed(session, case)
    outputs = [o.name for o in session.get_outputs()][:1]
    box = {}

    def run():
        box["y"] = session.run(outputs, feed)[0]

    def output():
        run()
        return torch.from_numpy(np.asarray(box["y"], dtype=np.float32))

    return Prepared(run=run, output=output, runs_on="cpu", note=note)


class _NoiseInputs(torch.nn.Module):
    """Wraps a generator so the eight noise maps are graph inputs (x, noise7, ..., noise0)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, *noise):
        return self.model(x, noise=list(noise))


# ONNX sessions are exported once per (provider, widths) with dynamic batch and size, and reused.
_SESSIONS: dict[tuple, object] = {}


def _cached_session(key: tuple, export: Callable[[str], str], case: InferenceCase):
    if key not in _SESSIONS:
        workdir = tempfile.mkdtemp(prefix="bench-onnx-")
        try:
            written = export(os.path.join(workdir, "generator.onnx"))
            _SESSIONS[key] = _ort_session(written, case)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return _SESSIONS[key]


def _onnx_plain(case: InferenceCase, cuda_graph: bool) -> Prepared:
    if case.dtype != "float32":
        raise Skip("onnxruntime's CPU provider runs the fp32 graph only")
    import warnings

    cpu_case = InferenceCase(case.channels, case.batch, SIZE_FOR_TRACE, "float32", "cpu")

    def export(path: str) -> str:
        model = _NoiseInputs(_folded(cpu_case))
        x, noise = make_inputs(cpu_case)
        names = ["x"] + [f"noise{k}" for k in range(7, -1, -1)]
        axes = {name: {0: "batch", 2: f"height_{name}", 3: f"width_{name}"} for name in names}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (x, *noise), path, dynamo=False, opset_version=18, input_names=names, dynamic_axes=axes
            )
        return path

    session = _cached_session(("onnxruntime-plain", case.channels), export, case)
    note = "legacy TorchScript exporter, opset 18, ORT_ENABLE_ALL"
    if case.device != "cpu":
        note += "; CPU execution provider (for the record)"
    return _ort_prepared(session, case, note)


def _onnx_ours(case: InferenceCase, cuda_graph: bool) -> Prepared:
    if case.dtype != "float32":
        raise Skip("onnxruntime's CPU provider runs the fp32 graph only")
    from colorizer.errors import MissingDependencyError
    from colorizer.export import export_onnx

    cpu_case = InferenceCase(case.channels, case.batch, case.size, "float32", "cpu")

    def export(path: str) -> str:
        # The exporter's own parity gate is its tests' business; here only the speed is measured
        # (the report checks the output against eager separately).
        try:
            return export_onnx(make_model(cpu_case), path, noise="input", verify=False).path
        except MissingDependencyError as exc:  # onnx not installed: the row says so
            raise Skip(str(exc)) from exc

    session = _cached_session(("onnxruntime", case.channels), export, case)
    note = "colorizer.export.export_onnx, noise as inputs"
    if case.device != "cpu":
        note += "; CPU execution provider (for the record)"
    return _ort_prepared(session, case, note)


def _tensorrt(case: InferenceCase, cuda_graph: bool) -> Prepared:
    from colorizer.export import build_engine, export_onnx, load_engine, tensorrt_missing

    missing = tensorrt_missing()
    if missing:
        raise Skip(missing)
    if not case.device.startswith("cuda"):
        raise Skip("a TensorRT engine runs on a CUDA device; this run is on the CPU")
    precision = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[case.dtype]
    cpu_case = InferenceCase(case.channels, case.batch, case.size, "float32", "cpu")
    workdir = tempfile.mkdtemp(prefix="bench-trt-")
    try:
        onnx_path, plan_path = os.path.join(workdir, "g.onnx"), os.path.join(workdir, "g.plan")
        export_onnx(make_model(cpu_case), onnx_path, noise="input", verify=False)
        # One fixed shape per engine (the profile's min = opt = max), no parity gate: only speed here.
        shape = f"{case.batch}:{case.batch}:{case.batch}", f"{case.size}:{case.size}:{case.size}"
        build_engine(onnx_path, plan_path, precision=precision, batch=shape[0], size=shape[1], timing_cache="")
        runner = load_engine(plan_path, device=case.device)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    parts = input_parts(cpu_case)
    sketch = parts["sketch"].to(case.device)
    palette = parts["colors"].to(case.device)
    noise = [n.to(case.device) for n in parts["noise"]]
    box = {}

    def run():
        box["y"] = runner.run(sketch, palette, *noise)

    def output():
        run()
        return box["y"].float().cpu()

    # The runner synchronizes its stream after each call, so it cannot be captured in a graph.
    return Prepared(run=run, output=output, runs_on=case.device, note=f"TensorRT {precision} engine, fixed shape")


BUILDERS: dict[str, Callable[[InferenceCase, bool], Prepared]] = {
    "eager": _eager,
    "eager-folded": _eager_folded,
    "compile": _compile,
    "triton": _kernel_backend("triton"),
    "native": _kernel_backend("native"),
    "onnxruntime": _onnx_ours,
    "onnxruntime-plain": _onnx_plain,
    "tensorrt": _tensorrt,
}


def prepare(provider: str, case: InferenceCase, cuda_graph: bool = False) -> Prepared:
    """Build ``provider`` for ``case``; raises Skip(reason) when it cannot run here.

    cuda_graph: the caller will time CUDA graph replays (batch-1 latency on a GPU); providers that
    already use graphs internally (compile) switch to their own graph mode.
    """
    if provider not in BUILDERS:
        raise ValueError(f"unknown provider {provider!r}; choose from {list(BUILDERS)}")
    if cuda_graph and not case.device.startswith("cuda"):
        raise Skip("CUDA graphs need a CUDA GPU")
    return BUILDERS[provider](case, cuda_graph)


def parse_channels(text: str | Sequence[int]) -> tuple[int, ...]:
    """'64,128,256,512' or a sequence -> a channel tuple (reference: 64,128,256,512)."""
    if isinstance(text, str):
        return tuple(int(c) for c in text.split(",") if c.strip())
    return tuple(int(c) for c in text)


# --------------------------------------------------------------------------------------------------
# pytest-benchmark entry points (collected by benchmarks/conftest.py; run with --benchmark-only).


@pytest.mark.parametrize("provider", PROVIDERS)
def test_generator_inference(benchmark, bench_options, provider):
    case = InferenceCase(
        channels=bench_options.channels,
        batch=bench_options.batch,
        size=bench_options.size,
        dtype=bench_options.dtype,
        device=bench_options.device,
    )
    try:
        prepared = prepare(provider, case)
    except Skip as skip:
        pytest.skip(str(skip))
    benchmark.group = f"generator {case.batch}x{case.size} {case.dtype} {case.device}"
    benchmark.extra_info.update(
        provider=provider, batch=case.batch, size=case.size, dtype=case.dtype, channels=list(case.channels)
    )
    benchmark.pedantic(
        synchronized(prepared.run, prepared.runs_on),
        rounds=bench_options.rounds,
        warmup_rounds=bench_options.warmup,
        iterations=1,
    )
