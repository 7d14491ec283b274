"""Reading a model's shape from a state dict (shared by generator.py and discriminator.py).

Each model file names the tensor that identifies its kind (``SIGNATURE_KEYS``) and reads its own
architecture from the shapes, as timm keeps its checkpoint filters in the model files.
"""

from __future__ import annotations

import torch

from colorizer.errors import CheckpointError

# One tensor every state dict of that kind holds.
SIGNATURE_KEYS = {"generator": "encoder.layer1.conv1.weight", "discriminator": "conv1.weight_orig"}


def state_shape(state: dict, key: str, source: str, kind: str) -> torch.Size:
    """The shape of ``state[key]``; CheckpointError naming ``source`` when the key is missing (and
    saying so when ``state`` is a state dict of another kind of model)."""
    if key not in state:
        other = next((k for k, v in SIGNATURE_KEYS.items() if k != kind and v in state), None)
        if other is not None:
            raise CheckpointError(f"{source} holds a {other} state dict, not a {kind}")
        raise CheckpointError(f"{source} is not a {kind} state dict: missing {key}")
    return state[key].shape
