"""Atomic writes: a reader sees the old file (or folder) or the complete new one, never half of one.

Every writer here works the same way: the new content goes to a temporary name in the destination
folder, is flushed and fsync'ed, is moved onto the final name with ``os.replace`` (atomic within one
filesystem), and then the folder itself is fsync'ed so the rename survives a power loss. On any
failure the temporary is removed and whatever was at the final name is untouched.

There is one temporary-name pattern, ``.<final name>.<random>.tmp`` (plus the final name's suffix
again for ``output_path``, whose callers hand the path to tools that look at the extension), so
``remove_stale_temp_files`` finds what a killed writer left behind, whoever wrote it.

- ``write_bytes(path, data)``: bytes in memory.
- ``write_with(path, write)``: ``write(file)`` streams into an open binary file (PIL, csv, ...).
- ``output_path(path)``: a context manager yielding a temporary path for a library that insists on
  writing by name (onnx.save, TensorRT).
- ``replace_directory(path)``: the same for a whole folder (built under a temporary name, swapped in).

New files get the mode a plain ``open()`` would give them (0o666 less the umask): a served model or
a shared picture must be readable by other users, not mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

TEMP_MARK = ".tmp"
# .<final name>.<mkstemp's random part>.tmp[<final suffix>]; the random part is [a-z0-9_].
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9_]+)?$")
_ASIDE_MARK = ".old"  # an existing folder moved aside by replace_directory (never swept: it may be the only copy)


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_temp_name(name: str) -> bool:
    """True for a name this module's writers give their temporaries."""
    return bool(_TEMP_NAME.match(name))


def _temp_affixes(path: str, keep_suffix: bool) -> tuple[str, str, str]:
    """(folder, prefix, suffix) of the temporary for ``path``, for tempfile.mkstemp / mkdtemp."""
    folder, name = os.path.split(os.path.abspath(path))
    suffix = TEMP_MARK + (os.path.splitext(name)[1] if keep_suffix else "")
    return folder, f".{name}.", suffix


def fsync_dir(directory: str) -> None:
    """fsync a folder so that a rename inside it is durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms/filesystems cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_fully(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _commit(tmp: str, path: str) -> None:
    """Give ``tmp`` a plain file's mode, move it onto ``path`` and make the rename durable."""
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_with(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Atomically replace ``path`` with what ``write(file)`` writes into an open binary file.

    Raises what ``write`` or the OS raises (ENOSPC, EROFS, EACCES, ...); the temporary is then
    removed and whatever was at ``path`` before is untouched.
    """
    path = os.fspath(path)
    folder, prefix, suffix = _temp_affixes(path, keep_suffix=False)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Atomically replace ``path`` with ``data``; see ``write_with``."""
    write_with(path, lambda f: _write_fully(f.fileno(), data))


@contextlib.contextmanager
def output_path(path: str | os.PathLike, keep_suffix: bool = True) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on normal exit move it onto ``path``, else delete it.

    For libraries that write by file name. With ``keep_suffix`` the temporary ends in ``path``'s
    suffix too (``.model.onnx.x1y2.tmp.onnx``), for tools that pick a reader by extension. The file
    is fsync'ed before the rename. Raises OSError when no temporary can be made there.
    """
    path = os.fspath(path)
    folder, prefix, suffix = _temp_affixes(path, keep_suffix)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        _fsync_path(tmp)
        _commit(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _fsync_tree(root: str) -> None:
    for folder, _, names in os.walk(root):
        for name in names:
            if not os.path.islink(os.path.join(folder, name)):
                _fsync_path(os.path.join(folder, name))
        fsync_dir(folder)


@contextlib.contextmanager
def replace_directory(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary folder next to ``path``; on normal exit it replaces ``path``, else it is deleted.

    Its files are fsync'ed before the swap. An existing folder at ``path`` is replaced only after
    the new one is complete: it is moved aside, the new one moved in, then the old one deleted.
    The folder gets a plain mkdir's mode (0o777 less the umask), not mkdtemp's 0700.
    """
    path = os.fspath(path)
    folder, prefix, suffix = _temp_affixes(path, keep_suffix=False)
    tmp = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        _fsync_tree(tmp)
        if os.path.isdir(path):
            aside = tempfile.mkdtemp(prefix=prefix, suffix=_ASIDE_MARK, dir=folder)
            os.replace(path, os.path.join(aside, "previous"))
            os.replace(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temp_files(directory: str | os.PathLike) -> list[str]:
    """Delete the temporaries (files or folders) that killed writers left in ``directory``; their paths."""
    removed: list[str] = []
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        if not is_temp_name(name):
            continue
        path = os.path.join(directory, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed
