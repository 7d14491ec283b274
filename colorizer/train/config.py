"""Training configuration: one dataclass, YAML/TOML files, presets and command-line overrides.

Precedence (later wins): the dataclass defaults (the reference's values, SPEC.md) < ``--preset NAME``
(``colorizer/configs/NAME.yaml``) < ``--config FILE.yaml|.toml`` < individual ``--option value`` flags.
Every field has a help text; ``build_parser`` turns the dataclass into argparse options, so ``--help``
documents every option.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass, field
from importlib import resources

from colorizer.data.registry import DATASET_KINDS
from colorizer.errors import ArgumentParser, ConfigError
from colorizer.losses import LOSS_TERMS, check_loss_fields

PRESETS = ("reference", "tiny", "demo")
AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
# Upper bounds, so that a typo fails in one line instead of exhausting memory or processes.
MAX_SIZE = 16384  # px: the largest side an exported model's in-graph noise allows
MAX_WORKERS = 64  # DataLoader processes
MAX_LENGTH = 10_000_000  # synthetic samples per epoch (the sampler holds a permutation of them)
LR_SCHEDULES = ("constant", "cosine")


def _f(default, help: str, **kw):  # noqa: A002 (argparse's word)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def _loss_weight(name: str):
    """The ``w_<name>`` field of a generator loss term: default and help from its LOSS_TERMS row."""
    term = next((t for t in LOSS_TERMS if t.name == name), None)
    if term is None:
        raise TypeError(f"TrainConfig: w_{name} has no row in colorizer.losses.LOSS_TERMS")
    return _f(term.default, term.help)


@dataclass
class TrainConfig:
    # data
    data: str = _f("pair", "data set kind: pair (Kaggle 1024x512 color|sketch PNGs), folder (color images), synthetic")
    data_root: str | None = _f(None, "data folder (pair: the train/ folder of the Kaggle set; folder: images)")
    sketch: str | None = _f(None, "sketch source passed to the data set (e.g. given, xdog, model); none = its default")
    sketch_model: str | None = _f(None, "Color2Sketch checkpoint, used when the data set yields no sketch (model)")
    size: int = _f(256, "training crop size in pixels (a multiple of 128)")
    length: int | None = _f(None, "size of the synthetic data set (none = its default); ignored by pair and folder")
    augment: bool = _f(True, "RandomResizedCrop + horizontal flip")
    workers: int = _f(2, "DataLoader worker processes (0 = load in the training process)")
    # model
    channels: tuple[int, ...] = _f((64, 128, 256, 512), "generator widths of encoder levels 1..4 (multiples of 64)")
    d_channels: tuple[int, ...] = _f((64, 128, 256, 512), "discriminator widths of its 4 conv layers (x32)")
    kernels: str = _f("eager", "op backend: a name in colorizer.ops.BACKENDS (eager = pure torch)")
    norm_groups: int = _f(32, "generator GroupNorm groups, a divisor of 32 (reference: 32; fewer for narrow widths)")
    # optimisation
    batch_size: int = _f(2, "images per step per process")
    epochs: int = _f(25, "number of epochs")
    max_steps: int = _f(0, "stop after this many steps in all (0 = no limit; counts the steps before a resume)")
    lr_g: float = _f(2e-4, "generator Adam learning rate")
    lr_d: float = _f(2e-4, "discriminator Adam learning rate")
    betas_g: tuple[float, float] = _f((0.5, 0.999), "generator Adam betas")
    betas_d: tuple[float, float] = _f((0.5, 0.999), "discriminator Adam betas")
    lr_g_norm: float | None = _f(
        None,
        "generator learning rate of its GroupNorm affines, conv biases and noise weights (none = lr_g); the "
        "weight-standardized convs are scale-free, so these set the output scale",
    )
    lr_schedule: str = _f("constant", "learning rate after the warmup: constant | cosine (to 0 at the last step)")
    warmup_steps: int = _f(0, "raise the learning rates linearly from 0 over the first N steps")
    # losses: one field w_<name> per generator loss term, in the order of colorizer.losses.LOSS_TERMS
    # (default and help from its row; check_loss_fields below fails at import when one is missing)
    w_gan: float = _loss_weight("gan")
    w_l1: float = _loss_weight("l1")
    w_feature: float = _loss_weight("feature")
    w_tv: float = _loss_weight("tv")
    vgg_weights: str | None = _f(None, "torchvision vgg16 state dict (.pth/.safetensors); none = no feature loss")
    # performance
    device: str = _f("auto", "auto | cpu | cuda (auto: cuda when available)")
    amp: str = _f(
        "none",
        "mixed precision: none | bf16 | fp16 on CUDA; on the CPU bf16 only where the CPU has native bf16 "
        "(AVX-512 BF16 or AMX), float32 otherwise (with a note)",
    )
    channels_last: bool = _f(False, "channels_last memory format (CUDA)")
    compile: bool = _f(False, "torch.compile the generator")
    # run
    out: str = _f(
        "runs/train",
        "output folder: checkpoints/, samples/, train_log.csv, loss_curve.png, config.yaml (a run folder's own "
        "config.yaml given to --config runs in that folder, whatever out it records)",
    )
    seed: int = _f(0, "random seed (model init, noise, data order, augmentation, palettes)")
    resume: str | None = _f(
        None,
        "auto (newest good checkpoint in OUT/checkpoints, or start fresh), a checkpoints/ folder or a training "
        "checkpoint file (not a bundled generator such as demo: it has no optimizer state)",
    )
    ckpt_every: int = _f(1000, "write a checkpoint every N steps (0 = only at epoch ends and at the end)")
    keep_last: int = _f(3, "number of checkpoints kept")
    log_every: int = _f(10, "append averaged losses to train_log.csv every N steps")
    sample_every: int = _f(500, "write a sample grid every N steps (0 = only at the end)")
    samples: int = _f(4, "rows in a sample grid")
    max_bad_steps: int = _f(5, "stop after this many steps in a row with a non-finite loss or gradient")
    progress: bool = _f(True, "show a progress bar")

    # Fields that may change between a run and its resume without making the run a different one.
    RUNTIME_FIELDS: typing.ClassVar[tuple[str, ...]] = (
        "data_root",
        "sketch_model",
        "workers",
        "epochs",
        "max_steps",
        "vgg_weights",
        "device",
        "compile",
        "out",
        "resume",
        "ckpt_every",
        "keep_last",
        "log_every",
        "sample_every",
        "samples",
        "max_bad_steps",
        "progress",
        "kernels",
    )

    # Fields added after runs were first written: hashed into the identity only when not at their
    # default, so a run started before they existed resumes without a config-mismatch warning.
    LATER_FIELDS: typing.ClassVar[dict[str, object]] = {
        "lr_g_norm": None,
        "lr_schedule": "constant",
        "warmup_steps": 0,
        "norm_groups": 32,
        **{term.config_field: term.default for term in LOSS_TERMS if term.added_later},
    }

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields()}

    def identity(self) -> dict:
        """The part of the config that defines the run (hashed into every checkpoint)."""
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in self.RUNTIME_FIELDS and not (k in self.LATER_FIELDS and v == self.LATER_FIELDS[k])
        }

    def validate(self) -> TrainConfig:
        """Raise ConfigError (one line) for the first bad value; return self."""

        def bad(name, why):
            raise ConfigError(f"{name}: {why} (got {getattr(self, name)!r})")

        if self.data not in DATASET_KINDS:  # the live registry, so a kind registered at run time is accepted
            bad("data", f"must be one of {', '.join(DATASET_KINDS)}")
        if DATASET_KINDS[self.data].needs_root and not self.data_root:
            raise ConfigError(f"data={self.data} needs --data-root FOLDER (or use --data synthetic)")
        if DATASET_KINDS[self.data].needs_root and _inside(self.out, self.data_root):
            raise ConfigError(
                f"out: the output folder {self.out} is inside the data folder {self.data_root}: its sample grids "
                "would be read as training pictures when the run is resumed; choose an output folder outside it"
            )
        if self.size < 128 or self.size % 128:
            bad("size", "must be a positive multiple of 128")
        if self.size > MAX_SIZE:
            bad("size", f"must be at most {MAX_SIZE} px")
        if self.workers > MAX_WORKERS:
            bad("workers", f"must be at most {MAX_WORKERS} processes")
        if self.length is not None and self.length > MAX_LENGTH:
            bad("length", f"must be at most {MAX_LENGTH:,} samples")
        if self.length is not None and self.length < 1:
            bad("length", "must be at least 1")
        for name in ("workers", "max_steps", "ckpt_every", "sample_every", "seed", "warmup_steps"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        from colorizer.limits import MAX_SEED

        if self.seed > MAX_SEED:
            bad("seed", f"must be in [0, {MAX_SEED}] (2**31 - 1), the seed range of every colorizer command")
        for name in ("batch_size", "epochs", "keep_last", "log_every", "samples", "max_bad_steps"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if not 1 <= len(self.channels) <= 7 or any(c < 64 or c % 64 for c in self.channels):
            bad("channels", "needs 1 to 7 widths, each a multiple of 64")
        if len(self.d_channels) != 4 or any(c < 32 or c % 32 for c in self.d_channels):
            bad("d_channels", "needs 4 widths, each a multiple of 32")
        if self.norm_groups < 1 or 32 % self.norm_groups:
            bad("norm_groups", "must be a divisor of 32: 1, 2, 4, 8, 16 or 32")
        from colorizer.ops import BACKENDS  # read now: a backend added with register_backend is valid

        if self.kernels not in BACKENDS:
            bad("kernels", f"must be one of {', '.join(BACKENDS)}")
        for name in ("lr_g", "lr_d"):
            v = getattr(self, name)
            if not v > 0 or v != v or v == float("inf"):
                bad(name, "must be a positive finite number")
        if self.lr_g_norm is not None and (not self.lr_g_norm > 0 or self.lr_g_norm == float("inf")):
            bad("lr_g_norm", "must be a positive finite number (or none = lr_g)")
        if self.lr_schedule not in LR_SCHEDULES:
            bad("lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}")
        for name in ("betas_g", "betas_d"):
            v = getattr(self, name)
            if len(v) != 2 or not all(0.0 <= b < 1.0 for b in v):
                bad(name, "needs two values in [0, 1)")
        for name in (term.config_field for term in LOSS_TERMS):
            v = getattr(self, name)
            if not v >= 0 or v == float("inf"):
                bad(name, "must be a finite number >= 0")
        if self.amp not in AMP_MODES:
            bad("amp", f"must be one of {', '.join(AMP_MODES)}")
        if self.device not in DEVICES:
            bad("device", f"must be one of {', '.join(DEVICES)}")
        if self.vgg_weights is not None and not os.path.isfile(self.vgg_weights):
            raise ConfigError(f"vgg_weights: file not found: {self.vgg_weights}")
        if self.sketch_model is not None and not os.path.isfile(self.sketch_model):
            raise ConfigError(f"sketch_model: file not found: {self.sketch_model}")
        if self.resume not in (None, "auto") and not os.path.exists(self.resume):
            from colorizer.pretrained import names as bundled_names

            if self.resume in bundled_names():
                raise ConfigError(
                    f"resume: {self.resume} is a bundled generator, not a training checkpoint: it has no "
                    "discriminator or optimizer state, so no run can resume from it (resume takes auto, a "
                    "run's checkpoints/ folder or one of its step_*.safetensors files)"
                )
        return self


def _inside(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies under it (after resolving links)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(TrainConfig)


check_loss_fields(
    "TrainConfig",
    {f.name: (f.default, f.metadata["help"]) for f in fields() if f.name.startswith("w_")},
    prefix="w_",
)


_HINTS = typing.get_type_hints(TrainConfig)


def _base_type(name: str):
    """(kind, element type) of a field: ('scalar', int) | ('tuple', float) | ('bool', bool)."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return "tuple", typing.get_args(hint)[0]
    if hint is bool:
        return "bool", bool
    return "scalar", hint


