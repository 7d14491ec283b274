"""Atomic writes: a reader sees the old file (or folder) or the complete new one, never half of one.

Every writer here works the same way: the new content goes to a temporary name in the destination
folder, is flushed and fsync'ed, is moved onto the final name with ``os.replace`` (atomic within one
filesystem), and then the folder itself is fsync'ed so the rename survives a power loss. On any
failure the temporary is removed and whatever was at the final name is untouched.

There is one temporary-name pattern, ``.<final name>.p<pid>_<random>.tmp`` (plus the final name's
suffix again for ``output_path``, whose callers hand the path to tools that look at the extension), so
``remove_stale_temp_files`` finds what a killed writer left behind, whoever wrote it; the writer's
process id in the name lets the sweep leave the temporaries of a writer that is still running (two
exports into one folder) alone. Scratch folders in the system temp folder (``scratch_directory``)
carry the process id the same way, and ``remove_stale_scratch`` removes those of dead processes.

- ``write_bytes(path, data)``: bytes in memory.
- ``write_with(path, write)``: ``write(file)`` streams into an open binary file (PIL, csv, ...).
  With ``exclusive=True`` (also ``write_bytes``) the file is created only where no file has its name
  at the moment it is put in place (a hard link, which fails if the name exists), else FileExistsError.
- ``output_path(path)``: a context manager yielding a temporary path for a library that insists on
  writing by name (onnx.save, TensorRT).
- ``replace_directory(path)``: the same for a whole folder (built under a temporary name, swapped in).
- ``commit_new(tmp, path)``: create-exclusive commit (a hard link), for a writer that must not replace
  a file that appeared at ``path`` after it checked (``output_path(..., commit=...)`` takes it).

New files get the mode a plain ``open()`` would give them (0o666 less the umask): a served model or
a shared picture must be readable by other users, not mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

TEMP_MARK = ".tmp"
# .<final name>.p<pid>_<mkstemp's random part>.tmp[<final suffix>]; the random part is [a-z0-9_].
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9_]+)?$")
_WRITER_PID = re.compile(r"\.p(\d+)_[A-Za-z0-9_]*\.tmp(\.[A-Za-z0-9_]+)?$")
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
    return folder, f".{name}.p{os.getpid()}_", suffix


def _process_alive(pid: int) -> bool:
    """True when a process ``pid`` exists here (ours included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def writer_alive(name: str) -> bool:
    """True when the temporary ``name`` records the process id of a process that is still running
    (its writer may still be writing it). Names without one (older writers) count as dead."""
    match = _WRITER_PID.search(name)
    return bool(match) and _process_alive(int(match.group(1)))


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


def _commit(tmp: str, path: str, exclusive: bool = False) -> None:
    """Give ``tmp`` a plain file's mode, move it onto ``path`` and make the rename durable.

    exclusive: never replace anything at ``path``; FileExistsError when something is there (see
    ``_link_into_place``).
    """
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600
    if exclusive:
        _link_into_place(tmp, path)
    else:
        os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _link_into_place(tmp: str, path: str) -> None:
    """Give the complete file ``tmp`` the name ``path`` only if no file has that name; FileExistsError else.

    The check and the naming are one step: ``os.link`` fails with EEXIST when ``path`` exists, however
    recently it appeared (another process writing the same output), where a check before ``os.replace``
    would leave a window in which that file is silently replaced. ``tmp`` is then unlinked. On a file
    system without hard links (FAT, some network mounts) the name is claimed with O_CREAT | O_EXCL
    instead and the complete file renamed over that empty placeholder: still never over a file of
    someone else, though a reader may see the empty placeholder for an instant.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # FileExistsError if taken
        os.close(fd)
        os.replace(tmp, path)
        return
    os.unlink(tmp)


# errno values of a file system that cannot make hard links (link() is then no test of existence).
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def commit_replace(tmp: str, path: str) -> None:
    """The plain commit as a public ``commit`` for ``output_path``: ``tmp`` replaces ``path``."""
    _commit(tmp, path)


def commit_new(tmp: str, path: str) -> None:
    """The exclusive commit as a public ``commit`` for ``output_path``: FileExistsError when something is
    at ``path`` (appeared after the caller checked), which is then left untouched (``_link_into_place``)."""
    _commit(tmp, path, exclusive=True)


def write_with(path: str | os.PathLike, write: Callable[[BinaryIO], object], exclusive: bool = False) -> None:
    """Atomically replace ``path`` with what ``write(file)`` writes into an open binary file.

    exclusive: create ``path`` only if nothing has that name when the complete file is put in place;
    otherwise raise FileExistsError and leave what is there untouched (the check and the naming are
    one atomic step, so a file another process wrote meanwhile is never replaced).

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
        _commit(tmp, path, exclusive)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes | memoryview, exclusive: bool = False) -> None:
    """Atomically replace ``path`` with ``data``; see ``write_with`` (and its ``exclusive``)."""
    write_with(path, lambda f: _write_fully(f.fileno(), data), exclusive)


