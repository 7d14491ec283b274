"""Progress display: a tqdm bar on a terminal, one plain line every few seconds otherwise.

A tqdm bar redraws itself with carriage returns; written to a log file (``cmd > log 2>&1``, a batch
job, CI) that becomes thousands of partial lines. ``progress_bar`` returns a tqdm bar when the
stream is a terminal and a ``LineProgress`` otherwise, which prints one complete line at most
every ``every_s`` seconds (and a last one when closed, unless the work took less than that), so a
log stays short and readable.
"""

from __future__ import annotations

import sys
import time

LINE_EVERY_S = 30.0


def _short(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class LineProgress:
    """The subset of tqdm's interface the commands use (update, set_postfix, write, close)."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it", file=None, every_s=None):
        self.total, self.n, self.desc, self.unit = int(total), int(initial), desc, unit
        self.file = file if file is not None else sys.stderr
        self.every_s = LINE_EVERY_S if every_s is None else float(every_s)
        self._start_n = self.n
        self._start = self._last = time.monotonic()
        self._postfix = ""
        self._closed = False
        self._printed = False

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        self._printed = True
        done = self.n - self._start_n
        elapsed = now - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = f", eta {_short((self.total - self.n) / rate)}" if rate > 0 and self.total > self.n else ""
        post = f", {self._postfix}" if self._postfix else ""
        prefix = f"{self.desc}: " if self.desc else ""
        print(
            f"{prefix}{self.n}/{self.total} {self.unit}{percent}, {_short(elapsed)} elapsed{eta}{post}",
            file=self.file,
            flush=True,
        )

    def write(self, message: str) -> None:
        """A message line on stdout, as ``tqdm.write`` prints it."""
        print(message, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._printed and self.n != self._start_n:  # a run shorter than every_s prints nothing
                self._print(time.monotonic())


def progress_bar(total: int, initial: int = 0, desc: str = "", unit: str = "it", file=None, every_s=None):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a LineProgress."""
    file = file if file is not None else sys.stderr
    try:
        tty = file.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc or None, unit=unit, dynamic_ncols=True, file=file)
    return LineProgress(total, initial, desc, unit, file, every_s)
