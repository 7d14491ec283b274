"""Writing export artifacts so that a failed export leaves nothing behind.

Every artifact (an .onnx, a .plan, its JSON sidecar, a Triton repository) is first written to a
temporary name in the destination folder, checked (loaded and run again, see ``verify``), then moved
onto its final name with ``os.replace``, which is atomic within one filesystem (``colorizer.atomic``,
the project's one atomic writer: fsync'ed, one temporary-name pattern). On any failure the temporary
file is removed, so the final path holds either the previous file or the new, verified one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

from colorizer import atomic
from colorizer.atomic import current_umask  # noqa: F401 (re-exported; its home is colorizer.atomic)
from colorizer.errors import ConfigError


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_output_path(path: str, what: str = "output") -> str:
    """Absolute ``path`` after checking that its folder exists and is writable (ConfigError if not).

    Checked before any expensive work, so an unwritable destination fails in one line at once.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise ConfigError(f"{what} path {path} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise ConfigError(f"cannot write {what} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} {path}: folder {folder} is not writable")
    return path


def check_output_folder(path: str, what: str = "output folder") -> str:
    """Absolute ``path`` after checking that a folder can be created (or replaced) there."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{what} {path} exists and is not a folder")
    if not os.path.isdir(parent):
        raise ConfigError(f"cannot write {what} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} {path}: folder {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_output(path: str, what: str = "output") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on normal exit move it onto ``path``, else delete it.

    The temporary name keeps ``path``'s suffix (tools such as OpenVINO pick a reader by it) and
    starts with a dot so a half-written file is never mistaken for a result.
    """
    path = check_output_path(path, what)
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic.output_path(path, keep_suffix=True))
        except OSError as exc:  # no temporary can be made there
            raise ConfigError(f"cannot write {what} {path}: {exc.strerror}") from exc
        yield tmp


@contextlib.contextmanager
def atomic_directory(path: str, what: str = "output folder") -> Iterator[str]:
    """Like ``atomic_output`` for a folder: build it under a temporary name, then rename it.

    An existing folder at ``path`` is replaced only after the new one is complete (it is renamed
    aside, the new one moved in, then the old one deleted).
    """
    path = check_output_folder(path, what)
    with atomic.replace_directory(path) as tmp:
        yield tmp
