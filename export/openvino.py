"""OpenVINO IR export for CPU serving at fp32, bf16 or int8 (``export_openvino``), and its runner.

The IR is converted from our exported ONNX graph (``export_onnx``: weight standardization folded,
two-level GroupNorm statistics, palette broadcast and seeded noise in the graph) with
``openvino.convert_model``. Converting the PyTorch module directly was measured and rejected: it
takes ~35 s, writes GroupNorm as dynamic-shape Reshape + MVN chains, and the result ran ~8x slower
on the CPU plugin than the ONNX-converted graph (64-channel generator, 256 px, 2 threads).

Two rewrites make the IR right on OpenVINO's CPU plugin:

- **Exact integer noise.** The seeded noise (``colorizer.export.seeded_noise``) is int32 arithmetic;
  its ``x // 2**k`` is an ONNX integer Div. The CPU plugin computes integer Divide through float32,
  which is off by one above 2**24 (measured: (t*t) // 128 for t < 2**15), and the whole noise stream
  then differs (relative L2 1.1 of the output against the float64 model). Every int32 Divide by a
  power-of-two constant becomes a BitwiseRightShift, which the plugin computes exactly: the in-graph
  noise is then bit-identical to ``seeded_noise``.
- **fp32 islands in a bf16 graph.** OpenVINO's bf16 is the CPU plugin's inference precision hint
  (``INFERENCE_PRECISION_HINT``; on a CPU with AVX512-BF16 or AMX it is even the default, so the
  fp32 engine sets f32 explicitly). Nodes marked with the ``precise`` runtime attribute
  (``DisablePrecisionConversion``, written into the IR's XML) keep their original fp32 precision.
  ``KEEP_FP32`` names the node groups that can be kept: ``noise`` (the seeded-noise subgraph: its
  Box-Muller log/sqrt/cos in bf16 would change the noise itself), ``output`` (the last convolution and
  the tanh), ``attention`` (each attention gate's 1-channel projection, its instance norm and the
  sigmoid). ``DEFAULT_KEEP_FP32`` is what the measurements in the README and
  benchmarks/results justify.

int8: NNCF post-training quantization (``nncf.quantize``: per-channel symmetric int8 weights,
per-tensor activations, fast bias correction) calibrated on the built-in synthetic drawings
(``colorizer.data.synthetic``) or a folder of the user's pictures (``calibration=``); the nodes of the
``keep`` groups stay out of quantization (NNCF ``IgnoredScope``) and run in fp32. Measured on a
demo-preset model (250 steps, 32 calibration drawings): relative L2 0.43-0.49 against the float64 model
where autocast bf16 has 0.027-0.052 (9-18x), so int8 fails its numerical gate (allowed: 4x autocast
bf16) and the export exits with code 3: per-tensor int8 activations do not survive the generator's
~60 GroupNorms and skip concatenations. The path stays, gated, for models and calibrations that pass.

Every export passes two gates before anything is written (``verify_openvino`` and
``functional_gate``; ParityError, exit code 3, nothing left behind):

- numerical: relative L2 against the float64 model on fixed inputs (two sizes, two batch sizes) at
  most ``colorizer.testing.LOW_PRECISION_GATES[precision]`` times the error of the eager PyTorch
  model in the matching precision (fp32: eager fp32; bf16 and int8: ``torch.autocast("cpu",
  torch.bfloat16)``);
- functional: ``colorizer.scoring`` on held-out synthetic drawings: the engine's L1 within
  ``FUNCTIONAL_L1_TOLERANCE`` (1/255) of the fp32 model's, and its palette-swap following unchanged.

Output: a folder holding ``model.xml`` + ``model.bin`` (weights in fp32, or int8 for int8) with the
same metadata as the ONNX export in the IR's ``rt_info`` (section ``colorizer``), plus the precision,
the inference precision hint, the fp32 node groups and the gate results.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import warnings
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from colorizer.checkpoint import check_colorizer, load_colorizer_file
from colorizer.errors import ConfigError, MissingDependencyError
from colorizer.export.artifact import check_output_folder
from colorizer.export.interface import NOISE_MODES, OUTPUT_NAME, check_noise_mode, input_names
from colorizer.export.onnx_export import DEFAULT_OPSET, export_onnx, graph_metadata
from colorizer.export.runtime import EngineRunner, check_signature
from colorizer.models.generator import UNetGenerator

PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_PRECISION = "fp32"
# The CPU plugin's INFERENCE_PRECISION_HINT per export precision: int8 runs its quantized convolutions
# in int8 and everything else in f32.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
KEEP_FP32 = ("noise", "output", "attention")
DEFAULT_KEEP_FP32 = ("noise", "output")
XML_NAME = "model.xml"
BIN_NAME = "model.bin"
GATES_NAME = "gates.json"
# The files an export writes into its folder, in the order they are put in place (model.xml last:
# a reader sees the old model, no model, or the new one, never the new weights under the old graph).
IR_FILES = (BIN_NAME, GATES_NAME, XML_NAME)
FORMAT_NAME = "colorizer-sketch2color-openvino"
PRECISE_ATTRIBUTE = "precise"  # OpenVINO's DisablePrecisionConversion runtime attribute in IR XML
INSTALL_HINT = "pip install 'colorizer[openvino]' (or: pip install openvino nncf)"
CALIBRATION_SEED = 4242  # synthetic stream for int8 calibration (not the trainer's 0, not the eval seed)
DEFAULT_CALIBRATION_COUNT = 32
CALIBRATION_SIZE = 256
FUNCTIONAL_L1_TOLERANCE = 1.0  # 0-255 units: the engine's eval L1 within 1/255 of the fp32 model's
FUNCTIONAL_COUNT = 32
FUNCTIONAL_SIZE = 256


def openvino_missing() -> str | None:
    """None when OpenVINO imports here, else the one-line reason."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return f"OpenVINO is not installed; {INSTALL_HINT}"
    return None


def require_openvino():
    missing = openvino_missing()
    if missing:
        raise MissingDependencyError(missing)
    import openvino as ov

    return ov


@functools.cache
def shared_core():
    """The process's one ``openvino.Core``: every OpenVINO call of this package goes through it.

    Why one. The CPU plugin gives the thread that creates it an alternate signal stack of its own
    (``sigaltstack``, sized for AMX state) and, when the plugin is destroyed, unmaps that stack but
    restores the previous one only if its own is still the current one. Two plugin instances (two
    Cores, e.g. two runners) released in creation order therefore leave the thread's signal stack
    pointing at unmapped memory, and the next Python signal handler on that thread (Ctrl-C, SIGTERM,
    the SIGCHLD handler of a DataLoader with workers) is a segfault instead of its exception.
    Measured with OpenVINO 2026.4.1 (tests/export/test_openvino_signals.py). One Core held for the
    life of the process holds one CPU plugin, whose stack stays mapped; short-lived Cores that NNCF
    opens inside it nest and unwind in order.
    """
    return require_openvino().Core()


def openvino_has_bf16() -> bool:
    """True when OpenVINO's CPU plugin lists BF16 among this CPU's capabilities (AVX-512 BF16, AMX).
    Without it a bf16 IR's precision hint gives f32 execution: right, but not faster. (OpenVINO's own
    view; torch's, which decides eager autocast, is ``colorizer.hardware.cpu_has_fast_bf16``.)"""
    return "BF16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class PrecisionNote(UserWarning):
    """A reduced-precision export that is right but not faster (or slow to gate) on this CPU."""


def bf16_notes(runner=None) -> list[str]:
    """What a bf16 export does on this CPU when it lacks bf16 hardware, one line each (empty where it
    has it): the eager bf16 reference of the gate takes torch's slow path, and the engine (``runner``,
    from what the plugin really compiled) runs its convolutions in f32."""
    from colorizer.hardware import cpu_has_fast_bf16

    notes = []
    if runner is None and not cpu_has_fast_bf16():
        notes.append(
            "this CPU has no fast bf16 for torch (no AVX-512 BF16 or AMX): the parity gate's eager bf16 "
            "reference runs torch's slow path, several times slower than fp32 (measured ~7x)"
        )
    if runner is not None:
        convs = {k.split(":")[1] for k in runner.runtime_precisions() if k.startswith("Convolution:")}
        if "bf16" not in convs:
            notes.append(
                "OpenVINO runs this bf16 IR in f32 on this CPU (no bf16 hardware): its results are right "
                "but it is not faster than --precision fp32; a CPU with AVX-512 BF16 or AMX runs it in bf16"
            )
    return notes


def require_nncf():
    try:
        import nncf
    except ImportError as exc:
        raise MissingDependencyError(f"int8 quantization needs NNCF; {INSTALL_HINT}") from exc
    return nncf


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def check_keep(keep) -> tuple[str, ...]:
    keep = tuple(keep)
    unknown = [k for k in keep if k not in KEEP_FP32]
    if unknown:
        raise ConfigError(f"unknown fp32 node group(s) {', '.join(unknown)}; choose from {', '.join(KEEP_FP32)}")
    return keep


