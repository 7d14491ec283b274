"""User-facing errors. Every command-line entry point catches ColorizerError, prints its message as
one line and exits non-zero; anything else is a bug and keeps its traceback."""

import argparse


class ColorizerError(Exception):
    """A problem with the user's input or environment, explained in one line.

    ``option``: the library parameter the message is about, when the message starts with its name
    (``ConfigError("noise_seed must be ...", option="noise_seed")``). Library code names its parameters,
    never a command's flags; ``run_cli`` prints the flag instead (``--noise-seed must be ...``).
    """

    exit_code = 2
    option: str | None = None

    def __init__(self, message: str = "", option: str | None = None):
        super().__init__(message)
        self.option = option

    def for_command_line(self) -> str:
        """The message with a leading parameter name written as the command's flag."""
        text = one_line(self)
        if self.option and text.startswith(self.option):
            return "--" + self.option.replace("_", "-") + text[len(self.option) :]
        return text


class ImageError(ColorizerError, ValueError):
    """An image file that cannot be used (corrupt, truncated, not an image, too small, too large)."""


class CheckpointError(ColorizerError):
    """A checkpoint that is missing, truncated, tampered with, or of the wrong kind."""


class ConfigError(ColorizerError, ValueError):
    """A bad configuration value or command-line option."""


class DataError(ColorizerError):
    """A data set that cannot be used (empty folder, every file failing, wrong layout)."""


class MissingDependencyError(ColorizerError):
    """An optional dependency (Triton, TensorRT, the native extension, a GPU) is not available."""


class KernelsUnavailable(MissingDependencyError, RuntimeError):
    """A requested kernel backend (``colorizer.ops``) cannot be used here: a missing package, library or
    device. A MissingDependencyError, so the commands report it as one line without translating it."""


class ResourceError(ColorizerError):
    """Not enough memory (or another machine resource) for the work asked; says what to do."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for our commands: a usage error (unknown option, bad choice, missing argument) is a
    ConfigError, so run_cli prints it as one line and exits 2, instead of argparse's usage block.
    Subcommand parsers inherit the class (``add_subparsers`` uses the parent's type)."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def one_line(text: str) -> str:
    """The first non-empty line of ``text`` (messages from libraries can run to many lines)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the commands: ``warning: <first line>``, no source file and line."""
    import sys

    text = one_line(message) or category.__name__
    try:
        print(f"warning: {text}", file=file if file is not None else sys.stderr)
    except (OSError, ValueError):  # a closed or broken stderr must not turn a warning into an error
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by ``run_cli``'s handler: the same exception path as Ctrl-C
    (every ``finally`` and context manager runs, so temporaries are removed), exit code 143."""


def _raise_terminated(signum, frame) -> None:
    import os
    import signal

    if os.getpid() != _raise_terminated.pid:  # a forked child inherited the handler: die as usual
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated


def _install_sigterm():
    """Make SIGTERM raise Terminated while a command runs; returns the handler to restore (None: not
    installed: not the main thread, or someone else's handler is already in place). A command with a
    graceful stop of its own (the trainer) installs its handler over this one for its run."""
    import os
    import signal

    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None
        _raise_terminated.pid = os.getpid()
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        return None


def run_cli(main_fn, argv=None) -> int:
    """Run ``main_fn(argv)``; turn a ColorizerError into one stderr line and its exit code.

    Warnings raised meanwhile (ours or a library's) are printed as one ``warning: ...`` line each.
    SIGTERM takes Ctrl-C's path (``Terminated``, a KeyboardInterrupt): what is half-written is
    removed on the way out; exit code 143 (128 + SIGTERM), 130 for Ctrl-C.
    """
    import signal
    import sys
    import warnings

    previous = _install_sigterm()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return int(main_fn(argv) or 0)
        except ColorizerError as exc:
            print(f"error: {exc.for_command_line()}", file=sys.stderr)
            return exc.exit_code
        except Terminated:
            print("terminated", file=sys.stderr)
            return 128 + signal.SIGTERM
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
