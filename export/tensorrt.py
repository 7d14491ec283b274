"""TensorRT engines from the exported ONNX file (``build_engine``), with a JSON sidecar.

Written against TensorRT 10's documented Python API (``tensorrt.Builder``, ``OnnxParser``,
``IBuilderConfig``, ``IOptimizationProfile.set_shape``, ``ITimingCache``,
``Builder.build_serialized_network``). TensorRT cannot be installed on the machines this project is
tested on, so this module is exercised only where TensorRT and a CUDA GPU exist (tests marked
``gpu``); ``require_tensorrt`` gives the one-line reason elsewhere.

Shapes: the ONNX graph has a dynamic batch and a dynamic height and width (multiples of 128). One
explicit optimization profile covers ``batch = MIN:OPT:MAX`` and ``size = MIN:OPT:MAX`` (square
sizes at min/opt/max; any H, W in [min, max] run). Every input gets the matching shapes (the palette
(N, 9, 3), the seed (N,), noise maps (N, 1, H / 2**k, W / 2**k)).

Precision: ``fp32`` (TF32 disabled, so the engine is a true fp32 reference), ``fp16`` or ``bf16``
(BuilderFlag.FP16 / BF16: TensorRT may run layers in that type where it is faster; the seeded
noise's int32 arithmetic stays int32). The timing cache (a file next to the plan by default) is
loaded before the build and saved after it, so later builds of the same model on the same GPU skip
most tactic timing.

Sidecar ``<plan>.json``: the profile's shapes, precision, input and output names and types, noise
mode, TensorRT version, GPU name and compute capability, CUDA version, the ONNX file's sha256 and
metadata, and the parity report.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import torch

from colorizer.errors import ConfigError, MissingDependencyError
from colorizer.export.artifact import atomic_output, check_output_path, export_output, refuse_foreign, sha256_file
from colorizer.export.interface import NOISE_INPUT_NAMES, OUTPUT_NAME, PALETTE_SIZE, PRECISION_DTYPES
from colorizer.export.onnx_export import read_metadata
from colorizer.export.runtime import EngineRunner, noise_mode_from_inputs
from colorizer.limits import check_model_size
from colorizer.models.generator import SIZE_MULTIPLE

PRECISIONS = PRECISION_DTYPES  # the --precision choices (colorizer.export.formats), defined with the interface
DEFAULT_PRECISION = "fp16"
INSTALL_HINT = (
    "on a machine with an NVIDIA GPU run `pip install tensorrt` "
    "(https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html)"
)
DEFAULT_WORKSPACE_GIB = 8.0
SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = "colorizer-tensorrt-plan"


def is_own_sidecar(path: str) -> bool:
    """True when ``path`` is a JSON sidecar written by ``build_engine`` (its ``format``)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT


def is_own_plan(path: str) -> bool:
    """True when the plan at ``path`` was written by ``build_engine``: its sidecar is ours (a plan
    itself carries no metadata). The overwrite rule of colorizer-export replaces only such plans."""
    return is_own_sidecar(path + SIDECAR_SUFFIX)


def check_plan_outputs(plan_path: str) -> None:
    """ConfigError unless the plan and its sidecar are free or ours (before any work)."""
    refuse_foreign(plan_path, "TensorRT plan", is_own_plan)
    refuse_foreign(plan_path + SIDECAR_SUFFIX, "engine sidecar", is_own_sidecar)


@dataclass(frozen=True)
class ShapeRange:
    """MIN:OPT:MAX of one dynamic dimension."""

    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str, what: str) -> ShapeRange:
        """Parse "MIN:OPT:MAX" (or a single "N" for a fixed value)."""
        parts = str(text).split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"--{what} must be MIN:OPT:MAX integers (or one integer), got {text!r}") from None
        if len(values) == 1:
            values = values * 3
        if len(values) != 3:
            raise ConfigError(f"--{what} must be MIN:OPT:MAX, got {text!r}")
        lo, opt, hi = values
        if not 1 <= lo <= opt <= hi:
            raise ConfigError(f"--{what} needs 1 <= MIN <= OPT <= MAX, got {text!r}")
        return cls(lo, opt, hi)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def check_size_range(size: ShapeRange) -> None:
    for value in (size.min, size.opt, size.max):
        check_model_size(value, value, "image")