# ------------------------------------------------------------------------------------------------
# Graph rewrites and node groups


def exact_integer_division(model) -> int:
    """Replace every int32 Divide by a power-of-two constant with BitwiseRightShift (exact on the CPU
    plugin; the operands are non-negative, see seeded_noise). Returns how many were replaced."""
    import openvino as ov
    import openvino.opset15 as ops

    replaced = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Divide" or node.get_output_element_type(0) != ov.Type.i32:
            continue
        divisor = node.input_value(1).get_node()
        if divisor.get_type_name() != "Constant":
            continue
        values = np.unique(divisor.get_data())
        if values.size != 1 or values[0] <= 0 or int(values[0]) & (int(values[0]) - 1):
            raise RuntimeError(f"{node.get_friendly_name()}: integer Divide by {values}, not a power of two")
        shift = ops.constant(np.array(int(values[0]).bit_length() - 1, dtype=np.int32))
        new = ops.bitwise_right_shift(node.input_value(0), shift)
        new.set_friendly_name(node.get_friendly_name())
        node.output(0).replace(new.output(0))
        replaced += 1
    return replaced


def _consumers(node):
    for output in node.outputs():
        for target in output.get_target_inputs():
            yield target.get_node()


def _reachable(starts, stop_types=("ShapeOf",)) -> set[str]:
    """Friendly names of the nodes reachable from ``starts`` along data edges (not through ShapeOf)."""
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        for consumer in _consumers(node):
            name = consumer.get_friendly_name()
            if name in seen or consumer.get_type_name() in stop_types:
                continue
            seen.add(name)
            stack.append(consumer)
    return seen


def node_groups(model) -> dict[str, set[str]]:
    """The friendly names of each ``KEEP_FP32`` group in an OpenVINO model of our graph."""
    params = {p.get_friendly_name(): p for p in model.get_parameters()}
    image_path = _reachable([params[n] for n in ("sketch", "palette") if n in params])
    groups = {"noise": set(), "output": set(), "attention": set()}
    if "seed" in params:
        groups["noise"] = _reachable([params["seed"]]) - image_path
    ops_by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    # Everything from the last convolution to the output (bias add, tanh).
    result = model.get_results()[0]
    node = result.input_value(0).get_node()
    tail = set()
    while node.get_type_name() not in ("Convolution", "Parameter"):
        tail.add(node.get_friendly_name())
        node = node.input_value(0).get_node()
    if node.get_type_name() == "Convolution":
        tail.add(node.get_friendly_name())
        tail |= {c.get_friendly_name() for c in _consumers(node)}
    groups["output"] = tail
    # Attention gates: a convolution to one channel, then its instance norm, up to the sigmoid.
    for op in ops_by_name.values():
        if op.get_type_name() != "Convolution" or op.get_output_partial_shape(0)[1].get_length() != 1:
            continue
        if op.get_friendly_name() in tail:
            continue
        members = {op.get_friendly_name()}
        frontier = [op]
        while frontier:
            current = frontier.pop()
            for consumer in _consumers(current):
                name = consumer.get_friendly_name()
                if name in members:
                    continue
                members.add(name)
                if consumer.get_type_name() != "Sigmoid":
                    frontier.append(consumer)
        groups["attention"] |= members
    return groups


def mark_fp32(xml_path: str, names: set[str]) -> int:
    """Give the layers named ``names`` in the IR at ``xml_path`` the ``precise`` runtime attribute
    (OpenVINO's DisablePrecisionConversion: the CPU plugin keeps them in their fp32 precision).
    Rewrites the XML in place; returns how many layers were marked."""
    tree = ET.parse(xml_path)
    marked = 0
    for layer in tree.getroot().iter("layer"):
        if layer.get("name") not in names:
            continue
        rt_info = layer.find("rt_info")
        if rt_info is None:
            rt_info = ET.Element("rt_info")
            data = layer.find("data")
            layer.insert(list(layer).index(data) + 1 if data is not None else 0, rt_info)
        if not any(a.get("name") == PRECISE_ATTRIBUTE for a in rt_info.findall("attribute")):
            ET.SubElement(rt_info, "attribute", {"name": PRECISE_ATTRIBUTE, "version": "0"})
        marked += 1
    tree.write(xml_path, encoding="utf-8", xml_declaration=True)
    return marked


def count_fp32_marks(model) -> int:
    """Nodes of a read IR that carry the DisablePrecisionConversion attribute."""
    return sum(1 for op in model.get_ordered_ops() if "DisablePrecisionConversion_0" in op.get_rt_info())


