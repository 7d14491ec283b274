"""Writing export artifacts so that a failed export leaves nothing behind and nothing of the user's is lost.

Every artifact (an .onnx, a .plan, its JSON sidecar, an OpenVINO IR, a Triton repository) is first
written to a temporary name in the destination folder, checked (loaded and run again, see
``verify``), then moved onto its final name (``colorizer.atomic``, the project's one atomic writer:
fsync'ed, one temporary-name pattern). On any failure the temporary is removed, so the final path
holds either the previous file or the new, verified one.

The overwrite rule of every format (``colorizer-export --help`` states it): an output path that
exists is replaced only when it holds an export of ours (each format's ``is_own_*``: our metadata,
read from the file), never a file of the user's; anything else is refused with one line, before
any work and again at the moment of the rename. The rename happens under an exclusive lock on
the destination folder (``folder_lock``), where that check is repeated: two exports into one folder
queue there, and a path that was free at the start but taken by then is not replaced
(``colorizer.atomic.commit_new``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator

from colorizer import atomic
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


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` itself, held while exports rename their files into it:
    two exports into one folder take turns, so neither sees the other's half-swapped files.
    Advisory (only colorizer writers take it); waits for the holder, whose rename step is short."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def refuse_foreign(path: str, what: str, is_own: Callable[[str], bool]) -> None:
    """ConfigError unless ``path`` is free or holds an export of ours (``is_own(path)``): the overwrite
    rule of colorizer-export. A symlink is never ours to replace."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isfile(path) or not is_own(path):
        raise ConfigError(
            f"{what} {path} exists and is not an export of colorizer-export, which replaces only its own "
            "exports; move it away or choose another path"
        )


def commit_export(tmp: str, path: str, what: str, is_own: Callable[[str], bool]) -> None:
    """Move the complete, checked ``tmp`` onto ``path`` under the rules of this module: under the
    folder's lock, replace an export of ours, create a free name exclusively, refuse anything else."""
    appeared = ConfigError(f"{what} {path} was created by someone else during the export; it was left as it is")
    with folder_lock(os.path.dirname(path)):
        if os.path.lexists(path):
            try:
                refuse_foreign(path, what, is_own)
            except ConfigError:
                raise appeared from None
            atomic.commit_replace(tmp, path)
        else:
            try:
                atomic.commit_new(tmp, path)
            except FileExistsError:
                raise appeared from None


@contextlib.contextmanager
def export_output(path: str, what: str, is_own: Callable[[str], bool]) -> Iterator[str]:
    """``atomic_output`` with the overwrite rule: refused at once when ``path`` holds something not
    ours, and committed with ``commit_export``."""
    path = check_output_path(path, what)
    refuse_foreign(path, what, is_own)
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(
                atomic.output_path(path, keep_suffix=True, commit=lambda t, p: commit_export(t, p, what, is_own))
            )
        except OSError as exc:
            raise ConfigError(f"cannot write {what} {path}: {exc.strerror}") from exc
        yield tmp
