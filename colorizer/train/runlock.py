"""An exclusive lock on a training run folder, so that two trainers never write the same run.

``RunLock(folder).acquire()`` takes ``folder/.lock``: an exclusive ``flock`` on that file, which
holds one line ``pid=<pid> host=<host> started=<UTC time>`` naming the owner. The kernel drops a
``flock`` when its process dies (kill -9, crash, power loss), so a lock file left by a dead trainer
is *stale*: the next trainer takes it over and says so. A second trainer while the first is alive
gets ``RunLockedError`` (exit code 2) naming the first one's pid and host.

Two safety nets beyond ``flock``:

- the owner line: a lock file whose owner is on this host with a pid that is alive and is not us,
  is refused even if ``flock`` was granted (a filesystem where ``flock`` is a no-op);
- the inode check: after taking the lock the file must still be the one at ``folder/.lock`` (a
  releasing owner unlinks it), otherwise the attempt is retried on the new file.

Why not the ``filelock`` package: its Unix lock opens the lock file with O_TRUNC before it tries to
lock, which would erase the owner line of the trainer that holds the lock, and it has no owner
information to report. This module is the few lines that add exactly that on top of ``fcntl``.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from colorizer.errors import ConfigError

LOCK_NAME = ".lock"


class RunLockedError(ConfigError):
    """The run folder is locked by another live trainer."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def parse_owner(text: str) -> dict[str, str]:
    """{'pid': .., 'host': .., 'started': ..} from an owner line (missing keys are left out)."""
    owner = {}
    for part in text.split():
        key, sep, value = part.partition("=")
        if sep:
            owner[key] = value
    return owner


def _describe(owner: dict[str, str]) -> str:
    if not owner.get("pid"):
        return "another trainer (no owner recorded)"
    started = f", started {owner['started']}" if owner.get("started") else ""
    return f"another trainer (pid {owner['pid']} on host {owner.get('host', '?')}{started})"


class RunLock:
    """The exclusive lock of one run folder; see the module docstring."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: int | None = None
        self.took_over: dict[str, str] | None = None  # the owner line of a stale lock taken over

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunLockedError (one line naming the holder). Idempotent."""
        import fcntl

        if self._fd is not None:
            return self
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    raise RunLockedError(self._busy(parse_owner(_read(fd)))) from None
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the previous owner unlinked it while we waited: lock the new file
                    os.close(fd)
                    continue
                owner = parse_owner(_read(fd))
                if owner.get("pid"):
                    pid = int(owner["pid"]) if owner["pid"].isdigit() else -1
                    if owner.get("host") == socket.gethostname() and pid != os.getpid() and _pid_alive(pid):
                        raise RunLockedError(self._busy(owner, hint=True))
                    if pid != os.getpid():
                        self.took_over = owner
                line = (
                    f"pid={os.getpid()} host={socket.gethostname()} "
                    f"started={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
                ).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, line, 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return self
        raise RunLockedError(f"{self.folder}: could not take {self.path} (it keeps being replaced)")

    def _busy(self, owner: dict[str, str], hint: bool = False) -> str:
        message = f"{self.folder} is in use by {_describe(owner)}; wait for it to finish or choose another --out"
        if hint:  # flock was granted, only the owner line says busy: the pid may have been reused
            message += f" (if no trainer is running there, delete {self.path})"
        return message

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.unlink(self.path)  # while still locked: a waiter then sees a new inode and retries
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
    except OSError:
        return ""