# ------------------------------------------------------------------------------------------------
# Calibration (int8)


def calibration_samples(
    noise: str, folder: str | None = None, count: int = DEFAULT_CALIBRATION_COUNT, size: int = CALIBRATION_SIZE
) -> list[dict[str, np.ndarray]]:
    """``count`` single-image input dicts (the graph's input names) for int8 calibration.

    Built-in synthetic drawings (stream CALIBRATION_SEED), or the pictures in ``folder`` (largest
    centered square resized to ``size``, XDoG line art, as ``colorizer.scoring.folder_set``); each
    with its own palette and noise seed i.
    """
    from colorizer.export.seeded_noise import seeded_noise

    if folder is not None:
        from colorizer.scoring import folder_set

        data = folder_set(folder, count, size)
    else:
        from colorizer.scoring import synthetic_set

        data = synthetic_set(count, size, CALIBRATION_SEED)
    samples = []
    for i in range(len(data)):
        sketch = data.sketches[i : i + 1].expand(1, 3, -1, -1).contiguous().float()
        palette = data.palettes[i : i + 1].float() / 255.0 * 2.0 - 1.0
        seed = torch.tensor([i], dtype=torch.int32)
        feed = {"sketch": sketch.numpy(), "palette": palette.numpy()}
        if noise == "seeded":
            feed["seed"] = seed.numpy()
        elif noise == "input":
            for name, m in zip(input_names(noise)[2:], seeded_noise(seed, size, size)):
                feed[name] = m.numpy()
        samples.append(feed)
    return samples


def quantize_int8(model, samples, ignored: set[str]):
    """NNCF post-training int8 quantization of an OpenVINO model; ``ignored`` node names stay fp32."""
    nncf = require_nncf()
    dataset = nncf.Dataset(samples)
    return nncf.quantize(
        model,
        dataset,
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(samples),
        fast_bias_correction=True,
        ignored_scope=nncf.IgnoredScope(names=sorted(ignored), validate=False),
    )


# ------------------------------------------------------------------------------------------------
# Runner


class OpenVinoRunner(EngineRunner):
    """An OpenVINO IR (``model.xml``) compiled for the CPU plugin, at the precision it was exported for.

    threads: the plugin's INFERENCE_NUM_THREADS (default: OpenVINO's choice). precision_hint
    overrides the IR's recorded inference precision (benchmarks only).

    requests: None (default) compiles for latency (``PERFORMANCE_HINT=LATENCY``) and runs a batch as one
    inference. A number, or ``"auto"`` (the plugin's OPTIMAL_NUMBER_OF_INFER_REQUESTS), compiles for
    throughput (the plugin's streams) and runs each picture of a batch as its own single-picture request
    through an ``AsyncInferQueue`` of that many requests: several pictures at once without a batch, so a
    picture's result does not depend on the others (every request has the shape of one picture). Measured
    on 2 CPU cores, the bundled model at 256 px: 4 pictures at once 8.2 images/s this way against 5.3 as
    one batch of 4 and 5.9 one by one (``benchmarks/bench_serve.py``). ``colorizer serve`` uses it.
    """

    def __init__(
        self,
        path: str,
        device="cpu",
        threads: int | None = None,
        precision_hint: str | None = None,
        requests: int | str | None = None,
    ):
        require_openvino()  # one line if OpenVINO is missing, before anything else
        self.device = torch.device(device)
        if self.device.type != "cpu":
            raise ConfigError(f"device {self.device}: an OpenVINO engine runs on the CPU here (cpu)", option="device")
        if os.path.isdir(path):
            path = os.path.join(path, XML_NAME)
        self.path = path
        core = shared_core()
        try:
            model = core.read_model(path)
        except RuntimeError as exc:
            raise ConfigError(f"OpenVINO cannot read {path}: {str(exc).splitlines()[0]}") from exc
        self.metadata = read_openvino_metadata(model)
        if self.metadata.get("format") != FORMAT_NAME:
            raise ConfigError(f"{path} is not a colorizer OpenVINO export (no colorizer metadata)")
        self.noise = self.metadata["noise_mode"]
        self.precision = self.metadata.get("precision", "fp32")
        if self.noise not in NOISE_MODES:
            raise ConfigError(f"{path} is not a colorizer export (noise mode {self.noise!r} in its metadata)")
        self.input_names = input_names(self.noise)
        check_signature(path, self.noise, _ov_tensors(model, [*self.input_names, OUTPUT_NAME]))
        if requests is not None and requests != "auto" and (isinstance(requests, bool) or int(requests) < 1):
            raise ConfigError(f"requests must be a positive number or 'auto', got {requests!r}", option="requests")
        config = {
            "INFERENCE_PRECISION_HINT": precision_hint or self.metadata.get("inference_precision", "f32"),
            "PERFORMANCE_HINT": "LATENCY" if requests is None else "THROUGHPUT",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.model = model
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.queue = None
        self.requests = 1
        if requests is not None:
            import openvino as ov

            optimal = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self.requests = optimal if requests == "auto" else int(requests)
            self.queue = ov.AsyncInferQueue(self.compiled, self.requests)
            self.queue.set_callback(self._finished)

    def run(self, sketch, palette, *noise_inputs) -> torch.Tensor:
        tensors = (sketch, palette, *noise_inputs)
        if len(tensors) != len(self.input_names):
            raise ValueError(f"{self.path} takes {self.input_names}, got {len(tensors)} tensors")
        feed = {}
        for name, t in zip(self.input_names, tensors):
            dtype = torch.int32 if name == "seed" else torch.float32
            feed[name] = t.detach().to("cpu", dtype).contiguous().numpy()
        if self.queue is None:
            self.request.infer(feed)
            return torch.from_numpy(self.request.get_tensor(OUTPUT_NAME).data.copy())
        n = tensors[0].shape[0]
        outputs: list = [None] * n
        for i in range(n):  # one single-picture request each; the queue runs up to self.requests at once
            self.queue.start_async({name: value[i : i + 1] for name, value in feed.items()}, (outputs, i))
        self.queue.wait_all()
        return torch.from_numpy(np.concatenate(outputs))

    @staticmethod
    def _finished(request, userdata) -> None:
        outputs, i = userdata
        outputs[i] = request.get_tensor(OUTPUT_NAME).data.copy()

    def runtime_precisions(self) -> dict[str, int]:
        """(layer type, runtime precision) -> count in the compiled graph (what the plugin really runs)."""
        counts: dict[str, int] = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            key = f"{info['layerType'].astype(str)}:{info['runtimePrecision'].astype(str)}"
            counts[key] = counts.get(key, 0) + 1
        return counts


_OV_ELEMENT = {"f32": "float32", "i32": "int32"}


def _ov_tensors(model, expected_names) -> list[tuple[str, str, list[int | None] | None]]:
    """(name, element type, shape) of an ov.Model's inputs then outputs, for ``check_signature``.
    A port can carry several names; the one among ``expected_names`` is used when present."""
    tensors = []
    for port in [*model.inputs, *model.outputs]:
        names = port.get_names()
        name = next((n for n in expected_names if n in names), min(names) if names else "?")
        element = port.get_element_type().get_type_name()
        shape = port.get_partial_shape()
        dims = None if shape.rank.is_dynamic else [d.get_length() if d.is_static else None for d in shape]
        tensors.append((name, _OV_ELEMENT.get(element, element), dims))
    return tensors


def read_openvino_metadata(model) -> dict[str, str]:
    """The ``colorizer`` rt_info section of an OpenVINO model (a path or an ov.Model) as a dict."""
    if isinstance(model, str):
        model = shared_core().read_model(model)
    if not model.has_rt_info(["colorizer"]):
        return {}
    return {key: model.get_rt_info(["colorizer", key]).astype(str) for key in model.get_rt_info()["colorizer"]}


# ------------------------------------------------------------------------------------------------
# Gates


def verify_openvino(runner: OpenVinoRunner, model: UNetGenerator, *, precision: str, cases=None):
    """Numerical gate: relative L2 vs float64 at most LOW_PRECISION_GATES[precision] x the error of
    the eager CPU model in fp32 (fp32) or under autocast bf16 (bf16, int8)."""
    from colorizer.export.verify import runner_parity
    from colorizer.testing import LOW_PRECISION_GATES

    return runner_parity(
        runner,
        model,
        backend=f"openvino:{precision}",
        cases=cases,
        factor=LOW_PRECISION_GATES[precision],
        autocast=None if precision == "fp32" else torch.bfloat16,
    )


def verify_runner(runner: OpenVinoRunner, model: UNetGenerator, *, cases=None):
    """The OpenVINO row's verifier (colorizer.export.formats): the numerical gate at the precision
    the IR records (``runner.precision``, from its rt_info). ``export_openvino`` gates with it too."""
    return verify_openvino(runner, model, precision=runner.precision, cases=cases)


@dataclass
class FunctionalReport:
    """The functional gate: eval metrics of the engine and of the fp32 model on the same drawings."""

    artifact: str
    count: int
    size: int
    engine: dict
    reference: dict
    l1_tolerance: float = FUNCTIONAL_L1_TOLERANCE

    @property
    def l1_difference(self) -> float:
        return abs(self.engine["l1"] - self.reference["l1"])

    @property
    def passed(self) -> bool:
        return (
            self.l1_difference <= self.l1_tolerance
            and self.engine["swap_following"] == self.reference["swap_following"]
        )

    def format(self) -> str:
        e, r = self.engine, self.reference
        verdict = "ok" if self.passed else "FAIL"
        return (
            f"functional gate of {self.artifact} ({self.count} synthetic drawings at {self.size} px): "
            f"L1 {e['l1']:.3f} vs fp32 {r['l1']:.3f} (|diff| {self.l1_difference:.3f}, allowed "
            f"{self.l1_tolerance:g}/255); swap following {e['swap_following']:.3f} vs fp32 "
            f"{r['swap_following']:.3f}  {verdict}"
        )

    def raise_if_failed(self, what: str) -> None:
        from colorizer.export.verify import ParityError

        if not self.passed:
            raise ParityError(f"{what} failed its functional gate: {self.format()}; nothing was written", self)


def functional_gate(runner, model: UNetGenerator, *, count: int | None = None, size: int | None = None):
    """Score the engine ``runner`` and the eager fp32 ``model`` with colorizer.scoring on the same drawings,
    both through the runtime seam's Runner (colorizer.runtime.runner)."""
    from colorizer.runtime.runner import EngineRunner, ModuleRunner
    from colorizer.scoring import colorize_set, score_outputs, synthetic_set

    count, size = count or FUNCTIONAL_COUNT, size or FUNCTIONAL_SIZE
    data = synthetic_set(count, size)
    reference = ModuleRunner(model, "cpu", "eager")  # a folded copy, on the eager ops
    engine = EngineRunner(runner, format="openvino", backend="openvino")
    scores = {}
    for name, evaluated in (("engine", engine), ("reference", reference)):
        own, swapped = colorize_set(evaluated, data)
        scores[name] = score_outputs(data, own, swapped)[0]
    return FunctionalReport(runner.path, len(data), size, scores["engine"], scores["reference"])


# ------------------------------------------------------------------------------------------------
# The output folder: only our files are written, nothing else in it is touched


def is_own_ir(xml_path: str) -> bool:
    """True when ``xml_path`` is an IR written by ``export_openvino`` (our ``format`` in its rt_info).
    Read as XML, without OpenVINO: a foreign or broken file is simply not ours."""
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError):
        return False
    node = root.find("rt_info/colorizer/format")
    return root.tag == "net" and node is not None and node.get("value") == FORMAT_NAME


