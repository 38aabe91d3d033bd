"""The `tvad` command: parses arguments and dispatches to one module per command group."""
from __future__ import annotations

import argparse
import sys

from tvad_jax.commands import (backbone as backbone_commands, data as data_commands,
                               demo as demo_commands, eval as eval_commands,
                               infer as infer_commands, plan as plan_commands,
                               pretrain as pretrain_commands, sweep as sweep_commands,
                               train as train_commands)
from tvad_jax.config import ConfigError
from tvad_jax.errors import InputError

# Each group module exposes `add_parser(subparsers)`; its parsers set `func(args) -> int`.
COMMAND_GROUPS = (data_commands, backbone_commands, pretrain_commands, train_commands,
                  eval_commands, infer_commands, plan_commands, demo_commands, sweep_commands)


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors in one line (the usage itself is one `--help` away); its
    subcommand parsers are of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="tvad", description="Text-guided fine-grained video anomaly detection (JAX/Flax)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad configs and bad input files end with one clear line, exit 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # A command with two positionals (`tvad sweep FAMILY ... key=value`) names in `trailing`
    # the list that takes the words after its options; anything else left over is an error.
    trailing = getattr(args, "trailing", None)
    if extra and (trailing is None or any(word.startswith("-") for word in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        setattr(args, trailing, getattr(args, trailing) + extra)
    try:
        return args.func(args) or 0
    except (ConfigError, InputError) as err:
        print(f"tvad: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
