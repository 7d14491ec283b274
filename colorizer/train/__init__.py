"""GAN trainer: ``python -m colorizer.train`` (see ``--help``) or ``colorizer.train.train(config)``.

Modules: ``config`` (TrainConfig, presets, YAML/TOML, argparse), ``loop`` (Trainer: the step, resume,
signals, non-finite policy), ``distributed`` (torchrun / DDP helpers), ``visuals`` (sample grids, loss
curve, CSV log).
"""

from colorizer.train.config import PRESETS, TrainConfig, resolve_config
from colorizer.train.loop import Trainer, TrainingDivergedError, TrainPosition, TrainResult, train

__all__ = [
    "PRESETS",
    "TrainPosition",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "resolve_config",
    "train",
]
