"""One interface that colorizes a batch, for a torch generator on any op backend and for every engine.

    runner = load_runner("demo")                       # colorizer.runtime.load
    out = runner.colorize(sketches, palettes, seeds)   # float32 (N, 3, H, W) in [-1, 1], on the CPU

``Runner.colorize`` takes

- ``sketches``: float (N, 1 or 3, H, W) in [-1, 1] (gray line art; one channel is repeated to three),
  H and W multiples of 128 up to 16384 (``colorizer.limits``);
- ``palettes``: uint8 (N, 9, 3) or (9, 3) for the whole batch;
- ``seeds``: one noise seed per picture (an int tensor (N,) or a sequence of N ints in ``[0, 2**31)``).

Every runner makes picture i's noise from ``seeds[i]`` alone, with the counter-based generator of
``colorizer.export.seeded_noise`` (the noise a ``seeded`` export computes in its graph): a picture is
the same whatever else is in its batch, and a checkpoint and its export get the same noise for the same
seed. (``Sketch2Color(x, noise=int)`` itself draws from torch's CPU generator; runners never do that.)

``ModuleRunner`` runs a torch generator: a folded copy (weight standardization precomputed), on the op
backend it is given, in channels_last when that backend is ``native`` (measured 1.35x over NCHW for the
folded generator at 256 px on the CPU). ``EngineRunner`` runs an exported engine (``colorizer.export``'s
runners: onnxruntime, OpenVINO, TensorRT) behind the same call.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Sequence

import torch

from colorizer.checkpoint import check_colorizer
from colorizer.errors import ConfigError
from colorizer.limits import check_model_size, check_seed

NOISE_CACHE = 256  # pictures whose noise maps a ModuleRunner keeps (about 0.35 MB each at 256 px)
# With ``keep_bits_across_thread_counts``, a CPU ModuleRunner runs convolutions of fewer output pixels than
# this on one thread (see ``one_thread_for_small_convolutions``).
SMALL_CONV_PIXELS = 64
_restore = threading.local()


def _small_conv_pre(module, args):
    x = args[0]
    threads = torch.get_num_threads() if x.shape[-2] * x.shape[-1] < SMALL_CONV_PIXELS else 1
    _restore.__dict__.setdefault("stack", []).append(threads if threads > 1 else None)
    if threads > 1:
        torch.set_num_threads(1)


def _small_conv_post(module, args, output):
    threads = _restore.stack.pop()
    if threads is not None:
        torch.set_num_threads(threads)


def one_thread_for_small_convolutions(model: torch.nn.Module) -> list:
    """Run ``model``'s convolutions over fewer than ``SMALL_CONV_PIXELS`` pixels (its deepest levels, a few
    pixels wide) on one thread, whatever the caller's thread count, so that a picture's bits do not depend on
    the thread count (the service runs a picture alone on all threads and side by side on fewer:
    ``colorizer.serve.batcher``). oneDNN gives 3x3 convolutions over 5 to 10 pixels (a 384x256 picture's
    3x2 level) a different order of summation on 1 and 2 threads (up to 2e-4 apart); on one thread both are
    the one-thread result. Forward hooks on every Conv2d, the thread count kept per thread (streams run the
    same module side by side); returns the hooks' handles. It costs the bundled model about 2% of a picture
    on 2 threads (paired calls), so only the service turns it on (``Runner.keep_bits_across_thread_counts``)."""
    handles = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            handles.append(module.register_forward_pre_hook(_small_conv_pre))
            handles.append(module.register_forward_hook(_small_conv_post))
    return handles


def check_seeds(seeds, count: int) -> list[int]:
    """``count`` per-picture seeds as ints, each in the seed range (ConfigError otherwise)."""
    if isinstance(seeds, torch.Tensor):
        if seeds.dtype.is_floating_point or seeds.dtype == torch.bool:
            raise ConfigError(f"seeds must be integers, got a {seeds.dtype} tensor", option="seeds")
        seeds = seeds.reshape(-1).tolist()
    elif isinstance(seeds, (int, str, bytes)) or not isinstance(seeds, Sequence):
        raise ConfigError(f"seeds must be one integer per picture (a sequence or a tensor), got {seeds!r}")
    values = [check_seed(s, "seed") for s in seeds]
    if len(values) != count:
        raise ConfigError(f"seeds: got {len(values)} seeds for {count} picture(s)", option="seeds")
    return values


class Runner:
    """The interface (module docstring). Subclasses define ``forward(x, seeds)``.

    name: what the user named (a path, a bundled name, a module's class); kind: "module", "checkpoint" (a
    training run folder is the checkpoint it resolves to), "bundled" or "engine"; path: the file actually
    read (None for a module);
    format: "torch" or the export format's name ("onnx", "openvino", "tensorrt"); precision: "fp32", or an
    engine's ("fp16", "bf16", "int8"); backend: the op backend of a torch generator, or what runs an engine
    ("onnxruntime", "openvino", "tensorrt"); noise: "seeded" (per-picture seeds), or an engine's "zero" /
    "input" mode; module: the generator a ModuleRunner runs (its folded copy), None for an engine.
    """

    def __init__(
        self,
        *,
        name: str,
        kind: str,
        path: str | None,
        format: str,
        precision: str,
        backend: str,
        device: torch.device,
        noise: str = "seeded",
    ):
        self.name, self.kind, self.path, self.format = name, kind, path, format
        self.precision, self.backend, self.device, self.noise = precision, backend, torch.device(device), noise
        self._sha256: str | None = None
        self.module: torch.nn.Module | None = None

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """x: float32 (N, 30, H, W) on ``self.device`` (the sketch, then the 27 palette planes); seeds: N
        checked ints. Returns (N, 3, H, W) in [-1, 1]."""
        raise NotImplementedError

    @torch.inference_mode()
    def colorize(self, sketches: torch.Tensor, palettes: torch.Tensor, seeds) -> torch.Tensor:
        """float (N, 1 or 3, H, W) sketches, uint8 (N, 9, 3) palettes, N seeds -> float32 (N, 3, H, W) on the CPU."""
        from colorizer.palette import palette_planes

        if sketches.dim() != 4 or sketches.shape[1] not in (1, 3):
            raise ConfigError(f"sketches must be (N, 1 or 3, H, W), got {tuple(sketches.shape)}", option="sketches")
        n, _, h, w = sketches.shape
        check_model_size(h, w, "sketch")
        seeds = check_seeds(seeds, n)
        palettes = torch.as_tensor(palettes)
        if palettes.dim() == 2:
            palettes = palettes.unsqueeze(0).expand(n, -1, -1)
        if tuple(palettes.shape) != (n, 9, 3):
            raise ConfigError(f"palettes must be (N, 9, 3) or (9, 3), got {tuple(palettes.shape)}", option="palettes")
        x = sketches.to(self.device, torch.float32).expand(-1, 3, -1, -1)
        planes = palette_planes(palettes.to(self.device), h, w).to(x.dtype)
        out = self.forward(torch.cat([x, planes], dim=1), seeds)
        return out.float().cpu()

    @property
    def sha256(self) -> str | None:
        """The sha256 of the file the weights came from (None for a module or a folder); computed once."""
        if self._sha256 is None and self.path is not None and os.path.isfile(self.path):
            from colorizer.pretrained import sha256_of

            self._sha256 = sha256_of(self.path)
        return self._sha256

    def keep_bits_across_thread_counts(self, on: bool = True) -> bool:
        """Make a picture's bits the same on any thread count (``on``), or stop; True if this runner now does
        what it can for that (the service still checks the bits: ``colorizer.serve.app.Service.check_streams``).
        An engine runs on its own runtime: False."""
        return False

    def describe(self) -> dict:
        """What runs, for reports and the service's /v1/model."""
        from colorizer.limits import MAX_SEED, MAX_SIDE, SIZE_MULTIPLE

        return {
            "name": self.name,
            "kind": self.kind,
            "path": self.path,
            "sha256": self.sha256,
            "format": self.format,
            "precision": self.precision,
            "backend": self.backend,
            "device": str(self.device),
            "noise": self.noise,
            "limits": {"size_multiple": SIZE_MULTIPLE, "max_side": MAX_SIDE, "max_seed": MAX_SEED},
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.format}/{self.backend}, {self.precision}, {self.device})"