def input_shapes(name: str, batch: int, size: int) -> tuple[int, ...]:
    """The shape of graph input ``name`` at one (batch, square size) point."""
    if name == "sketch":
        return (batch, 3, size, size)
    if name == "palette":
        return (batch, PALETTE_SIZE, 3)
    if name == "seed":
        return (batch,)
    if name in NOISE_INPUT_NAMES:
        shift = int(name[len("noise") :])
        return (batch, 1, size >> shift, size >> shift)
    raise ValueError(f"unknown input {name!r}")


def profile_shapes(names, batch: ShapeRange, size: ShapeRange) -> dict[str, dict[str, list[int]]]:
    """{input: {"min": shape, "opt": shape, "max": shape}} for one optimization profile."""
    return {
        name: {
            "min": list(input_shapes(name, batch.min, size.min)),
            "opt": list(input_shapes(name, batch.opt, size.opt)),
            "max": list(input_shapes(name, batch.max, size.max)),
        }
        for name in names
    }


def tensorrt_missing() -> str | None:
    """None when TensorRT and a CUDA GPU are usable here, else what is missing (one line)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return f"TensorRT is not installed; {INSTALL_HINT}"
    if not torch.cuda.is_available():
        return "TensorRT needs an NVIDIA GPU and PyTorch here sees none; run on a GPU machine with CUDA torch"
    return None


def require_tensorrt():
    """Import and return the tensorrt module, or raise MissingDependencyError (exit code 2)."""
    missing = tensorrt_missing()
    if missing:
        raise MissingDependencyError(missing)
    import tensorrt as trt

    return trt


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def gpu_description() -> dict:
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
    }


@dataclass
class EngineBuild:
    """What ``build_engine`` wrote."""

    path: str
    sidecar: str
    precision: str
    batch: str
    size: str
    build_seconds: float
    timing_cache: str | None
    parity: object | None = None


def _parse_network(trt, builder, onnx_path: str, logger):
    flags = 0
    # TensorRT 10 networks are always explicit-batch; older versions need the flag.
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"TensorRT cannot parse {onnx_path}: {errors}")
    return network, parser


def build_engine(
    onnx_path: str,
    plan_path: str,
    *,
    precision: str = DEFAULT_PRECISION,
    batch: ShapeRange | str = "1:1:8",
    size: ShapeRange | str = "256:512:1024",
    timing_cache: str | None = None,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    model=None,
    verify_cases=None,
) -> EngineBuild:
    """Build a TensorRT engine from an exported ONNX file and write ``plan_path`` + its sidecar.

    precision: fp32 | fp16 | bf16. batch, size: ``ShapeRange`` or "MIN:OPT:MAX" strings; size values
    are square image sides (multiples of 128). timing_cache: a file read before and written after the
    build (default ``<plan folder>/timing.cache``; "" disables it). model: the eager Sketch2Color;
    when given, the engine passes ``verify_runner`` (``verify.verify_engine``: parity against
    float64, at most 2x eager autocast's error) before anything is written. Raises
    MissingDependencyError without TensorRT or a GPU, ConfigError for bad options, ParityError when
    the gate fails.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    batch = batch if isinstance(batch, ShapeRange) else ShapeRange.parse(batch, "batch")
    size = size if isinstance(size, ShapeRange) else ShapeRange.parse(size, "size")
    check_size_range(size)
    plan_path = check_output_path(plan_path, "TensorRT plan")
    check_plan_outputs(plan_path)
    trt = require_tensorrt()
    if timing_cache is None:
        timing_cache = os.path.join(os.path.dirname(plan_path), "timing.cache")
    metadata = read_metadata(onnx_path)
    names = metadata.get("inputs", "sketch,palette,seed").split(",")
    shapes = profile_shapes(names, batch, size)

    logger = _logger(trt)
    builder = trt.Builder(logger)
    network, _parser = _parse_network(trt, builder, onnx_path, logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)  # a true fp32 engine
    profile = builder.create_optimization_profile()
    for name, s in shapes.items():
        profile.set_shape(name, s["min"], s["opt"], s["max"])
    config.add_optimization_profile(profile)

    cache_bytes = b""
    if timing_cache and os.path.isfile(timing_cache):
        with open(timing_cache, "rb") as f:
            cache_bytes = f.read()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - start
    if serialized is None:
        raise ConfigError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    if timing_cache:
        # Saved before the parity gate: the tactic timings stay valid for the next build either way.
        with atomic_output(timing_cache, "timing cache") as tmp_cache:
            with open(tmp_cache, "wb") as f:
                f.write(memoryview(config.get_timing_cache().serialize()))

    sidecar = {
        "format": SIDECAR_FORMAT,
        "onnx": os.path.abspath(onnx_path),
        "onnx_sha256": sha256_file(onnx_path),
        "onnx_metadata": metadata,
        "precision": precision,
        "batch": str(batch),
        "size": str(size),
        "profile": shapes,
        "inputs": names,
        "output": metadata.get("output", "image"),
        "noise_mode": metadata.get("noise_mode"),
        "tensorrt_version": trt.__version__,
        "gpu": gpu_description(),
        "torch": torch.__version__,
        "build_seconds": round(build_seconds, 2),
    }
    report = None
    # Judged before either file moves: the plan is ours by its (old) sidecar.
    plan_is_ours = is_own_plan(plan_path)
    with export_output(plan_path, "TensorRT plan", lambda p: plan_is_ours) as tmp_plan:
        with open(tmp_plan, "wb") as f:
            f.write(memoryview(serialized))
        if model is not None:
            runner = TensorRTRunner(tmp_plan, noise=metadata.get("noise_mode", "seeded"), sidecar=sidecar)
            runner.path = plan_path
            report = verify_runner(runner, model, cases=verify_cases)  # precision and profile from the sidecar
            report.raise_if_failed(f"TensorRT build {plan_path}")
            sidecar["parity"] = [asdict(c) | {"passed": c.passed} for c in report.cases]
        with export_output(plan_path + SIDECAR_SUFFIX, "engine sidecar", is_own_sidecar) as tmp_json:
            with open(tmp_json, "w") as f:
                json.dump(sidecar, f, indent=2)
                f.write("\n")
    return EngineBuild(
        path=plan_path,
        sidecar=plan_path + SIDECAR_SUFFIX,
        precision=precision,
        batch=str(batch),
        size=str(size),
        build_seconds=build_seconds,
        timing_cache=timing_cache or None,
        parity=report,
    )


# ------------------------------------------------------------------------------------------------
# Runner (behind load_engine)


class TensorRTRunner(EngineRunner):
    """A deserialized TensorRT engine; inputs and outputs are torch CUDA tensors.

    ``metadata``: its sidecar (``sidecar``, else ``<plan>.json`` when it exists, else {}): precision,
    profile, noise mode. noise: overrides the sidecar's noise mode.
    """

    def __init__(
        self, path: str, device: str | torch.device = "cuda", noise: str | None = None, sidecar: dict | None = None
    ):
        trt = require_tensorrt()
        self.trt = trt
        self.path = path
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ConfigError(f"device {self.device}: a TensorRT engine runs on a CUDA device (cuda)", option="device")
        with open(path, "rb") as f:
            data = f.read()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise ConfigError(f"{path} is not a TensorRT engine for this TensorRT version and GPU")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self.metadata = read_sidecar(path) if sidecar is None else dict(sidecar)
        if self.metadata and self.metadata.get("format") != SIDECAR_FORMAT:
            raise ConfigError(f"{path}{SIDECAR_SUFFIX} is not the sidecar of a colorizer TensorRT export")
        check_engine_io(path, self.input_names, self.output_names)
        self.noise = noise or self.metadata.get("noise_mode") or noise_mode_from_inputs(self.input_names)
        self.precision = self.metadata.get("precision")
        self._dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
        for trt_name, torch_type in (("bfloat16", torch.bfloat16), ("int64", torch.int64)):
            if hasattr(trt, trt_name):  # TensorRT >= 9
                self._dtypes[getattr(trt, trt_name)] = torch_type

    def run(self, sketch, palette, *noise_inputs) -> torch.Tensor:
        tensors = (sketch, palette, *noise_inputs)
        if len(tensors) != len(self.input_names):
            raise ValueError(f"{self.path} takes {self.input_names}, got {len(tensors)} tensors")
        keep = []
        for name, t in zip(self.input_names, tensors):
            t = t.detach().to(self.device, self._dtypes[self.engine.get_tensor_dtype(name)]).contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        name = OUTPUT_NAME if OUTPUT_NAME in self.output_names else self.output_names[0]
        shape = tuple(self.context.get_tensor_shape(name))
        out = torch.empty(shape, dtype=self._dtypes[self.engine.get_tensor_dtype(name)], device=self.device)
        self.context.set_tensor_address(name, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run {self.path}")
        stream.synchronize()
        return out.float()


def check_engine_io(path: str, inputs: list[str], outputs: list[str]) -> None:
    """ConfigError unless an engine's tensors are a colorizer export's (``input_names`` of a noise
    mode, in order, and the ``image`` output): a foreign engine is refused, not run."""
    from colorizer.export.interface import NOISE_MODES, input_names

    if not any(list(inputs) == input_names(mode) for mode in NOISE_MODES) or list(outputs) != [OUTPUT_NAME]:
        raise ConfigError(f"{path} is not a colorizer export (inputs {list(inputs)}, outputs {list(outputs)})")


def read_sidecar(path: str) -> dict:
    """The JSON sidecar of the plan at ``path`` ({} when there is none; ConfigError when unreadable)."""
    sidecar = path + SIDECAR_SUFFIX
    if not os.path.isfile(sidecar):
        return {}
    try:
        with open(sidecar) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the engine sidecar {sidecar}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{sidecar} is not an engine sidecar (expected a JSON object)")
    return data


def verify_runner(runner: TensorRTRunner, model, *, cases=None):
    """The TensorRT row's verifier (colorizer.export.formats): ``verify.verify_engine`` at the
    precision the engine's sidecar records, on cases inside its recorded profile (``_gate_cases``)
    unless ``cases`` are given. ``build_engine`` gates with it too. ConfigError without a sidecar."""
    from colorizer.export.verify import verify_engine

    meta = runner.metadata
    precision = meta.get("precision")
    if precision not in PRECISIONS or not (cases or ("batch" in meta and "size" in meta)):
        raise ConfigError(
            f"{runner.path}: its sidecar {runner.path}{SIDECAR_SUFFIX} (precision, profile) is missing or incomplete; "
            "the parity check needs it"
        )
    if not cases:
        cases = _gate_cases(ShapeRange.parse(meta["batch"], "batch"), ShapeRange.parse(meta["size"], "size"))
    return verify_engine(runner, model, noise=runner.noise, precision=precision, cases=cases)


def load_runner(path: str, device: str | torch.device = "cuda", **kwargs) -> TensorRTRunner:
    """load_engine's runner for a plan: on the given CUDA device, or the first GPU when given the CPU."""
    return TensorRTRunner(path, device=device if torch.device(device).type == "cuda" else "cuda", **kwargs)


def _gate_cases(batch: ShapeRange, size: ShapeRange):
    """Parity cases inside the engine's profile: two sizes and two batch sizes."""
    sizes = sorted({size.min, min(size.max, max(size.min, 2 * SIZE_MULTIPLE))})
    batches = sorted({batch.min, min(batch.max, max(batch.min, 2))})
    small, large = sizes[0], sizes[-1]
    return ((batches[0], small, small), (batches[-1], small, large), (batches[0], large, large))


# ------------------------------------------------------------------------------------------------
# The colorizer-export step (colorizer.export.formats)


def cli_options(parser) -> None:
    parser.add_argument("--timing-cache", help="TensorRT timing cache file (default: timing.cache next to the plan)")


def cli_check(args, batch, size) -> None:
    if not args.trt:
        return
    check_plan_outputs(check_output_path(args.trt, "TensorRT plan"))
    missing = tensorrt_missing()
    if missing:  # before any work, so nothing is written
        raise MissingDependencyError(f"--trt: {missing}")
    if args.precision not in (None, *PRECISIONS):
        raise ConfigError(f"--trt: precision {args.precision} is not a TensorRT precision ({', '.join(PRECISIONS)})")


def cli_export(job):
    """Build (and gate) the plan from the job's ONNX graph."""
    from colorizer.export.formats import Exported

    args, precision = job.args, job.args.precision or DEFAULT_PRECISION
    built = build_engine(
        job.outputs["onnx"].path,
        args.trt,
        precision=precision,
        batch=job.batch,
        size=job.size,
        timing_cache=args.timing_cache,
        model=job.model,
    )
    message = f"wrote {built.path} and {built.sidecar} ({precision}, batch {job.batch}, size {job.size})"
    return Exported(built, message, (built.parity,))
