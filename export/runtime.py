"""Run an exported generator: ``load_engine(path)`` for a ``.onnx`` (onnxruntime), ``.plan`` (TensorRT) or
``model.xml`` (OpenVINO, ``colorizer.export.openvino.OpenVinoRunner``).

The returned runner is called like the eager model inside ``colorizer.inference.Colorizer``::

    runner = load_engine("model.onnx", device="cpu")      # or "model.plan", device="cuda"
    image = runner(x, seed=0)

- ``x``: float32 torch tensor (N, 30, H, W), the generator input cat(sketch, palette planes) in
  [-1, 1] with H, W multiples of 128 (``colorizer.palette.palette_planes`` makes the planes; they
  must be constant per plane, since the engine takes the 9 colors, read from pixel (0, 0)).
- ``seed``: int (sample i uses ``seed + i``) or an int tensor (N,) of per-sample seeds in
  [0, 2**31). Engines exported with noise ``seeded`` compute the noise in the graph from it; ``input``
  engines get the same maps computed here (``colorizer.export.seeded_noise``); ``zero`` ignores it.
- returns float32 (N, 3, H, W) in [-1, 1] on ``x``'s device.

``runner.run(sketch, palette, *noise_inputs)`` takes the graph's own inputs instead (sketch
(N, 3, H, W), palette (N, 9, 3) in [-1, 1], then the seed (N,) int32 or the eight noise maps).
Inputs on the CPU or a CUDA device both work; a TensorRT runner moves them to its GPU, an
onnxruntime runner binds CUDA tensors directly when it runs the CUDA execution provider.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from colorizer.errors import ConfigError, MissingDependencyError
from colorizer.export.interface import FORMAT_NAME, NOISE_INPUT_NAMES, NOISE_MODES, OUTPUT_NAME, split_generator_input
from colorizer.export.seeded_noise import seeded_noise
from colorizer.limits import check_seed_tensor


def check_signature(path: str, noise: str, tensors) -> None:
    """ConfigError (one line) unless ``tensors``, (name, element type, shape) of a file's inputs in
    order and then its output(s), are those of our graph in ``noise`` mode
    (``onnx_export.graph_signature``): element types equal, ranks equal, fixed dimensions equal
    where the file fixes them. The engines' second check after their metadata."""
    from colorizer.export.interface import graph_signature

    expected = graph_signature(noise)
    tensors = list(tensors)
    names = [name for name, _, _ in tensors]
    if names != list(expected):
        raise ConfigError(f"{path} is not a colorizer export: its tensors are {names}, not {list(expected)}")
    for name, dtype, shape in tensors:
        want_type, want_shape = expected[name]
        shape = tuple(shape) if shape is not None else None
        ok = dtype == want_type and shape is not None and len(shape) == len(want_shape)
        ok = ok and all(w is None or g is None or g == w for g, w in zip(shape, want_shape))
        if not ok:
            raise ConfigError(
                f"{path} is not a colorizer export: {name} is {dtype} {_shape_text(shape)}, "
                f"expected {want_type} {_shape_text(want_shape)}"
            )


def _shape_text(shape) -> str:
    if shape is None:
        return "(unknown rank)"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _ort_dim(d):
    return d if isinstance(d, int) and d >= 0 else None


def noise_mode_from_inputs(names) -> str:
    if "seed" in names:
        return "seeded"
    if set(NOISE_INPUT_NAMES) <= set(names):
        return "input"
    return "zero"