class ModuleRunner(Runner):
    """A Sketch2Color module on ``backend`` (None: the module's own) and ``device``; the caller's module is
    not changed (the runner runs a folded copy)."""

    def __init__(
        self,
        generator: torch.nn.Module,
        device: str | torch.device = "cpu",
        backend: str | None = None,
        *,
        name: str | None = None,
        kind: str = "module",
        path: str | None = None,
    ):
        from colorizer.models import fold_weight_standardization

        check_colorizer(generator, name or "the model")
        if backend is not None and backend != generator.kernels:
            # The folded weights are standardized by the backend's own op (a copy: the caller's module stays).
            generator = copy.deepcopy(generator).set_kernels(backend)
        model = fold_weight_standardization(generator).to(device).eval()  # a copy
        backend = model.kernels
        super().__init__(
            name=name or type(generator).__name__,
            kind=kind,
            path=path,
            format="torch",
            precision="fp32",
            backend=backend,
            device=torch.device(device),
        )
        self.layout = torch.channels_last if backend == "native" else torch.contiguous_format
        self.module = model.to(memory_format=self.layout)
        self._small_conv_hooks: list = []
        # Eval colorizes each picture twice with the same seed: its noise maps are computed once. The lock
        # lets threads call colorize side by side (the service's streams, colorizer.serve.batcher).
        self._noise: dict[tuple[int, int, int], list[torch.Tensor]] = {}
        self._noise_lock = threading.Lock()

    def noise_for(self, seeds: list[int], height: int, width: int) -> list[torch.Tensor]:
        """The eight noise maps (noise7 .. noise0) of a batch, picture i's from ``seeds[i]`` alone."""
        from colorizer.export.seeded_noise import seeded_noise

        with self._noise_lock:
            missing = [s for s in dict.fromkeys(seeds) if (s, height, width) not in self._noise]
            if missing:
                if len(self._noise) + len(missing) > NOISE_CACHE:
                    self._noise.clear()
                maps = seeded_noise(torch.tensor(missing, dtype=torch.int32), height, width)
                for k, s in enumerate(missing):
                    self._noise[(s, height, width)] = [m[k : k + 1].to(self.device) for m in maps]
            per_seed = [self._noise[(s, height, width)] for s in seeds]
        return [torch.cat(level) for level in zip(*per_seed)]

    def keep_bits_across_thread_counts(self, on: bool = True) -> bool:
        """On a CPU: the small convolutions on one thread (``one_thread_for_small_convolutions``), with the
        native backend's thread-invariant ops that is every op of the model; off removes the hooks."""
        if self.device.type != "cpu":
            return False
        if on and not self._small_conv_hooks:
            self._small_conv_hooks = one_thread_for_small_convolutions(self.module)
        if not on:
            for handle in self._small_conv_hooks:
                handle.remove()
            self._small_conv_hooks = []
        return on

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        noise = self.noise_for(seeds, x.shape[-2], x.shape[-1])
        return self.module(x.contiguous(memory_format=self.layout), noise=noise)


class EngineRunner(Runner):
    """An exported engine (a runner of ``colorizer.export``: ``engine(x, seed=int tensor (N,))``)."""

    def __init__(self, engine, *, format: str, backend: str, name: str | None = None):
        path = getattr(engine, "path", None)
        super().__init__(
            name=name or path or type(engine).__name__,
            kind="engine",
            path=path,
            format=format,
            precision=getattr(engine, "precision", "fp32"),
            backend=backend,
            device=getattr(engine, "device", torch.device("cpu")),
            noise=getattr(engine, "noise", "seeded"),
        )
        self.engine = engine

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        return self.engine(x, seed=torch.tensor(seeds, dtype=torch.int64))