def _optional(name: str) -> bool:
    return type(None) in typing.get_args(_HINTS[name])


def coerce(name: str, value):
    """Turn a file or command-line value into the field's type; ConfigError when it cannot."""
    kind, elem = _base_type(name)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "") and _optional(name)):
        if _optional(name):
            return None
        raise ConfigError(f"{name}: a value is required")
    try:
        if kind == "tuple":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(elem(str(v).strip()) if isinstance(v, str) else elem(v) for v in items)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if elem is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if elem is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        expected = {"tuple": f"a comma-separated list of {elem.__name__}", "bool": "true or false"}.get(
            kind, elem.__name__
        )
        raise ConfigError(f"{name}: expected {expected}, got {value!r}") from None


def read_config_file(path: str) -> dict:
    """Flat key -> value mapping from a .yaml/.yml or .toml file (keys may use - or _)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        if path.endswith(".toml"):
            import tomllib

            with open(path, "rb") as f:
                data = tomllib.load(f)
        elif path.endswith((".yaml", ".yml")):
            import yaml

            with open(path) as f:
                data = yaml.safe_load(f)
        else:
            raise ConfigError(f"config file must end in .yaml, .yml or .toml: {path}")
    except ConfigError:
        raise
    except Exception as exc:  # yaml/toml syntax errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot parse config file {path}: {first}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def preset_path(name: str) -> str:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return str(resources.files("colorizer") / "configs" / f"{name}.yaml")


def apply(config: TrainConfig, values: dict, source: str) -> TrainConfig:
    names = {f.name for f in fields()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}")
    return dataclasses.replace(config, **{k: coerce(k, v) for k, v in values.items()})


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m colorizer.train",
        description=(
            "Train the reference-based sketch colorizer (GAN). Values come from the defaults (the reference's), "
            "then --preset, then --config, then the options below. Single process, or multi-GPU / multi-node "
            "under torchrun (DDP). Ctrl-C or SIGTERM finishes the step, writes a checkpoint and exits; continue "
            "with --resume auto. One trainer per output folder (a second one is refused while the first runs); "
            "a folder with checkpoints needs --resume; a config.yaml, train_log.csv or loss_curve.png that no "
            "run wrote is never replaced (the run is refused)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", choices=PRESETS, default=None, help="start from a preset (colorizer/configs/*.yaml)")
    p.add_argument("--config", default=None, help="a .yaml or .toml file of option: value (overrides the preset)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    defaults = TrainConfig()
    for f in fields():
        flag = "--" + f.name.replace("_", "-")
        kind, elem = _base_type(f.name)
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f.metadata["help"]
        if kind == "bool":
            p.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=f"{help_text} (default: {shown})"
            )
        else:
            metavar = {"tuple": "A,B,..", "scalar": elem.__name__.upper()}[kind]
            p.add_argument(flag, default=None, metavar=metavar, help=f"{help_text} (default: {shown})")
    # The defaults shown are the dataclass's; argparse's own default is None = "not given".
    p.formatter_class = argparse.HelpFormatter
    return p


def resolve_config(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse the command line into a validated TrainConfig (ConfigError on a bad value)."""
    args = build_parser().parse_args(argv)
    config = TrainConfig()
    if args.preset:
        config = apply(config, read_config_file(preset_path(args.preset)), f"preset {args.preset}")
    if args.config:
        config = apply(config, read_config_file(args.config), args.config)
    given = {f.name: getattr(args, f.name) for f in fields() if getattr(args, f.name) is not None}
    config = apply(config, given, "command line")
    args.notes = []
    if args.config and "out" not in given:
        config = _out_of_run_config(config, args.config, args.notes)
    return config.validate(), args


