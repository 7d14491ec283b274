"""The GAN training loop (SPEC.md, "Losses and training").

One step on a batch (color image, sketch):

1. palette = extract_palette(color) on the device (from the cropped ground truth itself), the 27
   palette planes, generator input ``cond = cat(sketch, planes)`` (30 channels);
2. one generator forward ``fake = G(cond)`` (random noise from the global torch RNG);
3. D update: ``MSE(D(cond, real), 0.9) + MSE(D(cond, fake.detach()), 0)``;
4. G update against the updated D: ``w_gan*MSE(D(cond, fake), 0.9) + w_l1*L1 + w_feature*VGG MSE +
   w_tv*TV``, with D's parameters frozen for this backward.

Non-finite policy ("skip"): each of the two updates is applied only when its loss and all its
gradients are finite (checked across all processes), so a bad batch never reaches the weights or
the Adam moments; the step still counts and its batch is consumed. A step where either update was
skipped is a bad step. A checkpoint that falls due during a run of bad steps waits for the next
good step. After ``max_bad_steps`` bad steps in a row training stops with TrainingDivergedError
(exit code 3) and writes no checkpoint, so the newest checkpoint on disk is the last good state.
With fp16 AMP, non-finite *gradients* with a finite loss are the GradScaler's normal overflow
handling (it skips the step and lowers the scale) and are not counted.

Exact resume: a checkpoint holds both models, both optimizers (and GradScalers), the step, the epoch,
the position within the epoch, the count of bad steps in a row and the torch / CUDA / numpy / Python
RNG states of every process. The data order is a pure function of (seed, epoch) (DistributedSampler),
augmentation of (seed, epoch, index) (the data set), DataLoader workers draw from a private generator,
and the palettes of step s use seed (seed, s, rank): on the CPU a resumed run is bit-identical to
an uninterrupted one.

Signals: the first SIGINT / SIGTERM lets the current step finish, writes a checkpoint and returns
128 + signal number after printing how to resume; a second one interrupts at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import signal
import sys
import time
import warnings
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from colorizer.atomic import remove_stale_temp_files
from colorizer.atomic import write_bytes as atomic_write_bytes
from colorizer.checkpoint import CheckpointManager, config_hash, generator_metadata, read_checkpoint
from colorizer.data import SkippedFileWarning, build_dataset, collate
from colorizer.errors import CheckpointError, ColorizerError, ConfigError, DataError
from colorizer.losses import LOSS_NAMES, VGGFeatures
from colorizer.train.config import CONFIG_HEADER, TrainConfig, dump_yaml, is_run_config
from colorizer.train.distributed import (
    DistContext,
    ResumableDistributedSampler,
    any_across_ranks,
    barrier,
    gather_objects,
    init_distributed,
)
from colorizer.train.step import GanStep, build_models
from colorizer.train.visuals import CsvLog, sample_grid, write_loss_curve, write_png

EXIT_SIGNAL_BASE = 128


class TrainingDivergedError(ColorizerError):
    """Too many steps in a row with a non-finite loss or gradient."""

    exit_code = 3


@dataclass
class TrainPosition:
    """Where training stands (step, epoch, batch): saved in every checkpoint. (Not a display: that is
    colorizer.progress.)"""

    step: int = 0  # optimizer steps done (good or skipped), over all epochs
    epoch: int = 0  # current epoch
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    bad_in_row: int = 0  # consecutive bad steps so far
    bad_total: int = 0
    skipped_files: int = 0  # distinct data files found bad (corrupt, ...), each counted once


@dataclass
class TrainResult:
    exit_code: int
    progress: TrainPosition
    checkpoint: str | None
    out: str


@dataclass
class _Run:
    """The bookkeeping of one ``fit()``: the plan, the window of steps the log averages, the
    checkpoint schedule."""

    sampler: ResumableDistributedSampler
    steps_per_epoch: int
    total: int  # the step the run ends at
    start_time: float = 0.0
    window: dict[str, float] = field(default_factory=dict)  # sums of the stats since the last CSV row
    window_steps: int = 0
    window_start: float = 0.0
    checkpoint_pending: bool = False  # a scheduled checkpoint waits for a good step
    checkpoint_written_at: int = -1

    def start_clock(self) -> None:
        self.start_time = self.window_start = time.perf_counter()

    def add(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            self.window[k] = self.window.get(k, 0.0) + (v if math.isfinite(v) else float("nan"))
        self.window_steps += 1

    def window_rate(self, images_per_step: int) -> float:
        """Images per second since the window started."""
        return self.window_steps * images_per_step / (time.perf_counter() - self.window_start)

    def reset_window(self) -> None:
        self.window, self.window_steps, self.window_start = {}, 0, time.perf_counter()


# --------------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------------


def capture_rng_state() -> dict:
    """torch (CPU), CUDA (all devices), numpy and Python RNG states of this process."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def palette_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the palette k-means of one step on one process (a pure function, for exact resume)."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % 2**31


