"""Parity gates: an exported artifact must match the eager model as well as eager fp32 itself does.

Every case runs the same fixed inputs through (a) the float64 eager model (the oracle: weight
standardization computed in float64, unfolded), (b) the eager model in the artifact's precision, and
(c) the artifact. The artifact passes when its relative L2 error against the oracle is at most
``WHOLE_MODEL_ERROR_FACTOR`` (2) times the eager model's own error in the same precision
(``colorizer.testing``): deep GroupNorm stacks amplify rounding, so a fixed elementwise tolerance
would be either too loose or too tight. For ONNX the precision is fp32 (eager fp32 is ~2e-4 from
float64 at 256x256 for the reference model); for a TensorRT fp16 / bf16 engine it is eager autocast
in that dtype on the GPU.

Default cases: two sizes (128 and 256 per side, non-square included) and two batch sizes.

``verify_artifact(path, model)`` re-checks an artifact that already exists (after copying it to
another machine, say): its row in ``colorizer.export.formats`` (found by the file's suffix) names
the runner that loads it and the ``verifier`` that gates it, ``verifier(runner, model, *, cases=None)
-> ParityReport``, the same function its builder gates with (``runner_parity`` does the work for
a runner on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from colorizer.checkpoint import check_colorizer
from colorizer.errors import ColorizerError, MissingDependencyError
from colorizer.export.interface import OUTPUT_NAME, PRECISION_DTYPES, example_inputs, generator_input, input_names
from colorizer.export.seeded_noise import seeded_noise
from colorizer.models.generator import UNetGenerator, fold_weight_standardization
from colorizer.testing import WHOLE_MODEL_ERROR_FACTOR, relative_l2

# (batch, height, width): two sizes, two batch sizes, both orientations of a non-square image.
DEFAULT_CASES = ((1, 128, 128), (2, 128, 256), (1, 256, 256), (2, 256, 128))
# Below a few float32 ulps the relative error is the output's own rounding; never demand less.
ERROR_FLOOR = 4 * torch.finfo(torch.float32).eps


class ParityError(ColorizerError):
    """An exported artifact does not match the eager model closely enough (nothing was written).

    ``report`` holds the full ParityReport, for the CLI to print above the one-line error.
    """

    exit_code = 3

    def __init__(self, message: str, report: ParityReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class ParityCase:
    backend: str  # e.g. "onnxruntime:CPUExecutionProvider", "tensorrt:fp16"
    batch: int
    height: int
    width: int
    error: float  # relative L2 of the artifact vs the float64 model
    reference_error: float  # relative L2 of eager (same precision) vs the float64 model
    allowed: float

    @property
    def passed(self) -> bool:
        return self.error <= self.allowed

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        return (
            f"{self.backend:38s} {self.batch}x{self.height}x{self.width:<4d} error {self.error:.3e}  "
            f"eager {self.reference_error:.3e}  allowed {self.allowed:.3e}  {verdict}"
        )


@dataclass
class ParityReport:
    """All cases of one gate run; ``passed`` when every case passed.

    factor: the gate's factor over the eager error (None: ``WHOLE_MODEL_ERROR_FACTOR``);
    reference: the eager model whose error it scales, as the header names it.
    """

    artifact: str
    cases: list[ParityCase] = field(default_factory=list)
    factor: float | None = None
    reference: str = "eager fp32"

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def format(self) -> str:
        factor = WHOLE_MODEL_ERROR_FACTOR if self.factor is None else self.factor
        head = f"parity of {self.artifact} (relative L2 vs the float64 model; allowed = {factor}x {self.reference})"
        return "\n".join([head] + ["  " + c.line() for c in self.cases])

    def worst(self) -> ParityCase:
        return max(self.cases, key=lambda c: c.error / c.allowed)

    def raise_if_failed(self, what: str, outcome: str = "nothing was written") -> None:
        """ParityError (with this report) unless every case passed; ``outcome`` ends its message."""
        if not self.cases:
            raise ParityError(f"{what}: no parity case ran", self)
        if not self.passed:
            w = self.worst()
            raise ParityError(
                f"{what} failed its parity gate: {w.backend} at {w.batch}x{w.height}x{w.width} has relative "
                f"error {w.error:.3e} > allowed {w.allowed:.3e} (eager {w.reference_error:.3e}); {outcome}",
                self,
            )

    def __str__(self) -> str:
        return self.format()


def allowed_error(reference_error: float, factor: float | None = None) -> float:
    """The gate: ``factor`` (default WHOLE_MODEL_ERROR_FACTOR) x the eager error, floored."""
    factor = WHOLE_MODEL_ERROR_FACTOR if factor is None else factor
    return factor * max(reference_error, ERROR_FLOOR)


def eager_noise(noise: str, inputs: tuple[torch.Tensor, ...], height: int, width: int):
    """The ``noise`` argument that makes the eager model compute what the exported graph computes."""
    if noise == "zero":
        return "zero"
    if noise == "input":
        return list(inputs[2:])
    return seeded_noise(inputs[2], height, width)


def reference_models(model: UNetGenerator) -> tuple[UNetGenerator, UNetGenerator]:
    """CPU eval copies of ``model`` in float64 (the oracle) and float32 (eager fp32).

    Both have the weight standardization folded *in their own dtype*: that computes exactly the
    weights the unfolded model computes on every forward (same op, same dtype), so the outputs are
    bit-identical to the unfolded model's, without re-standardizing 60 M weights per case.
    """
    return (
        fold_weight_standardization(_copy(model).double()).eval(),
        fold_weight_standardization(_copy(model).float()).eval(),
    )


def reference_outputs(models, noise: str, inputs, height: int, width: int):
    """(float64 oracle, eager float32) outputs on CPU for one case's inputs; models from reference_models."""
    m64, m32 = models
    maps = eager_noise(noise, inputs, height, width)
    x = generator_input(inputs[0], inputs[1])
    with torch.inference_mode():
        maps64 = maps if isinstance(maps, str) else [m.double() for m in maps]
        oracle = m64(x.double(), noise=maps64)
        eager = m32(x.float(), noise=maps)
    return oracle, eager


