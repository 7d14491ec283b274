"""``python -m colorizer.train``: the command-line trainer (single process or under torchrun)."""

from __future__ import annotations

import sys

from colorizer.errors import run_cli


def main(argv: list[str] | None = None) -> int:
    from colorizer.train.config import dump_yaml, resolve_config

    config, args = resolve_config(argv)
    for note in args.notes:
        print(note, file=sys.stderr)
    if args.print_config:
        print(dump_yaml(config), end="")
        return 0
    from colorizer.train.distributed import shutdown_distributed
    from colorizer.train.loop import Trainer

    try:
        result = Trainer(config).fit()
    finally:
        shutdown_distributed()
    return result.exit_code


if __name__ == "__main__":
    sys.exit(run_cli(main))
