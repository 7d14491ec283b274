"""Checkpoints: a safe, verified file format, atomic writes, rotation, and model loaders.

Formats read by ``load_generator`` / ``load_discriminator``:

1. The public reference's ``.pth``: a dict ``{'netG': state_dict, 'netD': state_dict, ...}`` written by
   ``torch.save``; read with ``torch.load(weights_only=True)``, which never runs pickled code.
2. A plain state dict (``.pth`` via ``torch.save``, or ``.safetensors``), optionally with the
   ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix.
3. Our own checkpoints (written by ``write_checkpoint``): a safetensors file. Every tensor of a nested
   payload (model and optimizer state dicts, RNG states) is stored flat under a ``/``-joined path; the
   nesting, the non-tensor values and the metadata (config, its hash, step, ...) are JSON in the
   safetensors header. The header also holds a sha256 over the tensors (name, dtype, shape, bytes),
   the structure and the metadata: a truncated or tampered file raises CheckpointError. Loading never
   unpickles anything.

Writes are atomic (``colorizer.atomic``): a temporary file in the same folder, written, flushed and
fsync'ed, then ``os.replace`` onto the final name and the folder fsync'ed. A crash (kill -9, power loss)
leaves either the old file or the new one, never a half-written file under the final name. ``CheckpointManager``
keeps the last N checkpoints and a ``latest`` pointer, and finds the newest *good* checkpoint, skipping
a damaged one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import struct
import warnings
from collections.abc import Iterable

import torch
import torch.nn as nn

from colorizer.atomic import write_bytes as atomic_write_bytes
from colorizer.errors import CheckpointError

FORMAT_NAME = "colorizer-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_SUFFIX = ".safetensors"
LATEST_POINTER = "latest"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class ConfigMismatchWarning(UserWarning):
    """A checkpoint was written with a different configuration than the one in use."""


# --------------------------------------------------------------------------------------------
# nested payload <-> flat tensors + JSON structure
# --------------------------------------------------------------------------------------------


def _flatten(obj, prefix: str, tensors: dict[str, torch.Tensor]):
    """Return a JSON-able tree for ``obj``; tensors are moved into ``tensors`` under their path."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "tensor"
        if key in tensors:
            raise ValueError(f"duplicate tensor path {key!r} in checkpoint payload")
        # A private contiguous CPU copy: safetensors refuses shared or strided storage.
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and "/" not in k for k in obj):
            return {"__dict__": {k: _flatten(v, f"{prefix}/{k}" if prefix else k, tensors) for k, v in obj.items()}}
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"checkpoint dict keys must be str or int, got {type(k).__name__} at {prefix!r}")
            items.append([k, _flatten(v, f"{prefix}/{k}" if prefix else str(k), tensors)])
        return {"__items__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if type(obj).__module__ == "numpy":
        import numpy as np

        if isinstance(obj, np.ndarray):
            return {"__numpy__": _flatten(torch.from_numpy(np.ascontiguousarray(obj)), prefix, tensors)}
        if isinstance(obj, np.generic):
            return obj.item()
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {prefix!r})")


def _unflatten(tree, tensors: dict[str, torch.Tensor]):
    if isinstance(tree, list):
        return [_unflatten(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__dict__" in tree:
            return {k: _unflatten(v, tensors) for k, v in tree["__dict__"].items()}
        if "__items__" in tree:
            return {k: _unflatten(v, tensors) for k, v in tree["__items__"]}
        if "__tuple__" in tree:
            return tuple(_unflatten(v, tensors) for v in tree["__tuple__"])
        if "__numpy__" in tree:
            return _unflatten(tree["__numpy__"], tensors).numpy()
        raise CheckpointError(f"unknown node in checkpoint structure: {sorted(tree)[:3]}")
    return tree


def _digest(tensors: dict[str, torch.Tensor], structure: str, metadata: str) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(b"|structure|" + structure.encode())
    h.update(b"|metadata|" + metadata.encode())
    return h.hexdigest()


def config_hash(config: dict) -> str:
    """sha256 (hex) of a JSON-able config, independent of key order."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# our format
# --------------------------------------------------------------------------------------------


def encode_checkpoint(payload: dict, metadata: dict | None = None) -> bytes:
    """Serialize a nested payload (tensors, dicts, lists, tuples, numbers, strings) to bytes."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    structure = json.dumps(_flatten(payload, "", tensors), sort_keys=True)
    meta = json.dumps(metadata or {}, sort_keys=True, default=str)
    header = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "structure": structure,
        "metadata": meta,
        "sha256": _digest(tensors, structure, meta),
    }
    return save(tensors, metadata=header)


def write_checkpoint(path: str, payload: dict, metadata: dict | None = None) -> None:
    """Atomically write ``payload`` (+ ``metadata``, JSON-able) to ``path`` in our format.

    Raises CheckpointError with the OS reason (disk full, read-only folder, ...) when the write
    fails; the file previously at ``path`` is then untouched.
    """
    data = encode_checkpoint(payload, metadata)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = "no space left on device"
        elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            reason = f"folder is not writable ({exc.strerror})"
        raise CheckpointError(f"cannot write checkpoint {path}: {reason}") from exc


def _read_bytes(path: str) -> bytes:
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc


def _safetensors_header(data: bytes) -> dict | None:
    """The JSON header of a safetensors blob, or None when ``data`` does not look like one."""
    if len(data) < 8:
        return None
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data) or data[8:9] != b"{":
        return None
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def decode_checkpoint(data: bytes, source: str = "checkpoint") -> tuple[dict, dict]:
    """Inverse of ``encode_checkpoint``: (payload, metadata); verifies the sha256. CheckpointError."""
    from safetensors.torch import load

    header = _safetensors_header(data)
    meta = (header or {}).get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{source} is not a colorizer checkpoint (truncated or another format)")
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise CheckpointError(f"{source} was written by a newer colorizer (format {meta['format_version']})")
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error type for any malformed blob
        raise CheckpointError(f"{source} is damaged (truncated?): {exc}") from exc
    structure, metadata = meta.get("structure", ""), meta.get("metadata", "")
    if _digest(tensors, structure, metadata) != meta.get("sha256"):
        raise CheckpointError(f"{source} is damaged or was modified: its sha256 does not match its contents")
    try:
        payload = _unflatten(json.loads(structure), tensors)
        return payload, json.loads(metadata)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{source} has a broken structure: {exc}") from exc


def read_checkpoint(path: str, expected_config_hash: str | None = None) -> tuple[dict, dict]:
    """Read and verify one of our checkpoints: (payload, metadata).

    With ``expected_config_hash``, warns (ConfigMismatchWarning) when the checkpoint was written with
    another config. Raises CheckpointError for a missing, truncated, tampered or foreign file.
    """
    payload, metadata = decode_checkpoint(_read_bytes(path), path)
    stored = metadata.get("config_hash")
    if expected_config_hash is not None and stored is not None and stored != expected_config_hash:
        warnings.warn(
            f"{path} was written with a different config (hash {stored[:12]} != {expected_config_hash[:12]})",
            ConfigMismatchWarning,
            stacklevel=2,
        )
    return payload, metadata


# --------------------------------------------------------------------------------------------
# rotation and resume
# --------------------------------------------------------------------------------------------

_STEP_NAME = re.compile(r"^step_(\d+)" + re.escape(CHECKPOINT_SUFFIX) + "$")


class CheckpointManager:
    """Checkpoints ``step_<step>.safetensors`` in one folder, the last ``keep_last`` kept, plus a
    ``latest`` text file naming the newest. Only one process (rank 0) may write."""

    def __init__(self, directory: str, keep_last: int = 3):
        if keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        self.directory = directory
        self.keep_last = keep_last

    def path_for(self, step: int) -> str:
        return os.path.join(self.directory, f"step_{step:09d}{CHECKPOINT_SUFFIX}")

    def checkpoints(self) -> list[tuple[int, str]]:
        """(step, path) of every checkpoint file present, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            m = _STEP_NAME.match(name)
            if m:
                found.append((int(m.group(1)), os.path.join(self.directory, name)))
        return sorted(found)

    def save(self, step: int, payload: dict, metadata: dict | None = None) -> str:
        """Write the checkpoint of ``step``, point ``latest`` at it, delete the oldest beyond keep_last.

        The new file is complete on disk before anything old is removed. CheckpointError on failure.
        """
        os.makedirs(self.directory, exist_ok=True)
        path = self.path_for(step)
        previous = [p for s, p in self.checkpoints() if s != step]
        try:
            write_checkpoint(path, payload, metadata)
        except CheckpointError as exc:
            kept = f"; the previous checkpoint {previous[-1]} is intact" if previous else ""
            raise CheckpointError(f"{exc}{kept}") from exc
        try:
            atomic_write_bytes(os.path.join(self.directory, LATEST_POINTER), (os.path.basename(path) + "\n").encode())
        except OSError as exc:  # the pointer is a convenience; resume finds checkpoints without it
            warnings.warn(f"could not update {LATEST_POINTER} pointer: {exc}", stacklevel=2)
        for _, old in self.checkpoints()[: -self.keep_last]:
            try:
                os.unlink(old)
            except OSError:
                pass
        return path

    def load_latest_good(self, expected_config_hash: str | None = None) -> tuple[str, dict, dict] | None:
        """(path, payload, metadata) of the newest checkpoint that reads and verifies, or None.

        Damaged ones (e.g. a file cut short by a full disk outside our atomic writes, or tampered
        with) are skipped with a warning naming them.
        """
        for _, path in reversed(self.checkpoints()):
            try:
                payload, metadata = read_checkpoint(path, expected_config_hash)
            except CheckpointError as exc:
                warnings.warn(f"skipping damaged checkpoint: {exc}", stacklevel=2)
                continue
            return path, payload, metadata
        return None


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file as given, or for a training run folder (or its checkpoints/) the newest
    checkpoint in it that reads and verifies; CheckpointError when the folder has none."""
    folder = str(path)
    if not os.path.isdir(folder):
        return path
    if os.path.isdir(os.path.join(folder, "checkpoints")):
        folder = os.path.join(folder, "checkpoints")
    found = CheckpointManager(folder).load_latest_good()
    if found is None:
        raise CheckpointError(f"{path}: no readable checkpoint in this folder")
    return found[0]