def _copy(model):
    import copy

    return copy.deepcopy(model).cpu()


def onnx_providers(requested=None) -> list[str]:
    """onnxruntime execution providers to check: CPU always, CUDA where onnxruntime has it."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise MissingDependencyError(f"onnxruntime here has no {', '.join(missing)} (has: {', '.join(available)})")
        return list(requested)
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and torch.cuda.is_available():
        providers.append("CUDAExecutionProvider")
    return providers


def verify_onnx(
    path: str,
    model: UNetGenerator,
    *,
    noise: str,
    cases=None,
    providers=None,
    factor: float | None = None,
) -> ParityReport:
    """Run the ONNX file at ``path`` with onnxruntime against ``model`` (unfolded, any device).

    cases: (batch, height, width) triples (default ``DEFAULT_CASES``); providers: onnxruntime
    provider names (default CPU, plus CUDA when available). Returns the report; does not raise on
    failure (``report.raise_if_failed``).
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("the ONNX parity gate needs onnxruntime: pip install onnxruntime") from exc
    cases = tuple(cases or DEFAULT_CASES)
    report = ParityReport(artifact=path, factor=WHOLE_MODEL_ERROR_FACTOR if factor is None else factor)
    sessions = {}
    for provider in onnx_providers(providers):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        sessions[provider] = ort.InferenceSession(path, options, providers=[provider])
    names = input_names(noise)
    models = reference_models(model)
    for i, (batch, height, width) in enumerate(cases):
        inputs = example_inputs(noise, batch, height, width, seed=1000 + i)
        oracle, eager = reference_outputs(models, noise, inputs, height, width)
        ref_err = relative_l2(eager, oracle)
        feed = {name: t.numpy() for name, t in zip(names, inputs)}
        for provider, session in sessions.items():
            (out,) = session.run([OUTPUT_NAME], feed)
            out = torch.from_numpy(out)
            err = relative_l2(out, oracle) if out.shape == oracle.shape else float("inf")
            allowed = allowed_error(ref_err, factor)
            report.cases.append(ParityCase(f"onnxruntime:{provider}", batch, height, width, err, ref_err, allowed))
    return report