@contextlib.contextmanager
def output_path(
    path: str | os.PathLike, keep_suffix: bool = True, commit: Callable[[str, str], None] | None = None
) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on normal exit move it onto ``path``, else delete it.

    For libraries that write by file name. With ``keep_suffix`` the temporary ends in ``path``'s
    suffix too (``.model.onnx.p12_x1y2.tmp.onnx``), for tools that pick a reader by extension. The
    file is fsync'ed before the rename. ``commit(tmp, path)`` replaces the plain rename (e.g. a
    check under a lock, then ``commit_new``); the temporary is removed if it raises. Raises OSError
    when no temporary can be made there.
    """
    path = os.fspath(path)
    folder, prefix, suffix = _temp_affixes(path, keep_suffix)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        _fsync_path(tmp)
        (commit or _commit)(tmp, path)
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


def make_temp_directory(path: str | os.PathLike) -> str:
    """A new empty folder next to ``path`` with the temporary-name pattern (the caller removes it)."""
    folder, prefix, suffix = _temp_affixes(os.fspath(path), keep_suffix=False)
    tmp = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=folder)
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def remove_stale_temp_files(directory: str | os.PathLike, finals=None) -> list[str]:
    """Delete the temporaries (files or folders) that killed writers left in ``directory``; their paths.

    A temporary whose recorded writer process is still running is left alone (``writer_alive``).
    finals: only the temporaries of these final names (a folder shared with other programs, whose
    own hidden files might happen to look like ours).
    """
    removed: list[str] = []
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        if not is_temp_name(name) or writer_alive(name):
            continue
        if finals is not None and not any(name.startswith(f".{final}.") for final in finals):
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


@contextlib.contextmanager
def scratch_directory(prefix: str) -> Iterator[str]:
    """A scratch folder in the system temp folder, ``<prefix>p<pid>_<random>``, removed on exit (also
    on an exception or a signal turned into one); ``remove_stale_scratch(prefix)`` removes those that
    killed processes left."""
    folder = tempfile.mkdtemp(prefix=f"{prefix}p{os.getpid()}_")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_scratch(prefix: str) -> list[str]:
    """Delete the ``scratch_directory(prefix)`` folders in the system temp folder whose process is gone."""
    pattern = re.compile(re.escape(prefix) + r"p(\d+)_[A-Za-z0-9_]+$")
    root = tempfile.gettempdir()
    removed = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        path = os.path.join(root, name)
        if not match or _process_alive(int(match.group(1))) or os.path.islink(path) or not os.path.isdir(path):
            continue
        try:
            if os.stat(path).st_uid != os.getuid():  # another user's: not ours to judge
                continue
            shutil.rmtree(path)
            removed.append(path)
        except OSError:
            pass
    return removed