# --------------------------------------------------------------------------------------------
# model loaders
# --------------------------------------------------------------------------------------------


def _strip_prefixes(state: dict) -> dict:
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _load_state(path: str, key: str) -> tuple[dict, dict]:
    """The state dict of network ``key`` ('netG' | 'netD') from any supported format (on the CPU), + metadata."""
    data = _read_bytes(path)
    header = _safetensors_header(data)
    if header is not None:
        meta = header.get("__metadata__") or {}
        if meta.get("format") == FORMAT_NAME:
            payload, metadata = decode_checkpoint(data, path)
            if key not in payload:
                raise CheckpointError(f"{path} holds no {key} (it has {', '.join(sorted(payload)) or 'nothing'})")
            return dict(payload[key]), metadata
        from safetensors.torch import load

        try:
            return load(data), {}
        except Exception as exc:
            raise CheckpointError(f"{path} is damaged (truncated?): {exc}") from exc
    if not looks_like_torch_file(data[:512]):
        raise CheckpointError(
            f"{path} is not a checkpoint: by its first bytes neither a safetensors file nor a torch .pth (zip, pickle)"
        )
    del data
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, zip errors, EOF: all mean a bad file here
        raise CheckpointError(f"cannot read checkpoint {path}: {torch_load_reason(exc)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    if key in obj:
        obj = obj[key]
    elif any(k in obj for k in ("netG", "netD")):
        raise CheckpointError(f"{path} holds no {key} (it has {', '.join(sorted(map(str, obj))[:6])})")
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: {key} is not a state dict of tensors")
    return dict(obj), {}


def looks_like_torch_file(head: bytes) -> bool:
    """True when ``head`` (a file's first 512 bytes) starts like something ``torch.save`` writes: a zip
    archive (torch >= 1.6), a pickle (the legacy format; torch writes protocol 2, opcode 0x80) or a tar
    archive (torch < 0.4). A text file or any other format is not one, and torch.load's error for it
    would say something unrelated (a pickle opcode, "Weights only load failed")."""
    return head[:4] == b"PK\x03\x04" or head[:1] == b"\x80" or head[257:262] == b"ustar"


def torch_load_reason(exc: Exception) -> str:
    """Our own words for a torch.load failure; never torch's advice to retry with weights_only=False
    (that would run code from an untrusted file)."""
    text = str(exc)
    if "Weights only load failed" in text or "weights_only" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" (it contains {found.group(1)})" if found else ""
        return (
            f"it holds Python objects, not only tensors{what}; only plain state dicts are loaded, "
            "because unpickling other objects could run code from the file"
        )
    if isinstance(exc, EOFError) or "unexpected EOF" in text or "end of file" in text.lower():
        return "the file is truncated"
    return "truncated, damaged or not a checkpoint"


def _few(keys: Iterable[str], n: int = 4) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state_strict(model: nn.Module, state: dict, source: str) -> None:
    """load_state_dict(strict=True) with a one-line CheckpointError for missing/extra/mis-shaped keys."""
    expected = model.state_dict()
    missing = set(expected) - set(state)
    extra = set(state) - set(expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if extra:
            parts.append(f"unexpected keys {_few(extra)}")
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: {'; '.join(parts)}")
    wrong = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: {k} has shape {tuple(state[k].shape)}, "
            f"expected {tuple(expected[k].shape)} ({len(wrong)} mismatched)"
        )
    model.load_state_dict(state, strict=True)


def check_finite(state: dict, source: str) -> None:
    """CheckpointError naming the first weight that holds NaN or Inf (such weights paint black)."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{source} has non-finite weights ({bad} NaN/Inf values in {name}); it cannot be used "
                "(a diverged training run? take an earlier checkpoint)"
            )


COLORIZER_IN_CHANNELS = 30  # sketch (3) + 9 palette colors (27)


def check_colorizer(model, source: str = "the model"):
    """``model`` if it is a colorizing generator (Sketch2Color, 30 input channels), else CheckpointError.

    The one check every way in makes (colorize, eval, export, serve), with one message.
    """
    from colorizer.models.generator import UNetGenerator

    if not isinstance(model, UNetGenerator):
        raise CheckpointError(f"{source} is a {type(model).__name__}, not a Sketch2Color generator")
    if model.in_channels != COLORIZER_IN_CHANNELS:
        raise CheckpointError(
            f"{source} is a Color2Sketch line extractor ({model.in_channels} input channels), not a Sketch2Color "
            f"colorizer ({COLORIZER_IN_CHANNELS}: sketch + 9 palette colors); give the colorizing generator"
        )
    return model


def load_colorizer_file(path: str) -> tuple:
    """(Sketch2Color on the CPU, sha256 of the file) from a checkpoint file; CheckpointError for a missing
    file or a model that is not a colorizer. (A bundled name or a run folder: colorizer.runtime.load.)"""
    import os

    from colorizer.pretrained import sha256_of

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    return check_colorizer(load_generator(path, map_location="cpu"), path), sha256_of(path)


def load_generator(path: str, map_location="cpu", kernels: str = "eager"):
    """A Sketch2Color (30 input channels) or Color2Sketch (3) with the weights of ``path``.

    ``path``: the reference's ``{'netG': ...}`` .pth, a plain state dict, one of our checkpoints, or
    the name of a bundled model (``colorizer.pretrained``, e.g. ``"demo"``).
    The architecture (in_channels, channels) is inferred from the shapes, the GroupNorm group count
    read from the checkpoint's metadata (32 when absent); loading is strict.
    Returns the model in eval mode on ``map_location``. Raises CheckpointError.
    """
    from colorizer.models import generator_architecture, generator_class
    from colorizer.pretrained import resolve

    path = resolve(path)  # a bundled model's name -> its weights file (sha256 checked)
    state, metadata = _load_state(path, "netG")
    state = _strip_prefixes(state)
    arch = generator_architecture(state, path, metadata)
    cls = generator_class(arch["in_channels"])
    try:
        model = cls(
            in_channels=arch["in_channels"], channels=arch["channels"], kernels=kernels, norm_groups=arch["norm_groups"]
        )
    except ValueError as exc:
        raise CheckpointError(f"{path} has an unsupported generator shape: {exc}") from exc
    load_state_strict(model, state, path)
    check_finite(state, path)
    return model.to(map_location).eval()


def load_discriminator(path: str, map_location="cpu", kernels: str = "eager"):
    """A Discriminator with the weights of ``path`` (any supported format); see load_generator."""
    from colorizer.models import Discriminator, discriminator_architecture

    state, _ = _load_state(path, "netD")
    state = _strip_prefixes(state)
    arch = discriminator_architecture(state, path)
    model = Discriminator(in_channels=arch["in_channels"], channels=arch["channels"], kernels=kernels)
    load_state_strict(model, state, path)
    check_finite(state, path)
    return model.to(map_location).eval()


def generator_metadata(generator: nn.Module) -> dict:
    """What a checkpoint records of a generator's architecture (``generator_architecture`` reads it back)."""
    from colorizer.models.layers import GROUPS

    return {
        "in_channels": generator.in_channels,
        "channels": list(generator.channels),
        "norm_groups": int(getattr(generator, "norm_groups", GROUPS)),
    }


def save_generator(path: str, generator: nn.Module, metadata: dict | None = None) -> None:
    """Write only the generator's weights, in our format (``{'netG': state_dict}``), atomically."""
    meta = dict(metadata or {})
    meta.setdefault("kind", "generator")
    meta.setdefault("generator", generator_metadata(generator))
    write_checkpoint(path, {"netG": generator.state_dict()}, meta)