def check_ir_folder(folder: str) -> str:
    """Absolute ``folder`` after checking that an IR can be written there under the overwrite rule:
    a new folder (its parent writable), or a writable folder whose ``model.xml`` / ``model.bin`` /
    ``gates.json`` are absent or an export of ours (``is_own_ir`` of its model.xml). Other files in
    the folder are the user's: never replaced nor deleted. ConfigError (one line) otherwise."""
    folder = os.path.abspath(folder)
    if not os.path.lexists(folder):
        return check_output_folder(folder, "OpenVINO folder")
    if not os.path.isdir(folder):
        raise ConfigError(f"OpenVINO folder {folder} exists and is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write OpenVINO folder {folder}: it is not writable")
    xml = os.path.join(folder, XML_NAME)
    ours = os.path.isfile(xml) and not os.path.islink(xml) and is_own_ir(xml)
    for name in sorted(IR_FILES, key=lambda n: n != XML_NAME):  # the graph decides: named first
        path = os.path.join(folder, name)
        if os.path.lexists(path) and not (ours and os.path.isfile(path) and not os.path.islink(path)):
            raise ConfigError(
                f"OpenVINO folder {folder} holds a {name} that is not part of an export of colorizer-export, "
                "which replaces only its own files; move it away or choose another --openvino folder"
            )
    return folder


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _put_ir_in_place(built: str, folder: str) -> None:
    """Move the complete, gated IR files from ``built`` into ``folder``, under the folder's lock,
    after checking the folder again (another export or the user may have written meanwhile)."""
    from colorizer import atomic
    from colorizer.export.artifact import folder_lock

    for name in IR_FILES:
        _fsync_file(os.path.join(built, name))
    with folder_lock(folder):
        check_ir_folder(folder)
        xml = os.path.join(folder, XML_NAME)
        if os.path.lexists(xml):
            os.unlink(xml)  # the old graph goes first: no reader pairs it with the new weights
        for name in IR_FILES:
            source, target = os.path.join(built, name), os.path.join(folder, name)
            try:
                if os.path.lexists(target):  # ours: checked above, under the lock
                    atomic.commit_replace(source, target)
                else:
                    atomic.commit_new(source, target)
            except FileExistsError:
                raise ConfigError(
                    f"{target} was created by someone else during the export; it was left as it is"
                ) from None