# --------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------


class _SignalFlag:
    """First SIGINT/SIGTERM: remember it (the loop stops after the step). Second: raise at once."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a library caller); no graceful stop then
                pass

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame):
        if self.signum is not None:
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name} received: finishing this step and writing a checkpoint "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )


def _worker_init(_worker_id: int) -> None:
    # The trainer names each bad data file once (Trainer._note_skipped); a worker's own warning
    # would repeat it per worker and per epoch.
    _ignore_skipped_file_warnings()
    # Ctrl-C / SIGTERM go to the whole process group; the main process handles them and shuts the
    # workers down. Without this a worker dies on the signal and the step cannot finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Trainer:
    """Trains a Sketch2Color generator and a Discriminator as configured.

    ``dataset``: optional data set overriding the one ``config`` describes (anything indexable that
    yields the ``colorizer.data`` sample dicts; ``set_epoch`` is called when present).
    ``dist_ctx``: a DistContext when the caller set up the process group itself.
    """

    def __init__(self, config: TrainConfig, dataset=None, dist_ctx: DistContext | None = None, log=None):
        self.cfg = config.validate()
        self.ctx = dist_ctx or init_distributed(config.device)
        self.device = self.ctx.device
        self._log_fn = log
        self.out = config.out
        self.ckpt_dir = os.path.join(self.out, "checkpoints")
        self.samples_dir = os.path.join(self.out, "samples")
        self.manager = CheckpointManager(self.ckpt_dir, keep_last=config.keep_last)
        self.csv = CsvLog(os.path.join(self.out, "train_log.csv"))
        self.identity_hash = config_hash(config.identity())
        self.progress = TrainPosition()
        self._planned: int | None = None  # planned_steps(), computed when the lr schedule first needs it
        self.bad_positions: set[int] = set()  # data set positions found bad (each counted and named once)
        self.signals = _SignalFlag()
        self.last_checkpoint: str | None = None
        self._bar = None
        self._check_output_folder()
        try:
            self.dataset = dataset if dataset is not None else self._build_dataset()
            self._build_models()
        except BaseException:
            self._abandon()
            raise

    # ---- setup -----------------------------------------------------------------------------

    def log(self, message: str) -> None:
        """One line on rank 0 (through the progress bar when one is shown)."""
        if not self.ctx.is_main:
            return
        if self._log_fn is not None:
            self._log_fn(message)
        elif self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def _check_output_folder(self) -> None:
        """Create the run folder, take its lock (one trainer per folder), check it is writable.

        What this start creates is remembered, and removed again by ``_abandon`` if the start
        fails before training begins.
        """
        self._created: list[str] = []  # folders and files this start made, in creation order
        self._lock = None
        if not self.ctx.is_main:
            return
        from colorizer.train.runlock import RunLock

        for folder in (self.out, self.ckpt_dir, self.samples_dir):
            _check_not_a_file(folder)
        _check_run_files(self.out)
        try:
            self._makedirs(self.out)
            self._lock = RunLock(self.out).acquire()
            self._finalizer = weakref.finalize(self, self._lock.release)
            self._makedirs(self.ckpt_dir)
            self._makedirs(self.samples_dir)
            probe = os.path.join(self.out, f".write_probe.{os.getpid()}")
            try:
                with open(probe, "wb") as f:
                    f.write(b"ok")
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(probe)
        except OSError as exc:
            self._abandon()
            raise ConfigError(f"output folder {self.out} is not writable: {exc.strerror or exc}") from exc
        except BaseException:
            self._abandon()
            raise
        if self._lock.took_over:
            owner = self._lock.took_over
            self.log(
                f"took over the lock of a trainer that is no longer running (pid {owner.get('pid')} on "
                f"host {owner.get('host')})"
            )
        folders = (self.ckpt_dir, self.samples_dir, self.out)
        stale = [path for folder in folders for path in remove_stale_temp_files(folder)]
        for name in os.listdir(self.out):  # probes of starts killed between create and unlink
            if name.startswith(".write_probe."):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.out, name))
                    stale.append(os.path.join(self.out, name))
        for path in stale:
            self.log(f"removed an incomplete file left by an interrupted write: {path}")

    def _makedirs(self, path: str) -> None:
        missing = []
        head = os.path.abspath(path)
        while not os.path.isdir(head) and head != os.path.dirname(head):
            missing.append(head)
            head = os.path.dirname(head)
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
            except FileExistsError:  # another process made it meanwhile: it is not ours to remove
                if not os.path.isdir(folder):
                    raise
                continue
            self._created.append(folder)

    def _abandon(self) -> None:
        """A start that failed before training: remove what it created, release the lock."""
        for path in reversed(getattr(self, "_created", [])):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        self._created = []
        self._release_lock()

    def _release_lock(self) -> None:
        if getattr(self, "_lock", None) is not None:
            self._lock.release()

    def _build_dataset(self):
        cfg = self.cfg
        kwargs = dict(root=cfg.data_root, size=cfg.size, seed=cfg.seed, length=cfg.length, augment=cfg.augment)
        if cfg.sketch is not None:
            kwargs["sketch"] = cfg.sketch
        return build_dataset(cfg.data, **kwargs)

    def _build_models(self) -> None:
        cfg = self.cfg
        G, D = build_models(cfg, self.device)
        vgg = VGGFeatures.from_file(cfg.vgg_weights).to(self.device) if cfg.vgg_weights else None
        self.gan = GanStep(cfg, G, D, self.device, vgg=vgg, ctx=self.ctx)
        # The step's parts under the names the trainer (checkpoints, resume, tests) uses.
        self.G, self.D, self.opt_g, self.opt_d = G, D, self.gan.opt_g, self.gan.opt_d
        self.scaler_g, self.scaler_d, self.vgg = self.gan.scaler_g, self.gan.scaler_d, vgg
        self.g_trainable = self.gan.g_trainable
        # The configured learning rates; each step sets base * lr_factor(step) (a resume restores the
        # optimizers' state, the schedule is a function of the step alone).
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in (self.opt_g, self.opt_d)]
        if self.gan.amp_note:
            self.log(self.gan.amp_note)
        if vgg is not None:
            self.feature_note = f"feature loss: VGG16 conv1_2 features from {cfg.vgg_weights}, weight {cfg.w_feature:g}"
        elif cfg.w_feature:
            self.feature_note = (
                "feature loss: DISABLED - no --vgg-weights file given (torchvision vgg16 state dict); "
                "the generator loss is GAN + L1 + TV only"
            )
        else:
            self.feature_note = "feature loss: off (w_feature = 0)"
        self.sketch_model = None

    def _sketch_for(self, color: torch.Tensor) -> torch.Tensor:
        if self.sketch_model is None:
            if not self.cfg.sketch_model:
                raise ConfigError("the data set yields no sketches; give a Color2Sketch checkpoint with --sketch-model")
            from colorizer.sketch import SketchModel

            saved = capture_rng_state()  # built lazily: its construction must not move the training RNGs
            try:
                self.sketch_model = SketchModel(self.cfg.sketch_model, self.device)
            finally:
                restore_rng_state(saved)
        with torch.no_grad():
            return self.sketch_model(color)

    # ---- checkpoints -----------------------------------------------------------------------

    def state_payload(self, rng_states: list[dict]) -> dict:
        return {
            "netG": self.G.state_dict(),
            "netD": self.D.state_dict(),
            "optG": self.opt_g.state_dict(),
            "optD": self.opt_d.state_dict(),
            "scalerG": self.scaler_g.state_dict(),
            "scalerD": self.scaler_d.state_dict(),
            "progress": dict(vars(self.progress)),
            "skipped_positions": sorted(self.bad_positions),
            "rng": {f"rank{r}": s for r, s in enumerate(rng_states)},
        }

    def save_checkpoint(self) -> str | None:
        """Write a checkpoint of the current state (rank 0); every process must call it."""
        rng_states = gather_objects(self.ctx, capture_rng_state())
        path = None
        error = None
        if self.ctx.is_main:
            metadata = {
                "kind": "training",
                "step": self.progress.step,
                "epoch": self.progress.epoch,
                "world_size": self.ctx.world_size,
                "config": self.cfg.to_dict(),
                "config_hash": self.identity_hash,
                "generator": generator_metadata(self.G),
                "discriminator": {"in_channels": self.D.in_channels, "channels": list(self.D.channels)},
                "feature_loss": self.vgg is not None,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            try:
                path = self.manager.save(self.progress.step, self.state_payload(rng_states), metadata)
                self.last_checkpoint = path
            except CheckpointError as exc:
                error = str(exc)
        # Every process learns whether rank 0's write failed, so all of them stop together.
        error = gather_objects(self.ctx, error)[0]
        if error:
            raise CheckpointError(error)
        return path

    def _resume(self) -> None:
        cfg = self.cfg
        existing = self.manager.checkpoints()
        if cfg.resume is None:
            if existing:
                raise ConfigError(
                    f"{self.ckpt_dir} already holds checkpoints; continue with --resume auto, or choose another --out"
                )
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cfg.resume == "auto" or os.path.isdir(cfg.resume):
                manager = self.manager if cfg.resume == "auto" else CheckpointManager(cfg.resume)
                found = manager.load_latest_good()
                if found is None:
                    if manager.checkpoints():
                        raise CheckpointError(f"no readable checkpoint in {manager.directory}: all are damaged")
                    self.log(f"--resume auto: no checkpoint in {manager.directory} yet, starting fresh")
                    return
                path, payload, metadata = found
            else:
                path = cfg.resume
                payload, metadata = read_checkpoint(path)
        for w in caught:
            self.log(f"warning: {w.message}")
        if metadata.get("kind") != "training" or "optG" not in payload:
            raise CheckpointError(f"{path} is not a training checkpoint (no optimizer state); cannot resume from it")
        stored_hash = metadata.get("config_hash")
        if stored_hash and stored_hash != self.identity_hash:
            old = metadata.get("config", {})
            now = self.cfg.identity()
            changed = sorted(k for k in now if k in old and old[k] != now[k])
            shape = [k for k in changed if k in ("channels", "d_channels")]  # these change the weights' shapes
            if shape:
                k = shape[0]
                was, has, flag = ",".join(map(str, old[k])), ",".join(map(str, now[k])), k.replace("_", "-")
                raise CheckpointError(
                    f"{path} was written with {k} {was}, this run has {has}: a model of another shape cannot "
                    f"resume it (give --{flag} {was}, or another --out)"
                )
            detail = ", ".join(f"{k}: {old[k]!r} -> {now[k]!r}" for k in changed[:6]) or "unknown fields"
            self.log(f"warning: {path} was written with a different config ({detail}); resuming anyway")
        from colorizer.checkpoint import load_state_strict

        load_state_strict(self.G, dict(payload["netG"]), path)
        load_state_strict(self.D, dict(payload["netD"]), path)
        try:
            self.opt_g.load_state_dict(payload["optG"])
            self.opt_d.load_state_dict(payload["optD"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: optimizer state does not fit this model: {exc}") from exc
        if payload.get("scalerG"):
            self.scaler_g.load_state_dict(payload["scalerG"])
            self.scaler_d.load_state_dict(payload["scalerD"])
        self.progress = TrainPosition(**{k: int(v) for k, v in payload["progress"].items()})
        self.bad_positions = {int(i) for i in payload.get("skipped_positions", [])}
        rng = payload.get("rng", {})
        mine = rng.get(f"rank{self.ctx.rank}")
        if mine is None or len(rng) != self.ctx.world_size:
            self.log(
                f"warning: {path} was written by {len(rng)} process(es), this run has {self.ctx.world_size}; "
                "the run continues but is not bit-identical to an uninterrupted one"
            )
            seed_everything(self.cfg.seed + 1_000_003 * (self.progress.step + 1) + self.ctx.rank)
        else:
            self._rng_to_restore = mine
        self.last_checkpoint = path
        self.log(f"resumed from {path} at step {self.progress.step} (epoch {self.progress.epoch + 1})")

    # ---- one step --------------------------------------------------------------------------

    def _note_skipped(self, batch: dict) -> None:
        """Count and name each bad data file once.

        A sample at ``index`` that reports ``skipped = s`` passed over positions index .. index+s-1
        (mod the data set's length), all bad: the data set skips forward to the next good file. A
        count of passes would count a file again at every retry, per worker and per epoch.
        """
        skipped = batch.get("skipped")
        index = batch.get("index")
        if skipped is None or index is None or not _batch_skipped(batch):
            return
        n = len(self.dataset)
        for start, count in zip(torch.as_tensor(index).tolist(), torch.as_tensor(skipped).tolist()):
            for j in range(int(count)):
                position = (int(start) + j) % n
                if position not in self.bad_positions:
                    self.bad_positions.add(position)
                    self.progress.skipped_files += 1
                    self.log(f"skipped a bad data file: {self._bad_file_reason(position)}")

    def _bad_file_reason(self, position: int) -> str:
        files = getattr(self.dataset, "files", None)
        if files is None:
            return f"sample {position}"
        path = os.fspath(files[position])
        reason = getattr(self.dataset, "bad_files", {}).get(path)  # known when loaded in this process
        if reason is None and hasattr(self.dataset, "_load"):
            try:
                self.dataset._load(files[position])
                reason = path
            except ColorizerError as exc:
                reason = str(exc)
        return reason or path

    def _prepare(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(color, sketch, palette uint8 (N, 9, 3), cond (N, 30, S, S)) on the device."""
        color = batch["color"].to(self.device, non_blocking=True)
        sketch = batch["sketch"].to(self.device, non_blocking=True) if "sketch" in batch else self._sketch_for(color)
        seed = palette_seed(self.cfg.seed, self.progress.step, self.ctx.rank)
        color, palette, cond = self.gan.inputs(color, sketch, seed)
        return color, sketch, palette, cond

    def planned_steps(self) -> int:
        """Steps of the whole run: epochs x batches per epoch, capped by max_steps."""
        sampler = ResumableDistributedSampler(self.dataset, self.ctx.world_size, self.ctx.rank, self.cfg.seed)
        total = self.cfg.epochs * (len(sampler) // self.cfg.batch_size)
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def lr_factor(self, step: int) -> float:
        """Multiplier of the configured learning rates at ``step`` (0-based): warmup, then the schedule."""
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "cosine":
            if self._planned is None:
                self._planned = self.planned_steps()
            span = max(1, self._planned - cfg.warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
        return 1.0

    def train_step(self, batch: dict) -> dict[str, float]:
        """One D update and one G update on ``batch`` (``GanStep.step``, at this step's learning
        rates and palette seed); returns the losses (floats) and 'bad' (0/1).

        With ``w_gan`` = 0 the discriminator plays no part in the generator loss and is not trained:
        no D pass at all, and the D loss (and the GAN term) is reported as nan.
        """
        factor = self.lr_factor(self.progress.step)
        for opt, bases in zip((self.opt_g, self.opt_d), self.base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * factor
        color, _, _, cond = self._prepare(batch)
        return self.gan.step(color, cond)

    # ---- pictures --------------------------------------------------------------------------

    def _preview_batch(self) -> dict | None:
        """A fixed batch of the first ``samples`` items (epoch 0), fetched without touching any RNG."""
        n = min(self.cfg.samples, len(self.dataset))
        if n == 0:
            return None
        saved = capture_rng_state()
        try:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(0)
            items = [self.dataset[i] for i in range(n)]
        finally:
            restore_rng_state(saved)
        return collate(items)

    def write_samples(self) -> str | None:
        if not self.ctx.is_main or self._preview is None:
            return None
        saved = capture_rng_state()  # the sketch model or palette code must not move the RNGs
        try:
            with torch.no_grad():
                color, sketch, palette, cond = self._prepare(self._preview)
                with self.gan.autocast():
                    output = self.G(cond, noise=self.cfg.seed)
        finally:
            restore_rng_state(saved)
        grid = sample_grid(color, sketch, palette, output.float(), color)
        path = os.path.join(self.samples_dir, f"step_{self.progress.step:09d}.png")
        write_png(path, grid)
        return path

    # ---- the loop --------------------------------------------------------------------------

    def _loader(self, sampler) -> DataLoader:
        workers = self.cfg.workers
        generator = torch.Generator().manual_seed(self.cfg.seed * 65_537 + self.progress.epoch)
        return DataLoader(
            self.dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if workers else None,
            generator=generator,
            persistent_workers=False,
            multiprocessing_context="fork" if workers and sys.platform.startswith("linux") else None,
        )

    def fit(self) -> TrainResult:
        """Train until ``epochs`` (or ``max_steps``), a signal, or an error. Returns a TrainResult.

        The run folder stays locked until this returns. A start that fails before its first step
        removes what it created (folders, config.yaml, the lock).
        """
        if self._lock is not None:
            self._lock.acquire()
        self._training_started = False
        try:
            with warnings.catch_warnings():
                _ignore_skipped_file_warnings()  # each bad file is named once by _note_skipped
                return self._fit()
        except BaseException:
            if not self._training_started:
                self._abandon()
            raise
        finally:
            self._release_lock()

    def _fit(self) -> TrainResult:
        run = self._prepare_run()
        p = self.progress
        if p.step >= run.total:
            self.log(f"nothing to do: already at step {p.step} of {run.total}")
            return TrainResult(0, p, self.last_checkpoint, self.out)
        self._start_run(run)
        try:
            while p.step < run.total:
                for batch in self._epoch_batches(run):
                    stats = self.train_step(batch)
                    epoch_done = self._advance(batch, stats, run)
                    self._show_progress(stats, run)
                    self._check_divergence(stats)
                    self._log_if_due(run)
                    if self.cfg.sample_every and p.step % self.cfg.sample_every == 0:
                        self.write_samples()
                    stop = self._stop_requested()
                    self._checkpoint_if_due(run, epoch_done, stop)
                    if stop:
                        return self._stopped()
                    if p.step >= run.total or epoch_done:
                        break
            if run.checkpoint_written_at != p.step:
                self.save_checkpoint()
        finally:
            self._close_bar()
            self.signals.restore()
        return self._finish(run)

    # ---- the steps of fit(), in order ------------------------------------------------------

    def _prepare_run(self) -> _Run:
        """Resume, check the data set, write config.yaml, fix the RNGs and plan the run."""
        cfg = self.cfg
        self._rng_to_restore = None
        self._resume()
        if len(self.dataset) < cfg.batch_size * self.ctx.world_size:
            raise DataError(
                f"the data set has {len(self.dataset)} samples, fewer than one batch on every process "
                f"({cfg.batch_size} x {self.ctx.world_size})"
            )
        if self.ctx.is_main:
            header = f"{CONFIG_HEADER}; {self.feature_note}\n"
            config_path = os.path.join(self.out, "config.yaml")
            if not os.path.exists(config_path):
                self._created.append(config_path)
            atomic_write_bytes(config_path, dump_yaml(cfg, header).encode())
            if os.path.isfile(self.csv.path):  # drop rows a crashed run wrote after its last checkpoint
                self.csv.truncate_after(self.progress.step)
        self.log(self.feature_note)
        self._preview = self._preview_batch() if self.ctx.is_main else None

        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
        elif self.progress.step == 0:
            seed_everything(cfg.seed + self.ctx.rank)  # per-process noise streams

        sampler = ResumableDistributedSampler(self.dataset, self.ctx.world_size, self.ctx.rank, cfg.seed)
        steps_per_epoch = len(sampler) // cfg.batch_size
        total = cfg.epochs * steps_per_epoch
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        self._planned = total
        return _Run(sampler, steps_per_epoch, total)

    def _start_run(self, run: _Run) -> None:
        """Say what will be trained; from here on a failure keeps the run folder. Signals, progress bar."""
        cfg, p = self.cfg, self.progress
        self.log(
            f"training {run.total - p.step} steps (step {p.step} -> {run.total}, {run.steps_per_epoch} per epoch) "
            f"on {self.ctx.world_size} x {self.device}, batch {cfg.batch_size}, {cfg.size}px, out {self.out}"
        )
        self._training_started = True
        self.signals.install()
        if self.ctx.is_main and cfg.progress:
            from colorizer.progress import progress_bar  # a bar on a terminal, a line every 30 s in a log

            self._bar = progress_bar(run.total, initial=p.step, unit="step", file=sys.stderr)
        run.start_clock()

    def _epoch_batches(self, run: _Run):
        """The batches of the rest of the current epoch, from the position training stands at."""
        p = self.progress
        run.sampler.set_position(p.epoch, p.batch_in_epoch * self.cfg.batch_size)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(p.epoch)
        return _unwrap_worker_errors(self._loader(run.sampler))

    def _advance(self, batch: dict, stats: dict[str, float], run: _Run) -> bool:
        """Move the position on by one step and count bad steps and files; True when an epoch ended."""
        p = self.progress
        p.step += 1
        p.batch_in_epoch += 1
        self._note_skipped(batch)
        if stats["bad"]:
            p.bad_in_row += 1
            p.bad_total += 1
        else:
            p.bad_in_row = 0
        if p.batch_in_epoch >= run.steps_per_epoch:
            p.epoch += 1
            p.batch_in_epoch = 0
            return True
        return False

    def _show_progress(self, stats: dict[str, float], run: _Run) -> None:
        """Add the step to the window the log averages; update the progress bar."""
        run.add(stats)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(
                **self._trained_losses(stats),
                img_s=f"{run.window_rate(self.cfg.batch_size * self.ctx.world_size):.1f}",
                refresh=False,
            )

    def _trained_losses(self, stats: dict[str, float]) -> dict[str, str]:
        """The progress line's losses: only what is trained (no D loss without the GAN term, no L1
        at weight 0), so that no 'nan' stands for a loss that does not exist."""
        shown = {"d": f"{stats['loss_d']:.3f}"} if self.gan.trains_discriminator else {}
        shown["g"] = f"{stats['loss_g']:.3f}"
        if self.gan.weights.l1:
            shown["l1"] = f"{stats['l1']:.3f}"
        return shown

    def _log_if_due(self, run: _Run) -> None:
        """Append the window's averages to train_log.csv every ``log_every`` steps and at the end."""
        step = self.progress.step
        if step % self.cfg.log_every == 0 or step == run.total:
            self._write_log_row(run.window, run.window_steps, time.perf_counter() - run.window_start, run.start_time)
            run.reset_window()

    def _check_divergence(self, stats: dict[str, float]) -> None:
        p = self.progress
        if p.bad_in_row >= self.cfg.max_bad_steps:
            last = ", ".join(f"{'loss_' + k if k in 'dg' else k}={v}" for k, v in self._trained_losses(stats).items())
            raise TrainingDivergedError(
                f"stopping at step {p.step}: {p.bad_in_row} steps in a row had a non-finite loss or "
                f"gradient (last: {last}); the "
                f"last good checkpoint is {self.last_checkpoint or 'none (no checkpoint was written)'}; "
                "lower the learning rates or use --amp none/bf16, then --resume auto"
            )

    def _stop_requested(self) -> bool:
        """A SIGINT/SIGTERM arrived on any process (all of them stop at the same step)."""
        stop = self.signals.signum is not None
        return any_across_ranks(self.ctx, [stop])[0] if self.ctx.enabled else stop

    def _checkpoint_if_due(self, run: _Run, epoch_done: bool, stop: bool) -> None:
        """Write a checkpoint every ``ckpt_every`` steps, at an epoch's end, on a stop and at the end.

        Scheduled checkpoints wait for a good step, so that the newest checkpoint never sits inside
        a run of bad steps (a signal or the end still writes one).
        """
        p, cfg = self.progress, self.cfg
        due = (
            run.checkpoint_pending
            or (cfg.ckpt_every and p.step % cfg.ckpt_every == 0)
            or (epoch_done and p.step < run.total)
        )
        run.checkpoint_pending = bool(due and p.bad_in_row)
        due = due and not run.checkpoint_pending
        if due or stop or p.step >= run.total:
            self.save_checkpoint()
            run.checkpoint_written_at = p.step
            if self.ctx.is_main and (due or p.step >= run.total):
                write_loss_curve(self.csv, os.path.join(self.out, "loss_curve.png"))

    def _stopped(self) -> TrainResult:
        """The result of a run stopped by a signal (its checkpoint is written); says how to resume."""
        p = self.progress
        signum = self.signals.signum or signal.SIGTERM
        self._close_bar()
        self.log(
            f"stopped by {signal.Signals(signum).name} at step {p.step}; checkpoint "
            f"{self.last_checkpoint}; resume with: python -m colorizer.train --config "
            f"{os.path.join(self.out, 'config.yaml')} --resume auto"
        )
        return TrainResult(EXIT_SIGNAL_BASE + int(signum), p, self.last_checkpoint, self.out)

    def _finish(self, run: _Run) -> TrainResult:
        """The end of a completed run: the loss curve, a last sample grid, the summary line."""
        p = self.progress
        if self.ctx.is_main:
            write_loss_curve(self.csv, os.path.join(self.out, "loss_curve.png"))
            sample = self.write_samples()
            elapsed = time.perf_counter() - run.start_time
            skipped = f", {p.skipped_files} data files skipped" if p.skipped_files else ""
            bad = f", {p.bad_total} bad steps skipped" if p.bad_total else ""
            self.log(
                f"done: step {p.step}, epoch {p.epoch}, {elapsed:.0f} s{skipped}{bad}; checkpoint "
                f"{self.last_checkpoint}; samples {sample}; loss curve {os.path.join(self.out, 'loss_curve.png')}"
            )
        barrier(self.ctx)
        return TrainResult(0, p, self.last_checkpoint, self.out)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _write_log_row(self, window: dict, steps: int, seconds: float, start_time: float) -> None:
        if not self.ctx.is_main or steps == 0:
            return
        p = self.progress
        row = {k: window.get(k, float("nan")) / steps for k in ("loss_d", "loss_g", *LOSS_NAMES)}
        row.update(
            step=p.step,
            epoch=p.epoch,
            images_per_s=steps * self.cfg.batch_size * self.ctx.world_size / max(seconds, 1e-9),
            bad_steps=p.bad_total,
            skipped_files=p.skipped_files,
            elapsed_s=round(time.perf_counter() - start_time, 2),
        )
        self.csv.append(row)


def _check_not_a_file(out: str) -> None:
    """ConfigError when the output folder, or the nearest part of its path that exists, is not a folder."""
    head = os.path.abspath(out)
    while not os.path.lexists(head) and head != os.path.dirname(head):
        head = os.path.dirname(head)
    if os.path.isdir(head):
        return
    if head == os.path.abspath(out):
        raise ConfigError(f"output folder {out} is not writable: it is a file, not a folder")
    raise ConfigError(f"output folder {out} is not writable: {head} is a file, not a folder")


RUN_FILES = ("config.yaml", "train_log.csv", "loss_curve.png")  # the files a run writes into its folder


def _check_run_files(out: str) -> None:
    """ConfigError (before anything is written) when the run would replace what is not a run's:
    one of RUN_FILES that is not a regular file, or any of them in a folder whose config.yaml was not
    written by a run of ours (a folder of the user's that happens to hold a config.yaml or a CSV)."""
    present = []
    for name in RUN_FILES:
        path = os.path.join(out, name)
        if not os.path.lexists(path):
            continue
        if not os.path.isfile(path):
            raise ConfigError(f"output folder {out}: {name} is not a file; the run writes its {name} there")
        present.append(name)
    if present and not is_run_config(os.path.join(out, "config.yaml")):
        raise ConfigError(
            f"output folder {out} holds {', '.join(present)} that no run of this trainer wrote (no config.yaml "
            "of a run there); a run would replace them: choose another output folder, or move them"
        )


def _unwrap_worker_errors(loader):
    """Iterate ``loader``; a user error raised in a DataLoader worker comes back as its own one line.

    (DataLoader re-raises a worker's exception with the worker's whole traceback as its message.)
    """
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except ColorizerError as exc:
            text = str(exc)
            if "Original Traceback" not in text:
                raise
            last = [line for line in text.strip().splitlines() if line.strip()][-1]
            message = last.split(": ", 1)[1] if last.startswith(("colorizer.", type(exc).__name__)) else last
            raise type(exc)(message) from None
        yield batch


def _ignore_skipped_file_warnings() -> None:
    warnings.filterwarnings("ignore", category=SkippedFileWarning)


def _batch_skipped(batch: dict) -> int:
    skipped = batch.get("skipped")
    if skipped is None:
        return 0
    return int(skipped.sum()) if isinstance(skipped, torch.Tensor) else int(skipped)


def train(config: TrainConfig, dataset=None) -> TrainResult:
    """Run training as configured (single process, or one DDP process under torchrun)."""
    return Trainer(config, dataset=dataset).fit()