def verify_engine(
    runner,
    model: UNetGenerator,
    *,
    noise: str,
    precision: str,
    cases=None,
    factor: float | None = None,
) -> ParityReport:
    """Parity gate of a TensorRT engine (``tensorrt.TensorRTRunner``) on the GPU.

    The eager reference runs on CUDA under ``torch.autocast`` in the engine's precision (fp32: plain
    fp32 eager on the GPU); both are judged against the float64 model on the CPU.
    """
    dtype = PRECISION_DTYPES[precision]
    cases = tuple(cases or DEFAULT_CASES)
    report = ParityReport(
        artifact=getattr(runner, "path", "engine"),
        factor=WHOLE_MODEL_ERROR_FACTOR if factor is None else factor,
        reference="eager fp32 (CUDA)" if dtype == torch.float32 else f"eager autocast {precision} (CUDA)",
    )
    device = torch.device("cuda")
    gpu_model = _copy(model).to(device).float().eval()
    models = reference_models(model)
    for i, (batch, height, width) in enumerate(cases):
        inputs = example_inputs(noise, batch, height, width, seed=1000 + i)
        oracle, _ = reference_outputs(models, noise, inputs, height, width)
        maps = eager_noise(noise, inputs, height, width)
        gpu_maps = maps if isinstance(maps, str) else [m.to(device) for m in maps]
        x = generator_input(inputs[0], inputs[1]).to(device)
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            eager = gpu_model(x, noise=gpu_maps).float().cpu()
        ref_err = relative_l2(eager, oracle)
        out = runner.run(*(t.to(device) for t in inputs)).float().cpu()
        err = relative_l2(out, oracle) if out.shape == oracle.shape else float("inf")
        report.cases.append(
            ParityCase(f"tensorrt:{precision}", batch, height, width, err, ref_err, allowed_error(ref_err, factor))
        )
    return report


def runner_parity(
    runner,
    model: UNetGenerator,
    *,
    backend: str,
    cases=None,
    factor: float | None = None,
    autocast: torch.dtype | None = None,
) -> ParityReport:
    """The parity gate of any ``EngineRunner`` (its ``run`` takes CPU tensors): ``runner.run`` on the
    fixed inputs of ``cases`` (default ``DEFAULT_CASES``) in the runner's noise mode, against the
    float64 model; allowed ``factor`` (default WHOLE_MODEL_ERROR_FACTOR) x the error of the eager
    model in fp32, or under ``torch.autocast("cpu", autocast)`` when given. Returns the report
    (``backend`` names its cases); does not raise on failure.
    """
    cases = tuple(cases or DEFAULT_CASES)
    reference = "eager fp32" if autocast is None else f"eager autocast {str(autocast).removeprefix('torch.')}"
    report = ParityReport(
        artifact=runner.path, factor=WHOLE_MODEL_ERROR_FACTOR if factor is None else factor, reference=reference
    )
    m64, m32 = reference_models(model)
    for i, (batch, height, width) in enumerate(cases):
        inputs = example_inputs(runner.noise, batch, height, width, seed=1000 + i)
        maps = eager_noise(runner.noise, inputs, height, width)
        x = generator_input(inputs[0], inputs[1])
        with torch.inference_mode():
            oracle = m64(x.double(), noise=maps if isinstance(maps, str) else [m.double() for m in maps])
            with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                eager = m32(x.float(), noise=maps).float()
        ref_err = relative_l2(eager, oracle)
        out = runner.run(*inputs).float().cpu()  # a runner on a GPU returns its device's tensors
        err = relative_l2(out, oracle) if out.shape == oracle.shape else float("inf")
        report.cases.append(ParityCase(backend, batch, height, width, err, ref_err, allowed_error(ref_err, factor)))
    return report


def verify_artifact(path: str, model: UNetGenerator | str, cases=None, *, device: str = "cpu") -> ParityReport:
    """Re-check an exported artifact that already exists against a generator (or a checkpoint path).

    The artifact's row in ``colorizer.export.formats`` is found by its suffix (an OpenVINO folder:
    its ``model.xml``); the row's runner loads it (``load_engine``, on ``device``) and the row's
    verifier runs the gate its builder ran, with the noise mode, precision and shapes the artifact
    records. cases: (batch, height, width) triples (default: the builder's). Returns the passing
    report; raises ParityError (exit code 3, ``.report`` attached) when it fails, ConfigError for a
    missing or unknown file, MissingDependencyError when its runtime is missing here.
    """
    from colorizer.export.formats import find_artifact
    from colorizer.export.runtime import load_engine

    fmt, path = find_artifact(path)
    if isinstance(model, str):
        from colorizer.checkpoint import load_colorizer_file

        model, _ = load_colorizer_file(model)
    check_colorizer(model)
    runner = load_engine(path, device=device)
    report = fmt.load_verifier()(runner, model, cases=cases)
    report.raise_if_failed(f"{fmt.name} artifact {path}", "it does not match this generator")
    return report