# ------------------------------------------------------------------------------------------------
# Export


@dataclass
class OpenVinoExport:
    """What ``export_openvino`` wrote."""

    folder: str
    xml: str
    precision: str
    noise: str
    keep_fp32: tuple[str, ...]
    fp32_nodes: int
    metadata: dict[str, str]
    parity: object | None = None
    functional: FunctionalReport | None = None
    notes: list[str] = field(default_factory=list)


def convert_onnx(onnx_path: str):
    """ov.Model from our exported ONNX file, with integer divisions made exact."""
    ov = require_openvino()
    model = ov.convert_model(onnx_path)
    exact_integer_division(model)
    return model


def export_openvino(
    model: UNetGenerator | str,
    folder: str,
    *,
    precision: str = DEFAULT_PRECISION,
    noise: str = "seeded",
    keep_fp32=DEFAULT_KEEP_FP32,
    calibration: str | None = None,
    calibration_count: int = DEFAULT_CALIBRATION_COUNT,
    onnx_path: str | None = None,
    source_sha256: str | None = None,
    verify: bool = True,
    functional: bool = True,
    cases=None,
    functional_count: int | None = None,
    functional_size: int | None = None,
) -> OpenVinoExport:
    """Export a Sketch2Color generator (or a checkpoint path) to an OpenVINO IR folder.

    folder gets ``model.xml``, ``model.bin`` and ``gates.json``, built in a hidden temporary folder
    inside it and moved into place only after the gates pass (``verify``: numerical, ``functional``:
    colorizer.scoring), so a failure leaves nothing (ParityError, exit code 3; a folder created
    for the export is removed again). An existing folder may hold other files: they are never
    touched; our three names must be absent or an export of ours (``check_ir_folder``), checked
    before any work and again, under the folder's lock, when the files are put in place.
    onnx_path: an already exported and gated ONNX file of the same model and noise mode (else one
    is exported to a scratch folder). keep_fp32:
    node groups kept in fp32 (KEEP_FP32). calibration: a folder of pictures for int8 (default: the
    built-in synthetic drawings).
    """
    check_precision(precision)
    check_noise_mode(noise)
    keep = check_keep(keep_fp32)
    if isinstance(model, str):
        model, source_sha256 = load_colorizer_file(model)
    check_colorizer(model)
    folder = check_ir_folder(folder)
    if calibration is not None and precision != "int8":
        raise ConfigError("calibration is only used with precision int8", option="calibration")
    if calibration is not None and not os.path.isdir(calibration):
        raise ConfigError(f"calibration folder {calibration} does not exist")
    ov = require_openvino()
    if precision == "int8":
        require_nncf()
    from colorizer import atomic

    with atomic.scratch_directory("colorizer-openvino-") as scratch:
        if onnx_path is None:
            onnx_path = os.path.join(scratch, "model.onnx")
            export_onnx(model, onnx_path, noise=noise, source_sha256=source_sha256, verify=False)
        ov_model = convert_onnx(onnx_path)
        groups = node_groups(ov_model)
        fp32_names = set().union(*(groups[g] for g in keep)) if keep else set()
        if precision == "int8":
            samples = calibration_samples(noise, calibration, calibration_count)
            ov_model = quantize_int8(ov_model, samples, fp32_names)
        metadata = graph_metadata(model, noise, DEFAULT_OPSET, source_sha256)
        metadata.update(
            format=FORMAT_NAME,
            precision=precision,
            inference_precision=INFERENCE_PRECISION[precision],
            keep_fp32=",".join(keep) or "none",
            openvino_version=ov.__version__,
            converted_from="ONNX (colorizer.export.export_onnx), integer Divide -> BitwiseRightShift",
        )
        if precision == "int8":
            metadata["calibration"] = calibration or f"synthetic drawings (seed {CALIBRATION_SEED})"
            metadata["calibration_count"] = str(calibration_count)
        metadata.pop("opset", None)
        notes: list[str] = []
        created = False
        try:
            os.mkdir(folder, 0o777)
            created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create OpenVINO folder {folder}: {exc.strerror or exc}") from exc
        try:
            tmp = atomic.make_temp_directory(os.path.join(folder, XML_NAME))
        except OSError as exc:
            if created:
                os.rmdir(folder)
            raise ConfigError(f"cannot write OpenVINO folder {folder}: {exc.strerror or exc}") from exc
        try:
            xml = os.path.join(tmp, XML_NAME)
            for key, value in metadata.items():
                ov_model.set_rt_info(value, ["colorizer", key])
            ov.save_model(ov_model, xml, compress_to_fp16=False)
            marked = mark_fp32(xml, fp32_names) if precision != "fp32" else 0
            runner = OpenVinoRunner(xml)
            if count_fp32_marks(runner.model) != marked:
                raise RuntimeError(f"OpenVINO read {count_fp32_marks(runner.model)} fp32 marks of {marked}")
            runner.path = os.path.join(folder, XML_NAME)
            if precision == "bf16":  # right but not faster (or slow to gate) where bf16 hardware is absent
                for note in bf16_notes() + bf16_notes(runner):
                    notes.append(note)
                    warnings.warn(note, PrecisionNote, stacklevel=2)
            parity = functional_report = None
            if verify:
                parity = verify_runner(runner, model, cases=cases)  # at the precision the IR records
                parity.raise_if_failed(f"OpenVINO {precision} export {folder}")
            if functional:
                functional_report = functional_gate(
                    runner, model, count=functional_count or FUNCTIONAL_COUNT, size=functional_size or FUNCTIONAL_SIZE
                )
                functional_report.raise_if_failed(f"OpenVINO {precision} export {folder}")
            gates = {
                "format": FORMAT_NAME,
                "parity": [asdict(c) | {"passed": c.passed} for c in parity.cases] if parity else None,
                "functional": functional_report.format() if functional_report else None,
            }
            with open(os.path.join(tmp, GATES_NAME), "w") as f:
                json.dump(gates, f, indent=2)
                f.write("\n")
            del runner  # its compiled model maps the temporary files
            _put_ir_in_place(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only while still empty: never a file someone else put there
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return OpenVinoExport(
        folder=folder,
        xml=os.path.join(folder, XML_NAME),
        precision=precision,
        noise=noise,
        keep_fp32=keep,
        fp32_nodes=marked,
        metadata=metadata,
        parity=parity,
        functional=functional_report,
        notes=notes,
    )


# ------------------------------------------------------------------------------------------------
# The colorizer-export step (colorizer.export.formats)


def cli_options(parser) -> None:
    parser.add_argument(
        "--calibration", metavar="DIR", help="pictures to calibrate int8 on (default: synthetic drawings)"
    )
    parser.add_argument(
        "--keep-fp32",
        default=",".join(DEFAULT_KEEP_FP32),
        help=f"OpenVINO node groups kept in fp32 at bf16/int8: comma list of {','.join(KEEP_FP32)} or none",
    )


def cli_check(args, batch, size) -> None:
    """The --openvino options, checked before any work (so a bad option writes nothing)."""
    if args.calibration and not (args.openvino and args.precision == "int8"):
        raise ConfigError("--calibration is only used with --openvino and --precision int8")
    if not args.openvino:
        return
    check_ir_folder(args.openvino)
    check_precision(args.precision or DEFAULT_PRECISION)
    args.keep_fp32 = check_keep(() if args.keep_fp32 in ("", "none") else args.keep_fp32.split(","))
    if args.calibration and not os.path.isdir(args.calibration):
        raise ConfigError(f"--calibration {args.calibration}: not a folder")
    missing = openvino_missing()
    if missing:
        raise MissingDependencyError(f"--openvino: {missing}")
    if args.precision == "int8":
        require_nncf()


def cli_export(job):
    """Convert (and gate, numerically and functionally) the job's ONNX graph into the IR folder."""
    from colorizer.export.formats import Exported

    args = job.args
    result = export_openvino(
        job.model,
        args.openvino,
        precision=args.precision or DEFAULT_PRECISION,
        noise=args.noise,
        keep_fp32=args.keep_fp32,
        calibration=args.calibration,
        onnx_path=job.outputs["onnx"].path,
        source_sha256=job.sha256,
    )
    message = (
        f"wrote {result.xml} ({result.precision}, noise {args.noise}, "
        f"fp32 node groups: {','.join(result.keep_fp32) or 'none'})"
    )
    return Exported(result, message, (result.parity, result.functional))