def _out_of_run_config(config: TrainConfig, path: str, notes: list[str]) -> TrainConfig:
    """A run's ``config.yaml`` belongs to the run folder it sits in (written by a run: ``is_run_config``,
    next to a ``checkpoints/`` folder): the run uses that folder, whatever ``out:`` the file records
    (where it was first written: a copied or moved run folder, or a relative ``out`` read from another
    working directory, must not write into the original). Other config files keep their ``out``; an
    explicit ``--out`` always wins."""
    folder = os.path.dirname(path) or "."
    if os.path.basename(path) != "config.yaml" or not os.path.isdir(os.path.join(folder, "checkpoints")):
        return config
    if not is_run_config(path):
        return config
    if os.path.realpath(config.out) == os.path.realpath(folder):
        return config
    notes.append(
        f"note: {path} is the config of the run folder {folder}: the run uses that folder (the file "
        f"records out: {config.out}, where it was written; give --out to choose another)"
    )
    return dataclasses.replace(config, out=folder)


# The first line of the config.yaml a run writes into its folder: what marks a folder as a run of ours.
CONFIG_HEADER = "# resolved training config"


def is_run_config(path: str) -> bool:
    """True when ``path`` is a config.yaml written by a run of this trainer (it starts with CONFIG_HEADER)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(CONFIG_HEADER)) == CONFIG_HEADER.encode()
    except OSError:
        return False


def dump_yaml(config: TrainConfig, header: str = "") -> str:
    import yaml

    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
    return (header + text) if header else text
