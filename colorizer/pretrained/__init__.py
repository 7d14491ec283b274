"""Trained generators that ship with the package, loaded by name: ``load_generator("demo")``.

A name works wherever a checkpoint path does (``colorizer colorize --checkpoint demo``, ``colorizer
eval demo``, ``colorizer.checkpoint.load_generator("demo")``), like ``timm.create_model(name,
pretrained=True)``, but nothing is downloaded: the weights are files in this folder, and each is
checked against the sha256 recorded here before it is used. ``colorizer colorize`` without
``--checkpoint`` uses ``DEFAULT``.

Each model comes with its model card (how it was trained, what it is and is not), its training
config and log, and its ``colorizer eval`` report, all in this folder (see ``MODELS``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources

from colorizer.errors import CheckpointError

__all__ = ["MODELS", "DEFAULT", "BundledModel", "names", "get", "weights_path", "resolve", "sha256_of"]


@dataclass(frozen=True)
class BundledModel:
    name: str
    file: str  # the weights (safetensors, ``{'netG': ...}`` in our checkpoint format), in this folder
    sha256: str
    description: str  # one line
    card: str  # the model card, in this folder


MODELS: dict[str, BundledModel] = {
    "demo": BundledModel(
        name="demo",
        file="demo.safetensors",
        sha256="bebc8c798c7047f0f56ec6db08d5d6137c3ebbc040342366d003ebde749f7dfa",
        description=(
            "the demo model: a narrow generator (64 channels, 1.8 M parameters) trained on the built-in "
            "synthetic drawings (flat shapes), not on anime"
        ),
        card="demo.md",
    ),
}
DEFAULT = "demo"

_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 already checked


def names() -> list[str]:
    return sorted(MODELS)


def get(name: str) -> BundledModel:
    """The registry entry of ``name``; CheckpointError (one line, listing the names) when unknown."""
    if name not in MODELS:
        raise CheckpointError(f"{name!r} is not a bundled model; bundled models: {', '.join(names())}")
    return MODELS[name]


def folder() -> str:
    return str(resources.files(__name__))


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_path(name: str) -> str:
    """The weights file of bundled model ``name``, after checking its sha256 (CheckpointError if not)."""
    model = get(name)
    path = os.path.join(folder(), model.file)
    try:
        st = os.stat(path)
    except OSError:
        raise CheckpointError(
            f"bundled model {name!r}: its weights file {path} is missing from this installation "
            "(reinstall the package: pip install -e .)"
        ) from None
    key = (path, st.st_size, st.st_mtime_ns)
    if _verified.get(key) != model.sha256:
        actual = sha256_of(path)
        if actual != model.sha256:
            raise CheckpointError(
                f"bundled model {name!r}: {path} has sha256 {actual[:16]}..., expected {model.sha256[:16]}... "
                "(the file is damaged or was replaced; reinstall the package)"
            )
        _verified[key] = actual
    return path


def resolve(path_or_name) -> str:
    """A path that exists stays as it is; a bundled model's name becomes its checked weights file.

    Anything else raises CheckpointError in one line that names the bundled models.
    """
    text = os.fspath(path_or_name)
    if os.path.exists(text):
        return text
    if text in MODELS:
        return weights_path(text)
    raise CheckpointError(f"checkpoint not found: {text} (neither a file nor a bundled model: {', '.join(names())})")
