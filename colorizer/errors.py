"""User-facing errors. Every command-line entry point catches ColorizerError, prints its message as
one line and exits non-zero; anything else is a bug and keeps its traceback."""


class ColorizerError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


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


def run_cli(main_fn, argv=None) -> int:
    """Run ``main_fn(argv)``; turn a ColorizerError into one stderr line and its exit code."""
    import sys

    try:
        return int(main_fn(argv) or 0)
    except ColorizerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