class EngineRunner:
    """Common calling convention of the onnxruntime and TensorRT runners (see the module docstring)."""

    path: str
    noise: str
    device: torch.device

    def seeds(self, batch: int, seed) -> torch.Tensor:
        """Per-sample int32 seeds (N,): ``seed + i`` for an int, or the given tensor."""
        if isinstance(seed, torch.Tensor):
            seeds = seed.reshape(-1).to(torch.int64)
            if seeds.numel() != batch:
                raise ValueError(f"got {seeds.numel()} seeds for a batch of {batch}")
        else:
            from colorizer.limits import seed_sequence

            seeds = torch.tensor(seed_sequence(seed, batch), dtype=torch.int64)  # the one rule, colorizer.limits
        check_seed_tensor(seeds)
        return seeds.to(torch.int32)

    def noise_inputs(self, batch: int, height: int, width: int, seed) -> tuple[torch.Tensor, ...]:
        if self.noise == "zero":
            return ()
        seeds = self.seeds(batch, seed)
        if self.noise == "seeded":
            return (seeds,)
        return tuple(seeded_noise(seeds, height, width))

    def __call__(self, x: torch.Tensor, seed=0) -> torch.Tensor:
        sketch, palette = split_generator_input(x)
        n, _, h, w = sketch.shape
        out = self.run(sketch, palette, *self.noise_inputs(n, h, w, seed))
        return out.to(x.device)

    def run(self, sketch: torch.Tensor, palette: torch.Tensor, *noise_inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


_ORT_TYPES = {"tensor(float)": (np.float32, torch.float32), "tensor(int32)": (np.int32, torch.int32)}
_ORT_ELEMENT = {"tensor(float)": "float32", "tensor(int32)": "int32"}


class OnnxRunner(EngineRunner):
    """onnxruntime session over an exported .onnx (CPU, or the CUDA provider for device="cuda")."""

    def __init__(self, path: str, device: str | torch.device = "cpu", providers=None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("running an .onnx engine needs onnxruntime: pip install onnxruntime") from exc
        self.path = path
        self.device = torch.device(device)
        if providers is None:
            providers = ["CPUExecutionProvider"]
            if self.device.type == "cuda":
                if "CUDAExecutionProvider" not in ort.get_available_providers():
                    raise MissingDependencyError(
                        "onnxruntime here has no CUDA provider; pip install onnxruntime-gpu, or use --device cpu"
                    )
                providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0})]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for unreadable / invalid files
            raise ConfigError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}
        self.metadata = metadata = self.session.get_modelmeta().custom_metadata_map
        # Recognised by our metadata, then by its tensors: inputs that merely happen to be called
        # sketch and palette do not make a network a colorizer.
        if metadata.get("format") != FORMAT_NAME or metadata.get("noise_mode") not in NOISE_MODES:
            raise ConfigError(f"{path} is not a colorizer export (no colorizer metadata in the ONNX file)")
        self.noise = metadata["noise_mode"]
        tensors = [*self.session.get_inputs(), *self.session.get_outputs()]
        check_signature(
            path,
            self.noise,
            [
                (t.name, _ORT_ELEMENT.get(t.type, t.type), None if t.shape is None else [_ort_dim(d) for d in t.shape])
                for t in tensors
            ],
        )
        self.on_cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"

    def run(self, sketch, palette, *noise_inputs) -> torch.Tensor:
        tensors = (sketch, palette, *noise_inputs)
        if len(tensors) != len(self.input_names):
            raise ValueError(f"{self.path} takes {self.input_names}, got {len(tensors)} tensors")
        if self.on_cuda:
            return self._run_cuda(tensors)
        feed = {}
        for name, t in zip(self.input_names, tensors):
            np_type, torch_type = _ORT_TYPES[self.input_types[name]]
            feed[name] = t.detach().to("cpu", torch_type).contiguous().numpy()
        (out,) = self.session.run([OUTPUT_NAME], feed)
        return torch.from_numpy(out)

    def _run_cuda(self, tensors) -> torch.Tensor:
        binding = self.session.io_binding()
        device = self.device if self.device.index is not None else torch.device("cuda", 0)
        keep = []
        for name, t in zip(self.input_names, tensors):
            np_type, torch_type = _ORT_TYPES[self.input_types[name]]
            t = t.detach().to(device, torch_type).contiguous()
            keep.append(t)
            binding.bind_input(name, "cuda", device.index, np_type, tuple(t.shape), t.data_ptr())
        sketch = keep[0]
        out = torch.empty((sketch.shape[0], 3, sketch.shape[2], sketch.shape[3]), dtype=torch.float32, device=device)
        binding.bind_output(OUTPUT_NAME, "cuda", device.index, np.float32, tuple(out.shape), out.data_ptr())
        torch.cuda.current_stream(device).synchronize()
        self.session.run_with_iobinding(binding)
        return out


def load_engine(path: str, device: str | torch.device = "cpu", **kwargs) -> EngineRunner:
    """A runner for an exported ``.onnx`` (onnxruntime), ``.plan`` / ``.engine`` (TensorRT) or
    ``model.xml`` (OpenVINO) file: the ``runner`` of its row in ``colorizer.export.formats``.

    Call it as ``runner(x (N, 30, H, W) float32, seed=0) -> (N, 3, H, W) float32`` (the module
    docstring has the details). Raises ConfigError for a missing or unknown file and
    MissingDependencyError when onnxruntime / TensorRT / a GPU is missing.
    """
    from colorizer.export.formats import format_for_path

    if not os.path.isfile(path):
        raise ConfigError(f"engine file {path} does not exist")
    fmt = format_for_path(path)
    if fmt.runner is None:
        raise ConfigError(f"{path}: {fmt.name} files cannot be run directly")
    return fmt.load_runner()(path, device=device, **kwargs)
